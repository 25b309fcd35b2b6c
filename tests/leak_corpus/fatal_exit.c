/* A program that ends with _exit() called from a program frame.  The pass
 * leaves calls of _exit (and of the other fatal functions, FORMAT.md "Calls
 * without a map point") plain calls with no record, so at the exit-time leak
 * check the frame of finish() has no map point: the tracer counts it as known
 * rootless (nothing of the program runs again), and the leaked request buffer
 * whose address is still in finish()'s frame is reported, at -O0 and -O2.
 * The other leaks were made in a frame that has returned. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "truth.h"
struct node { struct node *next; long v; };
static struct node *kept;
__attribute__((noinline)) static void use(char *p) { strcpy(p, "request buffer"); puts(p); }
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
__attribute__((noinline, noreturn)) static void finish(int code) {
    char *request = malloc(100);
    use(request);
    TRUTH_LEAK(request, "direct");
    fflush(stdout);
    _exit(code);
}
int main(void) {
    kept = malloc(sizeof *kept);
    kept->next = malloc(sizeof *kept);
    kept->next->next = NULL;
    TRUTH_KEPT(kept);
    TRUTH_KEPT(kept->next);
    drop_list();
    finish(0);
}
