/* The one store of a pointer into `struct cell`'s integer word: this module's
 * record of the type has a STORED slot there. */
#include "cell.h"

__attribute__((noinline)) void link_tagged(struct cell *c, void *p) {
    c->tag = (uintptr_t)p | 1;
}
