/* A dropped linked list of 10 nodes: 1 direct leak (the head) + 9 indirect. */
#include <stdlib.h>
#include "truth.h"
struct node { long v; struct node *next; };
__attribute__((noinline)) static struct node *build(int n) {
    struct node *h = NULL;
    for (int i = 0; i < n; i++) {
        struct node *x = malloc(sizeof *x);
        x->v = i; x->next = h;
        TRUTH_LEAK(x, i == n - 1 ? "direct" : "indirect");
        h = x;
    }
    return h;
}
__attribute__((noinline)) static long use(struct node *h) { long s = 0; for (; h; h = h->next) s += h->v; return s; }
int main(void) {
    struct node *h = build(10);
    printf("sum %ld\n", use(h));
    h = NULL;
    return 0;
}
