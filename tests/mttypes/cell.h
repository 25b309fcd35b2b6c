/* A type both translation units of tests/test_mttypes.py declare: each writes
 * its own .mttypes record of it; only cell_b.c stores a pointer into `tag`. */
#include <stdint.h>

struct cell { uintptr_t tag; struct cell *next; long v; };

extern struct cell *volatile root;
void link_tagged(struct cell *c, void *p);
