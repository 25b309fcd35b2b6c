/* The other `struct dict` (see dict_a.c): integers first, pointers after. */
#include <stdint.h>
#include <stdlib.h>
#include "truth.h"

typedef struct dictEntry { void *key; void *val; struct dictEntry *next; uint64_t hash; } dictEntry;
typedef struct dict { unsigned long used; long rehashidx; dictEntry *head; void *privdata; } dict;

dict *volatile dict_b_kept;
void dict_a_run(void);

static dict *b_new(const char *how) {
    dict *d = calloc(1, sizeof *d);
    d->rehashidx = -1;
    d->privdata = malloc(24);
    dictEntry *e = calloc(1, sizeof *e);
    e->key = malloc(16);
    e->val = malloc(16);
    d->head = e;
    d->used = 1;
    if (how[0] == 'k') {
        TRUTH_KEPT(d); TRUTH_KEPT(d->privdata); TRUTH_KEPT(e); TRUTH_KEPT(e->key); TRUTH_KEPT(e->val);
    } else {
        TRUTH_LEAK(d, "direct");
        TRUTH_LEAK(d->privdata, "indirect");
        TRUTH_LEAK(e, "indirect");
        TRUTH_LEAK(e->key, "indirect");
        TRUTH_LEAK(e->val, "indirect");
    }
    return d;
}

int main(void) {
    dict_a_run();
    dict_b_kept = b_new("kept");
    dict *lost = b_new("leak");
    lost = NULL;
    return 0;
}
