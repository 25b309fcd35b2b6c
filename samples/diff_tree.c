/* diff_tree.c — a sample for the LLDB differential test of the maps:
 * recursion, pointers held in stack arrays and structs (slots), interior
 * pointers and pointers kept in callee-saved registers across calls.
 * "MT-LIVE: a b" marks pointer variables used after the call on that line.
 * Build: mappedtrace cc -O2 -g -o diff_tree samples/diff_tree.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tree {
    struct tree *left, *right;
    char *name;
    int key;
};

__attribute__((noinline)) void see(const void *p) {
    __asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) struct tree *mk(int key, const char *name) {
    struct tree *t = calloc(1, sizeof *t);
    t->key = key;
    t->name = strdup(name); /* MT-LIVE: t */
    return t;
}

__attribute__((noinline)) struct tree *insert(struct tree *root, int key, const char *name) {
    if (!root)
        return mk(key, name);
    if (key < root->key)
        root->left = insert(root->left, key, name); /* MT-LIVE: root */
    else
        root->right = insert(root->right, key, name); /* MT-LIVE: root */
    return root;
}

__attribute__((noinline)) int depth(struct tree *t) {
    if (!t)
        return 0;
    int l = depth(t->left); /* MT-LIVE: t */
    int r = depth(t->right);
    return 1 + (l > r ? l : r);
}

__attribute__((noinline)) void collect(struct tree *t, struct tree **out, int *n) {
    if (!t)
        return;
    collect(t->left, out, n); /* MT-LIVE: t out n */
    out[(*n)++] = t;
    collect(t->right, out, n); /* MT-LIVE: out */
    see(out);
}

int main(void) {
    static const char *names[] = {"m", "c", "x", "a", "e", "q", "z"};
    static const int keys[] = {50, 20, 80, 10, 30, 70, 90};
    struct tree *root = NULL;
    for (int i = 0; i < 7; i++)
        root = insert(root, keys[i], names[i]);
    struct tree *all[8] = {0};
    int n = 0;
    collect(root, all, &n); /* MT-LIVE: root */
    char *buf = malloc(128);
    char *mid = buf + 40;
    int d = depth(root); /* MT-LIVE: root buf mid */
    snprintf(mid, 80, "depth %d nodes %d first %s", d, n, all[0]->name); /* MT-LIVE: root buf mid */
    puts(mid); /* MT-LIVE: root buf */
    see(root);
    see(all);
    free(buf);
    return 0;
}
