/* (b) Objects whose size matches another struct's, so a guess by size would
 * pick the wrong type: `struct pair` has its pointers at 0 and 8, `struct rec`
 * (same size) has them at 16 and 24.  Untyped pointers (void *) reach the
 * recs, so nothing but their size hints at a type; their real pointers sit
 * where `struct pair` has none.  One chunk holds two recs and a `struct pair *`
 * (a cast) points at the second: a chunk "holding two pairs" by its size.  A
 * leaked rec beside them is still found, with its children. */
#include <stdint.h>
#include <stdlib.h>
#include "truth.h"

struct pair { struct pair *left, *right; uint64_t a, b; };
struct rec { uint64_t id, hash; char *name; struct rec *next; };
struct leaf { uint64_t v[3]; };

struct pair *volatile pairs;     /* makes struct pair a type with pointers in the table */
void *volatile anon[5];          /* untyped references to recs */
struct pair *volatile alias;     /* a cast pointer into an array of two recs */

static struct rec *new_rec(uint64_t id) {
    struct rec *r = calloc(1, sizeof *r);
    r->id = id;
    r->hash = id * 0x9e3779b97f4a7c15ull;
    r->name = malloc(24);
    r->next = NULL;
    return r;
}

int main(void) {
    pairs = calloc(1, sizeof(struct pair));
    TRUTH_KEPT(pairs);
    for (int i = 0; i < 4; i++) {
        struct rec *r = new_rec(i);
        r->next = new_rec(100 + i);            /* held only at offset 24 */
        TRUTH_KEPT(r);
        TRUTH_KEPT(r->name);
        TRUTH_KEPT(r->next);
        TRUTH_KEPT(r->next->name);
        anon[i] = r;
    }
    struct rec *two = calloc(2, sizeof *two);
    TRUTH_KEPT(two);
    for (int i = 0; i < 2; i++) {
        two[i].name = malloc(24);
        two[i].next = new_rec(200 + i);
        TRUTH_KEPT(two[i].name);
        TRUTH_KEPT(two[i].next);
        TRUTH_KEPT(two[i].next->name);
    }
    anon[4] = two;
    alias = (struct pair *)&two[1];
    struct rec *lost = new_rec(7);
    lost->next = new_rec(8);
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK(lost->name, "indirect");
    TRUTH_LEAK(lost->next, "indirect");
    TRUTH_LEAK(lost->next->name, "indirect");
    lost = NULL;
    return 0;
}
