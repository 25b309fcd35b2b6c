/* diff_lists.c — a sample for the LLDB differential test of the maps
 * (tests/test_differential_lldb.py).
 *
 * A comment "MT-LIVE: a b" on a line with one call names pointer variables
 * that are used after that call returns: the map of the call site must hold
 * their values (or the stack slot they live in).  The test checks this, under
 * LLDB, in the caller frame at the call's return address.
 * Build: mappedtrace cc -O2 -g -o diff_lists samples/diff_lists.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    long value;
    struct node *next;
};

struct pair {
    struct node *first, *second;
    char *label;
};

__attribute__((noinline)) void touch(void *p) {
    __asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) struct node *new_node(long v, struct node *next) {
    struct node *n = malloc(sizeof *n);
    n->value = v;
    n->next = next;
    return n;
}

__attribute__((noinline)) long length(struct node *l) {
    long n = 0;
    for (; l; l = l->next)
        n++;
    return n;
}

__attribute__((noinline)) struct node *reverse(struct node *l) {
    struct node *out = NULL;
    while (l) {
        struct node *next = l->next;
        l->next = out;
        out = l;
        touch(next); /* MT-LIVE: next out */
        l = next;
    }
    return out;
}

__attribute__((noinline)) void fill_pair(struct pair *p, struct node *a, struct node *b) {
    p->first = a;
    p->second = b;
    p->label = strdup("pair"); /* MT-LIVE: p a b */
    touch(a);
    touch(b);
    touch(p);
}

__attribute__((noinline)) long sum_pair(struct pair *p) {
    long s = length(p->first); /* MT-LIVE: p */
    s += length(p->second);
    return s + (long)strlen(p->label);
}

/* Addresses of fields of a live struct: at -O2 the map records them as the
 * struct pointer plus a constant (DERIVED entries), not as values of their own. */
__attribute__((noinline)) long walk_fields(struct pair *p, int n) {
    struct node **f = &p->first, **s = &p->second;
    char **l = &p->label;
    long t = 0;
    for (int i = 0; i < n; i++) {
        t += length(*s); /* MT-LIVE: p f s l */
        touch(l); /* MT-LIVE: p f s l */
        t += length(*f); /* MT-LIVE: p f s l */
    }
    touch(f);
    touch(s);
    touch(l);
    touch(p);
    return t;
}

/* A cursor over a heap array: at -O2 `c` points into `arr`'s object, which
   the map reaches through `arr`, so `c` itself is not stored (an interior
   pointer); the test accepts it inside the heap chunk of a recorded value. */
__attribute__((noinline)) long walk_array(struct node **arr, int n) {
    long t = 0;
    for (struct node **c = arr; c < arr + n; c++) {
        t += length(*c); /* MT-LIVE: arr c */
        touch(c); /* MT-LIVE: arr c */
    }
    touch(arr);
    return t;
}

__attribute__((noinline)) struct node *build(int n, struct node *tail) {
    struct node *head = tail;
    for (int i = 0; i < n; i++) {
        struct node *x = new_node(i, head); /* MT-LIVE: tail */
        touch(tail);
        head = x;
    }
    return head;
}

int main(int argc, char **argv) {
    struct node *keep = new_node(-1, NULL);
    struct node *list = build(5, keep); /* MT-LIVE: keep */
    struct node *other = build(3, NULL); /* MT-LIVE: keep list */
    struct pair pr;
    fill_pair(&pr, list, other); /* MT-LIVE: list other */
    long total = sum_pair(&pr); /* MT-LIVE: list other */
    total += walk_fields(&pr, 2); /* MT-LIVE: list other */
    struct node **arr = malloc(3 * sizeof *arr);
    arr[0] = list, arr[1] = other, arr[2] = keep;
    total += walk_array(arr, 3); /* MT-LIVE: list other arr */
    free(arr);
    struct node *rev = reverse(list); /* MT-LIVE: other keep */
    char *msg = malloc(64);
    snprintf(msg, 64, "total %ld len %ld", total, length(rev)); /* MT-LIVE: msg rev other keep */
    puts(msg); /* MT-LIVE: msg rev other keep */
    touch(keep);
    touch(other);
    touch(rev);
    free(msg);
    touch(argv);
    return (int)(total & 0) + (argc > 100);
}
