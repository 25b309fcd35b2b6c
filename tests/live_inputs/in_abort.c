/* A thread stopped inside abort(): its SIGABRT handler waits in pause(), so
 * the process stays alive with abort, raise and fail() on the stack.  The
 * pass left fail()'s call of abort a plain call (no record): the tracer scans
 * fail()'s frame conservatively.  Leaks were made in a frame that returned;
 * the kept list hangs off a global.  Prints "ready" when parked. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include "truth.h"
struct node { struct node *next; long v; };
static struct node *kept;
static void on_abrt(int sig) {
    (void)sig;
    write(1, "ready\n", 6);
    for (;;)
        pause();
}
__attribute__((noinline)) static void drop_list(void) {
    struct node *head = NULL;
    for (long i = 0; i < 3; i++) {
        struct node *n = malloc(sizeof *n);
        n->next = head;
        n->v = i;
        head = n;
    }
    TRUTH_LEAK(head, "direct");
    TRUTH_LEAK(head->next, "indirect");
    TRUTH_LEAK(head->next->next, "indirect");
}
__attribute__((noinline)) static void fail(long v) {
    if (v != 42)
        return;
    fflush(stderr);
    abort();
}
int main(int argc, char **argv) {
    (void)argv;
    signal(SIGABRT, on_abrt);
    kept = malloc(sizeof *kept);
    kept->next = malloc(sizeof *kept);
    kept->next->next = NULL;
    TRUTH_KEPT(kept);
    TRUTH_KEPT(kept->next);
    drop_list();
    fail(41 + argc);
    return 0;
}
