/* Linked first: its record of struct cell (no STORED word: this module never
 * stores a pointer into `tag`) comes first in .mttypes.  The object only the
 * tagged `tag` word of a cell points to must stay reachable: the merged type
 * has cell_b.c's STORED word. */
#include <stdlib.h>
#include "cell.h"
#include "truth.h"

struct cell *volatile root;

int main(void) {
    struct cell *c = calloc(1, sizeof *c);
    c->v = (long)c->tag;
    root = c;
    TRUTH_KEPT(c);
    void *p = malloc(48);
    link_tagged(c, p);
    TRUTH_KEPT(p);
    void *lost = malloc(24);
    TRUTH_LEAK(lost, "direct");
    lost = NULL;
    return 0;
}
