/* foreign.c — a library built WITHOUT the pass (plain clang-22 -shared):
 * it frees and reallocates objects that sites.c's typed sites allocated, and
 * (foreign_grow) writes every byte it asked for, or (foreign_resize) none. */
#include <stdlib.h>
#include <string.h>

void foreign_free(void *p) { free(p); }

/* realloc and nothing else: the bytes it keeps are the old owner's */
void *foreign_resize(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        abort();
    return q;
}

void *foreign_grow(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        abort();
    memset(q, 0x5a, n);
    return q;
}
