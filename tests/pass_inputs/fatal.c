/* Calls of fatal functions (FORMAT.md "Calls without a map point"): the pass
 * leaves calls of __assert_fail, abort and _exit plain calls with no record,
 * so identical assert blocks merge as in a plain build; exit() stays a map
 * point.  check() is inlined three times into checked(): the plain build at
 * -O2 has one block calling __assert_fail for the three. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct node { struct node *next; int v; };
__attribute__((noinline)) void use(struct node *n) { printf("%d\n", n->v); }

static inline void check(struct node *n) { assert(n != NULL && n->v >= 0); }

int checked(struct node *a, struct node *b, struct node *c) {
    check(a); use(a);
    check(b); use(b);
    check(c); use(c);
    return a->v + b->v + c->v;
}

void bail(struct node *n, int how) {
    use(n);
    if (how == 1)
        abort();
    if (how == 2)
        _exit(3);
    if (how == 3)
        exit(4);
    use(n);
}

int main(int argc, char **argv) {
    struct node *n = malloc(sizeof *n);
    n->next = NULL;
    n->v = argc;
    bail(n, argc > 5 ? argc - 5 : 0);
    return checked(n, n, n) == 3 * argc ? 0 : 1;
}
