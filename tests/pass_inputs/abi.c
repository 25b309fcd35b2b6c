/* Calls whose ABI depends on argument attributes: byval/sret structs,
 * small integer extension, varargs with doubles, indirect calls, noreturn.
 * Built with and without the pass, the output must be identical. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct big { long a[6]; char *name; };
struct small { int x; float y; };

__attribute__((noinline)) struct big make_big(long seed, const char *name) {
    struct big b;
    for (int i = 0; i < 6; i++) b.a[i] = seed * (i + 1);
    b.name = strdup(name);
    return b;
}

__attribute__((noinline)) long sum_big(struct big b, struct small s) {
    long t = s.x + (long)s.y;
    for (int i = 0; i < 6; i++) t += b.a[i];
    return t + (long)strlen(b.name);
}

__attribute__((noinline)) int widen(signed char c, unsigned char u, short s, unsigned short us, bool f) {
    return c * 1000000 + u * 10000 + s * 10 + us + (f ? 7 : 0);
}

__attribute__((noinline)) double vsum(int n, ...) {
    va_list ap;
    va_start(ap, n);
    double t = 0;
    for (int i = 0; i < n; i++) t += va_arg(ap, double);
    va_end(ap);
    return t;
}

__attribute__((noinline)) bool is_odd(int x) { return x & 1; }

typedef long (*binop)(long, long);
static long add(long a, long b) { return a + b; }
static long mul(long a, long b) { return a * b; }

__attribute__((noinline, noreturn)) void die(const char *msg, char *keep) {
    printf("die: %s %s\n", msg, keep);
    exit(0);
}

int main(int argc, char **argv) {
    char *keep = malloc(32);
    strcpy(keep, "kept");
    struct big b = make_big(argc + 2, "seventeen chars!!");
    struct small s = {3, 4.5f};
    printf("sum_big %ld\n", sum_big(b, s));
    printf("widen %d\n", widen(-3, 200, -300, 60000, true));
    printf("vsum %.2f %d %s %.3f\n", vsum(3, 1.25, 2.5, 3.75), argc, keep, 1.0 / 3);
    int odd = 0;
    for (int i = 0; i < 10; i++) odd += is_odd(i) ? 1 : 0;
    printf("odd %d\n", odd);
    binop ops[2] = {add, mul};
    printf("ops %ld %ld\n", ops[argc - 1](6, 7), ops[argc % 2](6, 7));
    die("done", keep);
}
