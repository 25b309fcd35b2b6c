/* binary_trees.c — allocation- and call-heavy benchmark (after the Benchmarks
 * Game's binary-trees) for measuring what the maps cost at run time.
 * Usage: binary_trees [max_depth]   (default 18) */
#include <stdio.h>
#include <stdlib.h>

struct tree { struct tree *left, *right; };

static struct tree *bottom_up(int depth) {
    struct tree *t = malloc(sizeof *t);
    if (depth > 0) {
        t->left = bottom_up(depth - 1);
        t->right = bottom_up(depth - 1);
    } else {
        t->left = t->right = NULL;
    }
    return t;
}

static long check(const struct tree *t) {
    return t->left ? 1 + check(t->left) + check(t->right) : 1;
}

static void delete_tree(struct tree *t) {
    if (t->left) {
        delete_tree(t->left);
        delete_tree(t->right);
    }
    free(t);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 18;
    int max_depth = n < 6 ? 6 : n;
    struct tree *stretch = bottom_up(max_depth + 1);
    printf("stretch tree of depth %d\t check: %ld\n", max_depth + 1, check(stretch));
    delete_tree(stretch);
    struct tree *long_lived = bottom_up(max_depth);
    for (int d = 4; d <= max_depth; d += 2) {
        long iterations = 1L << (max_depth - d + 4), sum = 0;
        for (long i = 0; i < iterations; i++) {
            struct tree *t = bottom_up(d);
            sum += check(t);
            delete_tree(t);
        }
        printf("%ld\t trees of depth %d\t check: %ld\n", iterations, d, sum);
    }
    printf("long lived tree of depth %d\t check: %ld\n", max_depth, check(long_lived));
    return 0;
}
