/* Types are identified by content, never by name: this file and dict_b.c
 * each define their own `struct dict` and `struct dictEntry` (as hiredis and
 * redis do), linked into one program.  Each file keeps one dict and leaks one;
 * dict_b's dict has its pointers where dict_a's has integers, so scanning one
 * with the other's layout loses objects.  dict_b.c has main(). */
#include <stdint.h>
#include <stdlib.h>
#include "truth.h"

struct dictEntry { void *key; struct dictEntry *next; };
struct dict { struct dictEntry **table; unsigned long size, used, sizemask; };

struct dict *volatile dict_a_kept;

static struct dict *a_new(const char *how) {
    struct dict *d = calloc(1, sizeof *d);
    d->size = 4;
    d->table = calloc(d->size, sizeof(struct dictEntry *));
    struct dictEntry *e = calloc(1, sizeof *e);
    e->key = malloc(16);
    d->table[1] = e;
    d->used = 1;
    if (how[0] == 'k') {
        TRUTH_KEPT(d); TRUTH_KEPT(d->table); TRUTH_KEPT(e); TRUTH_KEPT(e->key);
    } else {
        TRUTH_LEAK(d, "direct");
        TRUTH_LEAK(d->table, "indirect");
        TRUTH_LEAK(e, "indirect");
        TRUTH_LEAK(e->key, "indirect");
    }
    return d;
}

void dict_a_run(void) {
    dict_a_kept = a_new("kept");
    struct dict *lost = a_new("leak");
    lost = NULL;
}
