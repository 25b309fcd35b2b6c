/* A frame left on the stack by a call in tail position that the backend
 * cannot make a jump (eight arguments: two go on the stack, and relay has no
 * stack arguments of its own to reuse).  The pass leaves calls in tail
 * position plain (no record); the tracer must see from the epilogue at the
 * return address that nothing in relay's frame is live, and count the frame
 * as exact rather than scan it.  exit() runs in the innermost frame. */
#include <stdlib.h>
#include "truth.h"
struct node { struct node *next; long v; };
struct node *kept;
__attribute__((noinline)) long finish(long a, long b, long c, long d, long e, long f, long g, long h) {
    struct node *lost = malloc(sizeof *lost);
    lost->next = malloc(sizeof *lost);
    lost->next->next = NULL;
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK(lost->next, "indirect");
    lost = NULL;
    if (a > 0)
        exit(0);
    return a + b + c + d + e + f + g + h;
}
__attribute__((noinline)) long relay(long x) {
    return finish(x, x + 1, x + 2, x + 3, x + 4, x + 5, x + 6, x + 7);
}
int main(int argc, char **argv) {
    kept = malloc(sizeof *kept);
    kept->next = NULL;
    TRUTH_KEPT(kept);
    return (int)relay(argc + (argv[0] == NULL));
}
