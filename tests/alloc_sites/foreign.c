/* foreign.c — a library built WITHOUT the pass (plain clang-22 -shared):
 * it frees and reallocates objects that sites.c's typed sites allocated, and
 * writes every byte it asked for (so no word of the old owner survives). */
#include <stdlib.h>
#include <string.h>

void foreign_free(void *p) { free(p); }

void *foreign_grow(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        abort();
    memset(q, 0x5a, n);
    return q;
}
