/* wild_pointers.c: typed pointer slots holding wild values, for the hostile
 * suite (tests/hostile/test_inputs.py).  A list of nodes kept from a global,
 * each node's `other` slot (a struct node *) wild: an unmapped address, a
 * kernel-space address, a freed chunk, a non-canonical address, the top of the
 * address space; one more node is leaked with a wild slot of its own.
 * Prints "kept ADDR" per kept node, "leak ADDR" for the leaked one and
 * "wild N" (the wild slots planted), then exits (run it under `mappedtrace run`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct node {
    struct node *next;
    struct node *other;
    long value;
};

struct node *kept;

int main(void) {
    struct node *freed = malloc(200);   /* another size class: not reused for the nodes */
    free(freed);
    uintptr_t wild[] = {0xdead0000u, 0xffff800000001000u, (uintptr_t)freed, 0x0000900000000008u,
                        0xfffffffffffffff8u};
    int n = (int)(sizeof wild / sizeof wild[0]);
    for (int i = 0; i < n; i++) {
        struct node *x = malloc(sizeof *x);
        x->next = kept;
        x->other = (struct node *)wild[i];
        x->value = i;
        kept = x;
        printf("kept %p\n", (void *)x);
    }
    struct node *lost = malloc(sizeof *lost);
    lost->next = NULL;
    lost->other = (struct node *)wild[0];
    lost->value = -1;
    printf("leak %p\nwild %d\n", (void *)lost, n + 1);
    lost = NULL;
    return 0;
}
