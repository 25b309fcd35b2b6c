/* scale_heap.c — many small linked objects for the scale benchmark
 * (benchmarks/trace/bench_scale.py and tests/test_scale.py, issue #13 items 2–3).
 *
 * Usage: scale_heap N [CHAINS]   builds N objects of 64–128 bytes in linked
 * structures reachable from globals:
 *   - half of them in binary trees (struct tnode: left, right, parent, payload),
 *     each tree holding 1023 nodes, the roots in a global array;
 *   - the other half in doubly linked lists of 4096 nodes (struct lnode: next,
 *     prev, owner, payload), the heads in another global array;
 *   - CHAINS (default 1000) leaked chains of 3 lnodes each (a → b → c): nothing
 *     outside a chain points into it.
 * Object sizes cycle through 64, 80, 96, 112, 128 bytes (the malloc request).
 * Prints "objects N", "leaked_objects 3*CHAINS", "leaked_chains CHAINS",
 * "leaked_bytes B", "ready", then blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct tnode { struct tnode *left, *right, *parent; long payload[]; };
struct lnode { struct lnode *next, *prev; struct lnode **owner; long payload[]; };

struct tnode **trees;
long ntrees;
struct lnode **lists;
long nlists;

static unsigned long rng = 88172645463325252UL;
static unsigned long next_rand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static size_t pick_size(void)
{
    return 64 + 16 * (next_rand() % 5);
}

static void *alloc(size_t size, size_t fixed)
{
    long *p = malloc(size);
    if (!p) {
        perror("malloc");
        exit(1);
    }
    for (size_t k = fixed / 8; k < size / 8; k++)
        p[k] = (long)(k * 7 + 1);              /* small integers: not pointer-like */
    return p;
}

/* builds a complete tree of `n` nodes in heap order; returns its root */
static struct tnode *make_tree(long n, struct tnode **scratch)
{
    for (long i = 0; i < n; i++) {
        struct tnode *t = alloc(pick_size(), sizeof(struct tnode));
        t->left = t->right = NULL;
        t->parent = i ? scratch[(i - 1) / 2] : NULL;
        if (i) {
            if (i % 2) scratch[(i - 1) / 2]->left = t;
            else scratch[(i - 1) / 2]->right = t;
        }
        scratch[i] = t;
    }
    return scratch[0];
}

static struct lnode *make_list(long n, struct lnode **owner, size_t *bytes)
{
    struct lnode *head = NULL, *prev = NULL;
    for (long i = 0; i < n; i++) {
        size_t size = pick_size();
        struct lnode *l = alloc(size, sizeof(struct lnode));
        if (bytes)
            *bytes += size;
        l->next = NULL;
        l->prev = prev;
        l->owner = owner;
        if (prev) prev->next = l;
        else head = l;
        prev = l;
    }
    return head;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long chains = argc > 2 ? atol(argv[2]) : 1000;
    const long tree_size = 1023, list_size = 4096;
    if (n < 2 * (tree_size + list_size) || chains < 0)
        return 2;
    long rest = n - 3 * chains;
    long tree_objs = rest / 2;
    ntrees = tree_objs / tree_size;
    long list_objs = rest - ntrees * tree_size;
    nlists = (list_objs + list_size - 1) / list_size;
    trees = calloc(ntrees, sizeof *trees);
    lists = calloc(nlists, sizeof *lists);
    struct tnode **scratch = malloc(tree_size * sizeof *scratch);
    size_t leaked_bytes = 0;
    long made = 0, chains_left = chains;
    /* interleave the leaked chains with the live structures, so they lie all over the heap */
    long every = chains ? (ntrees + nlists) / chains + 1 : 0;
    for (long i = 0, step = 0; i < ntrees || made < list_objs; step++) {
        if (i < ntrees && (step % 2 == 0 || made >= list_objs)) {
            trees[i] = make_tree(tree_size, scratch);
            i++;
        } else {
            long k = made / list_size;
            long len = list_objs - made < list_size ? list_objs - made : list_size;
            lists[k] = make_list(len, &lists[k], NULL);
            made += len;
        }
        if (chains_left && every && step % every == 0) {
            make_list(3, NULL, &leaked_bytes);   /* dropped: leaked */
            chains_left--;
        }
    }
    while (chains_left-- > 0)
        make_list(3, NULL, &leaked_bytes);
    free(scratch);
    printf("objects %ld\nleaked_objects %ld\nleaked_chains %ld\nleaked_bytes %zu\nready\n",
           ntrees * tree_size + list_objs + 3 * chains, 3 * chains, chains, leaked_bytes);
    fflush(stdout);
    for (;;)
        pause();
}
