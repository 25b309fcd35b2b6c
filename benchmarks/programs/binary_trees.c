/* binary_trees.c — the allocation-heavy workload of the tool-overhead benchmark
 * (benchmarks/overhead_tools): the Benchmarks Game's binary-trees, single-threaded.
 * Usage: binary_trees [MAX_DEPTH]   (default 16)
 * Builds one long-lived tree of depth MAX_DEPTH, then for depths 4, 6, …
 * MAX_DEPTH many short-lived trees, checking each (node count), freeing each. */
#include <stdio.h>
#include <stdlib.h>

struct node { struct node *left, *right; };

static struct node *make(int depth)
{
    struct node *n = malloc(sizeof *n);
    if (!n)
        abort();
    if (depth > 0) {
        n->left = make(depth - 1);
        n->right = make(depth - 1);
    } else {
        n->left = n->right = NULL;
    }
    return n;
}

static long check(const struct node *n)
{
    return n->left ? 1 + check(n->left) + check(n->right) : 1;
}

static void drop(struct node *n)
{
    if (n->left) {
        drop(n->left);
        drop(n->right);
    }
    free(n);
}

int main(int argc, char **argv)
{
    int max = argc > 1 ? atoi(argv[1]) : 16;
    if (max < 6)
        max = 6;
    struct node *stretch = make(max + 1);
    printf("stretch tree of depth %d\t check: %ld\n", max + 1, check(stretch));
    drop(stretch);
    struct node *long_lived = make(max);
    for (int d = 4; d <= max; d += 2) {
        long iterations = 1L << (max - d + 4), sum = 0;
        for (long i = 0; i < iterations; i++) {
            struct node *t = make(d);
            sum += check(t);
            drop(t);
        }
        printf("%ld\t trees of depth %d\t check: %ld\n", iterations, d, sum);
    }
    printf("long lived tree of depth %d\t check: %ld\n", max, check(long_lived));
    drop(long_lived);
    return 0;
}
