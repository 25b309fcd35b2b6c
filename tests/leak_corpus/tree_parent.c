/* A leaked binary tree of 7 nodes with parent pointers: every node reaches the root,
 * so the whole tree is one strongly connected component: 1 direct (lowest address) + 6 indirect. */
#include <stdlib.h>
#include <stdint.h>
#include "truth.h"
struct tree { struct tree *left, *right, *parent; int key; };
static struct tree *all[7];
static int nall;
__attribute__((noinline)) static struct tree *make(int depth, struct tree *parent) {
    if (!depth) return NULL;
    struct tree *t = calloc(1, sizeof *t);
    all[nall++] = t;
    t->parent = parent; t->key = nall;
    t->left = make(depth - 1, t);
    t->right = make(depth - 1, t);
    return t;
}
int main(void) {
    struct tree *root = make(3, NULL);
    uintptr_t lo = UINTPTR_MAX;
    for (int i = 0; i < nall; i++) if ((uintptr_t)all[i] < lo) lo = (uintptr_t)all[i];
    for (int i = 0; i < nall; i++) { TRUTH_LEAK(all[i], (uintptr_t)all[i] == lo ? "direct" : "indirect"); all[i] = NULL; }
    printf("root key %d\n", root->key);
    return 0;
}
