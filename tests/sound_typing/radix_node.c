/* (a) A radix-tree node like Redis's rax.c: a 4-byte header and a trailing
 * `unsigned char data[]` that holds the key bytes and then the child pointers,
 * written with memcpy.  The type says "no pointers"; the children must still
 * be found.  A real leak (a node nobody points to) beside it is still found. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "truth.h"

typedef struct rnode {
    uint32_t iskey : 1;
    uint32_t size : 31;     /* children */
    unsigned char data[];   /* size key bytes, padding, then size child pointers */
} rnode;

static size_t ptroff(size_t size) { return (4 + size + 7) / 8 * 8 - 4; }

static rnode *new_node(size_t size) {
    rnode *n = calloc(1, sizeof(rnode) + ptroff(size) + size * sizeof(rnode *));
    n->size = (uint32_t)size;
    for (size_t i = 0; i < size; i++)
        n->data[i] = (unsigned char)('a' + i);
    return n;
}

static void set_child(rnode *n, size_t i, rnode *c) {
    memcpy(n->data + ptroff(n->size) + i * sizeof(c), &c, sizeof(c));
}

rnode *volatile root;

int main(void) {
    root = new_node(3);
    for (size_t i = 0; i < 3; i++) {
        rnode *c = new_node(i + 1);
        set_child(root, i, c);
        TRUTH_KEPT(c);
        for (size_t j = 0; j < i + 1; j++) {
            rnode *g = new_node(0);
            set_child(c, j, g);
            TRUTH_KEPT(g);
        }
    }
    TRUTH_KEPT(root);
    rnode *lost = new_node(2);
    rnode *lostc = new_node(0);
    set_child(lost, 1, lostc);
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK(lostc, "indirect");
    lost = NULL;
    lostc = NULL;
    return 0;
}
