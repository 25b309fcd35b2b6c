/* exit() deep in the call stack (jq's die() -> exit(2)): main keeps a structure
 * only in a local and calls fail(), which never returns.  The maps say main's
 * local is dead at that call (nothing follows a noreturn call); LeakSanitizer
 * scans the stack at exit and does not report it, and neither does MappedTrace:
 * the frames that called the function calling exit() are scanned conservatively
 * at exit (README, "How precise").  Exits with status 2. */
#include <stdlib.h>
#include <string.h>
#include "../leak_corpus/truth.h"
struct state { struct state *self; char *name; long n; };
__attribute__((noinline, noreturn)) static void fail(const char *why) {
    fprintf(stderr, "error: %s\n", why);
    exit(2);
}
int main(int argc, char **argv) {
    struct state *s = malloc(sizeof *s);
    s->self = s;
    s->name = strdup(argv[0]);
    s->n = argc;
    TRUTH_KEPT(s);
    TRUTH_KEPT(s->name);
    if (s->n < 100)
        fail("no such option");
    free(s->name);
    free(s);
    return 0;
}
