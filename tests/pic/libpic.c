/* libpic.c — a shared library built with `mappedtrace cc -fPIC -shared`
 * (tests/test_pic.py).  It leaks a list of its own, keeps objects in a
 * global and a static of its own, and holds two objects only in the locals
 * of a frame while it waits (the live check).  It says what it leaked and
 * kept on stderr (truth.h). */
#include <stdlib.h>
#include <unistd.h>
#include "truth.h"

struct item { struct item *next; long v; char *name; };

struct item *pic_kept_list;            /* exported: a PIE main may copy-relocate it */
static struct item *pic_static_keep;   /* local to the library */

__attribute__((noinline)) static struct item *mk(struct item *next, long v) {
    struct item *x = malloc(sizeof *x);
    x->next = next; x->v = v; x->name = NULL;
    return x;
}

__attribute__((noinline)) static long sum(const struct item *x) {
    long s = 0;
    for (; x; x = x->next) s += x->v;
    return s;
}

/* A dropped list of n items: the head is a direct leak, the rest indirect. */
__attribute__((noinline)) long pic_leak_list(int n) {
    struct item *h = NULL;
    for (int i = 0; i < n; i++) {
        h = mk(h, i);
        TRUTH_LEAK(h, i == n - 1 ? "direct" : "indirect");
    }
    return sum(h);
}

/* n items kept by the exported global, one by the static. */
__attribute__((noinline)) void pic_keep(int n) {
    for (int i = 0; i < n; i++) {
        pic_kept_list = mk(pic_kept_list, i);
        TRUTH_KEPT(pic_kept_list);
    }
    pic_static_keep = mk(NULL, 7);
    pic_static_keep->name = malloc(16);
    TRUTH_KEPT(pic_static_keep);
    TRUTH_KEPT(pic_static_keep->name);
}

/* Two items reachable only from this frame's locals while it waits for a
 * byte on fd: the live check must find them through the library's maps. */
__attribute__((noinline)) long pic_hold_and_wait(int fd) {
    struct item *a = mk(NULL, 1);
    struct item *b = mk(a, 2);
    TRUTH_KEPT(a);
    TRUTH_KEPT(b);
    fprintf(stderr, "ready\n");
    char c;
    if (read(fd, &c, 1) < 0)
        c = 0;
    long s = sum(b) + c;
    free(a);
    free(b);
    return s;
}
