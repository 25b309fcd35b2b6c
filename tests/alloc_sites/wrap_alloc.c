/* wrap_alloc.c — allocation wrappers (named with --alloc-fn by the test):
 * they pass the size through to malloc/realloc and return its pointer. */
#include <stdlib.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n)
        abort();
    return q;
}
