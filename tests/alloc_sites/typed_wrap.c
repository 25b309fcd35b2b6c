/* typed_wrap.c — objects allocated through the wrappers of
 * typed_wrap_alloc.c, named `--alloc-fn=obj_new:wrapper,hdr_*:wrapper`:
 * their site is the wrapper's caller, their type what the caller uses the
 * result as (a struct table *, a struct str *, a struct rec * at chunk + 8).
 * foreign.c (built without the maps) frees and reallocates some of them.
 * Prints "site ADDR FILE:LINE FUNC" for each leaked object (the chunk's
 * address; the call is on the line of SITE), "bag N", and the truth. */
#include <stdlib.h>
#include <string.h>
#include "truth.h"
#include "typed_wrap.h"

#define SITE(p) fprintf(stderr, "site %p %s:%d %s\n", (void *)(p), __FILE__, __LINE__, __func__)
#define CHUNK(p) ((void *)((long long *)(p) - 1))

struct rec { struct rec *peer; struct table *owner; long v; };

void foreign_free(void *p);
void *foreign_resize(void *p, size_t n);

/* reachable only through untyped words: without a site, nothing types them */
void *bag[64];
void *keep_vec;
struct state S = {l_alloc, NULL, NULL, 0};

__attribute__((noinline)) static struct table *new_table(struct state *S, long n)
{
    struct table *t = (struct table *)obj_new(S, 5, sizeof(struct table));
    t->meta = NULL;
    t->slot = NULL;
    t->n = n;
    return t;
}

__attribute__((noinline)) static struct str *new_str(struct state *S, const char *s)
{
    size_t len = strlen(s);
    struct str *o = (struct str *)obj_new(S, 4, sizeof(struct str) + len + 1);
    o->len = len;
    memcpy(o->s, s, len + 1);
    return o;
}

int main(int argc, char **argv)
{
    (void)argv;
    struct table *prev = NULL;
    for (int i = 0; i < 32; i++) {
        struct table *t = new_table(&S, i);
        t->meta = prev;
        struct rec *r = hdr_alloc(sizeof *r);
        r->peer = NULL;
        r->owner = t;
        r->v = i;
        t->slot = r;
        bag[i] = r;
        prev = t;
        new_str(&S, i % 2 ? "odd" : "an even longer string");
    }
    fprintf(stderr, "bag %d\n", 32);
    /* an array its site proves (n * sizeof): every element typed, so the recs
     * it alone holds are reached by a typed slot (not by a conservative tail) */
    int nvec = 15 + argc;
    struct rec **vec = vec_new(&S, nvec * sizeof *vec);
    for (int i = 0; i < nvec; i++) {
        vec[i] = hdr_alloc(sizeof **vec);
        vec[i]->peer = NULL;
        vec[i]->v = i;
        TRUTH_KEPT(CHUNK(vec[i]));
    }
    keep_vec = vec;
    TRUTH_KEPT(vec);
    fprintf(stderr, "vec %d\n", nvec);
    /* a leaked array and what it holds */
    int nlost = 5 + argc;
    struct rec **lost = vec_new(&S, nlost * sizeof *lost); SITE(lost);
    TRUTH_LEAK(lost, "direct");
    for (int i = 0; i < nlost; i++) {
        lost[i] = hdr_alloc(sizeof **lost); SITE(CHUNK(lost[i]));
        lost[i]->peer = NULL;
        TRUTH_LEAK(CHUNK(lost[i]), "indirect");
    }
    lost = NULL;
    /* leaks: a table unlinked from the list, with its rec (reached from it) */
    for (int i = 0; i < 3; i++) {
        struct table *t = (struct table *)obj_new(&S, 5, sizeof(struct table)); SITE(t);
        struct rec *r = hdr_alloc(sizeof *r); SITE(CHUNK(r));
        r->peer = NULL;
        r->owner = t;
        t->slot = r;
        t->meta = NULL;
        S.all = t->next;                     /* unlinked: nothing holds t */
        TRUTH_LEAK(t, "direct");
        TRUTH_LEAK(CHUNK(r), "indirect");
    }
    /* a rec leaked by itself */
    struct rec *lone = hdr_alloc(sizeof *lone); SITE(CHUNK(lone));
    lone->peer = lone;
    TRUTH_LEAK(CHUNK(lone), "direct");
    lone = NULL;
    /* objects freed with their size, by the allocator and by code without the maps */
    for (int i = 0; i < 4; i++) {
        struct table *t = new_table(&S, 100 + i);
        obj_free(&S, (struct gcobj *)t, sizeof *t);
        void *h = hdr_alloc(40);
        if (i % 2)
            hdr_free(h);
        else
            foreign_free(CHUNK(h));
    }
    /* a rec reallocated by code without the maps (the size word kept) */
    struct rec *g = hdr_alloc(sizeof *g);
    long long *c = foreign_resize(CHUNK(g), 8 + 200);
    g = (struct rec *)(c + 1);
    g->peer = NULL;
    bag[40] = g;
    TRUTH_KEPT(CHUNK(g));
    for (struct gcobj *o = S.all; o; o = o->next)
        TRUTH_KEPT(o);
    for (int i = 0; i < 32; i++)
        TRUTH_KEPT(CHUNK(bag[i]));
    /* a wrapper whose memory no site allocated, each call right after a
     * block l_alloc handed over and that was freed since (the pair is
     * stale): the callers write nothing into the pool */
    for (int i = 0; i < 8; i++) {
        void *tmp = S.frealloc(S.ud, NULL, 0, 8 + 8 * i);
        S.frealloc(S.ud, tmp, 8 + 8 * i, 0);
        struct rec *q = hdr_pool(sizeof *q);
        memset(q, i, sizeof *q);
    }
    int intact = 1;
    for (int i = 0; i < POOL_SIZE; i++)
        if (i % 64 >= (int)sizeof(struct rec) && pool[i] != 0x5a)
            intact = 0;
    fprintf(stderr, "pool %s\n", intact ? "intact" : "changed");
    fprintf(stderr, "bytes %zu\n", S.bytes);
    return 0;
}
