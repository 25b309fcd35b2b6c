/* A leaked cycle of 3 nodes: its entry (the lowest address) direct, the others indirect;
 * plus a reachable cycle of 2 kept by a global (not leaked). */
#include <stdlib.h>
#include <stdint.h>
#include "truth.h"
struct node { struct node *next; long v; };
struct node *kept;
int main(void) {
    struct node *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
    a->next = b; b->next = c; c->next = a; a->v = b->v = c->v = 7;
    struct node *lo = a;
    if ((uintptr_t)b < (uintptr_t)lo) lo = b;
    if ((uintptr_t)c < (uintptr_t)lo) lo = c;
    TRUTH_LEAK(a, a == lo ? "direct" : "indirect");
    TRUTH_LEAK(b, b == lo ? "direct" : "indirect");
    TRUTH_LEAK(c, c == lo ? "direct" : "indirect");
    kept = malloc(sizeof *kept); kept->next = malloc(sizeof *kept); kept->next->next = kept;
    TRUTH_KEPT(kept); TRUTH_KEPT(kept->next);
    printf("%ld\n", a->next->next->next->v);
    return 0;
}
