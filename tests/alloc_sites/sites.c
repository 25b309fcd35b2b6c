/* sites.c — allocation sites (`mappedtrace cc --alloc-sites`, issue #11 item 6).
 *
 * Leaks objects from several sites and keeps others reachable only through
 * `void *` slots.  It tells the test the right answer on stderr:
 *   "truth leak|kept ..."           (leak_corpus/truth.h)
 *   "site ADDR FILE:LINE FUNC"      an object and the site that allocated it:
 *                                   the malloc call is on the line of SITE()
 *   "foreign ADDR"                  an object last reallocated by code without
 *                                   the maps (foreign.c): it has no site
 *   "bag N"                         objects reachable only as `void *`
 * With the argument "wait" it prints "ready" at the end and waits for a line. 
 * The library (foreign.c, built without the pass) frees and reallocates
 * objects that typed sites allocated. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "truth.h"

#define SITE(p) fprintf(stderr, "site %p %s:%d %s\n", (void *)(p), __FILE__, __LINE__, __func__)

struct leaf { struct leaf *next; long value; };
struct tree { struct leaf *first; struct tree *sub; char name[24]; };
struct rec { long id; struct leaf *item; double w[4]; };

void *foreign_grow(void *p, size_t n);
void *foreign_resize(void *p, size_t n);
void foreign_free(void *p);

#define NBAG 64
void *bag[NBAG];            /* void* slots: the records are typed by their site only */

static struct leaf *make_leaf(long v, struct leaf *next)
{
    struct leaf *l = malloc(sizeof *l); SITE(l);
    l->value = v;
    l->next = next;
    return l;
}

static struct tree *make_tree(const char *name)
{
    struct tree *t = calloc(1, sizeof *t); SITE(t);
    strncpy(t->name, name, sizeof t->name - 1);
    t->first = make_leaf(1, make_leaf(2, NULL));
    return t;
}

static struct rec *new_rec(long id)
{
    struct rec *r = malloc(sizeof *r); SITE(r);
    memset(r, 0, sizeof *r);
    r->id = id;
    r->item = make_leaf(id, NULL);
    return r;
}

int main(int argc, char **argv)
{
    /* three leaves leaked directly */
    for (int i = 0; i < 3; i++) {
        struct leaf *l = make_leaf(i, NULL);
        TRUTH_LEAK(l, "direct");
    }
    /* a tree leaked with its two leaves */
    struct tree *t = make_tree("lost");
    TRUTH_LEAK(t, "direct");
    TRUTH_LEAK(t->first, "indirect");
    TRUTH_LEAK(t->first->next, "indirect");
    /* records held only by void* slots, each holding a leaf */
    for (int i = 0; i < NBAG; i++) {
        struct rec *r = new_rec(i);
        bag[i] = r;
        TRUTH_KEPT(r);
        TRUTH_KEPT(r->item);
    }
    fprintf(stderr, "bag %d\n", NBAG);
    /* a realloc site and an aligned_alloc site, leaked */
    struct rec *rr = NULL;
    rr = realloc(rr, 2 * sizeof *rr); SITE(rr);
    memset(rr, 0, 2 * sizeof *rr);
    TRUTH_LEAK(rr, "direct");
    struct leaf *al = aligned_alloc(64, 64); SITE(al);
    memset(al, 0, 64);
    TRUTH_LEAK(al, "direct");
    /* freed by the library */
    for (int i = 0; i < 8; i++) {
        struct rec *r = new_rec(1000 + i);
        TRUTH_LEAK(r->item, "direct");
        foreign_free(r);
    }
    /* reallocated by the library (moved, then grown in place), then leaked */
    struct tree *g = malloc(sizeof *g); SITE(g);
    memset(g, 0, sizeof *g);
    g = foreign_grow(g, 4000);
    fprintf(stderr, "foreign %p\n", (void *)g);
    TRUTH_LEAK(g, "direct");
    struct leaf *s = malloc(sizeof *s); SITE(s);
    s->next = NULL;
    s = foreign_grow(s, 24);
    fprintf(stderr, "foreign %p\n", (void *)s);
    TRUTH_LEAK(s, "direct");
    /* shrunk in place by the library, its bytes untouched: the chunk is
     * smaller, the old word lies past its end, the site is not read */
    struct rec *big = malloc(25 * sizeof *big); SITE(big);
    memset(big, 0, 25 * sizeof *big);
    struct rec *small = foreign_resize(big, sizeof *big);
    fprintf(stderr, "foreign %p%s\n", (void *)small, small == big ? "" : " moved");
    TRUTH_LEAK(small, "direct");
    big = small = NULL;
    t = NULL;
    rr = NULL;
    al = NULL;
    g = NULL;
    s = NULL;
    if (argc > 1 && argv[1][0] == 'w') {     /* "wait": a live process for top/why */
        printf("ready\n");
        fflush(stdout);
        getchar();
    }
    return 0;
}
