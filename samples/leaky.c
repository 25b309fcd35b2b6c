/* leaky.c — the demo's sample: a small program with known leaks.
 *
 * It leaks, on purpose:
 *   - a dropped linked list of 10 nodes   (1 direct + 9 indirect)
 *   - a cycle of 3 nodes                   (1 direct + 2 indirect)
 *   - a binary tree of 7 nodes with parent pointers (1 direct + 6 indirect)
 *   - one string buffer                    (1 direct)
 * and keeps, reachable until exit: a list from a global, a tree from a
 * thread-local, and a buffer held only by an interior pointer.
 * Build: mappedtrace cc -O2 -o leaky samples/leaky.c ; run: mappedtrace run -- ./leaky
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    long value;
    struct node *next;
};

struct tree {
    struct tree *left, *right, *parent;
    int key;
};

struct node *kept_list;          /* reachable from a global */
_Thread_local struct tree *kept_tree;   /* reachable from a thread-local */
char *kept_interior;             /* points into the middle of a buffer */

static struct node *make_list(int n) {
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *x = malloc(sizeof *x);
        x->value = i;
        x->next = head;
        head = x;
    }
    return head;
}

static struct tree *make_tree(int depth, struct tree *parent, int *key) {
    if (depth == 0)
        return NULL;
    struct tree *t = calloc(1, sizeof *t);
    t->parent = parent;
    t->key = (*key)++;
    t->left = make_tree(depth - 1, t, key);
    t->right = make_tree(depth - 1, t, key);
    return t;
}

static long sum(struct node *l) {
    long s = 0;
    for (; l; l = l->next)
        s += l->value;
    return s;
}

__attribute__((noinline)) static void leak_things(void) {
    struct node *dropped = make_list(10);
    printf("dropped list sum %ld\n", sum(dropped));

    struct node *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
    a->next = b; b->next = c; c->next = a;
    a->value = b->value = c->value = 1;

    int key = 0;
    struct tree *t = make_tree(3, NULL, &key);
    printf("tree of %d nodes, root key %d\n", key, t->key);

    char *s = strdup("this string is leaked by leak_things()");
    printf("%s\n", s);
}

int main(void) {
    kept_list = make_list(5);
    int key = 100;
    kept_tree = make_tree(2, NULL, &key);
    kept_interior = (char *)malloc(64) + 16;
    strcpy(kept_interior, "kept by an interior pointer");
    leak_things();
    printf("kept list sum %ld, %s\n", sum(kept_list), kept_interior);
    return 0;
}
