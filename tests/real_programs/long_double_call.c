/* A call that returns long double (x86_fp80 in st(0)) in instrumented code:
 * Redis's string2ld (util.c) calls strtold, and every command that parses a
 * timeout or a long double (BLPOP key 0, INCRBYFLOAT …) goes through it.  Built
 * with `mappedtrace cc` the call is followed by `call 0` (the statepoint's
 * gc.result of type x86_fp80 is lowered to a call of address 0) and the program
 * dies with SIGSEGV.  The program must print "2.500000 ok" and exit 0. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static long double parse(const char *s) {
    char *end;
    long double v = strtold(s, &end);
    return *end ? -1 : v;
}

int main(int argc, char **argv) {
    long double v = parse(argc > 1 ? argv[1] : "2.5");
    printf("%Lf %s\n", v, v == 2.5L ? "ok" : "wrong");
    return v == 2.5L ? 0 : 1;
}
