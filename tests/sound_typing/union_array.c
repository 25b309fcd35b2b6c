/* (c) A heap array of a union with a pointer member: any element may hold a
 * pointer.  A typed pointer to the array's first element names the union; the
 * elements after the first hold pointers too.  A leak beside it is found. */
#include <stdint.h>
#include <stdlib.h>
#include "truth.h"

struct obj { uint64_t tag; struct obj *next; };
union value { double d; int64_t i; struct obj *o; char *s; };
struct table { size_t n; union value *vals; };

struct table *volatile tab;

int main(void) {
    tab = malloc(sizeof *tab);
    tab->n = 8;
    tab->vals = calloc(tab->n, sizeof(union value));
    TRUTH_KEPT(tab);
    TRUTH_KEPT(tab->vals);
    for (size_t i = 0; i < tab->n; i++) {
        if (i % 3 == 0) {
            tab->vals[i].d = 1.5 * (double)i;
        } else if (i % 3 == 1) {
            struct obj *o = calloc(1, sizeof *o);
            o->next = calloc(1, sizeof *o);
            tab->vals[i].o = o;
            TRUTH_KEPT(o);
            TRUTH_KEPT(o->next);
        } else {
            tab->vals[i].s = malloc(40);
            TRUTH_KEPT(tab->vals[i].s);
        }
    }
    union value *lost = calloc(4, sizeof *lost);
    lost[2].o = calloc(1, sizeof(struct obj));
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK(lost[2].o, "indirect");
    lost = NULL;
    return 0;
}
