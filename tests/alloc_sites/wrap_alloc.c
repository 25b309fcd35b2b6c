/* wrap_alloc.c — allocation wrappers (named with --alloc-fn by the test):
 * they pass the size through and return the allocator's pointer.  xmalloc
 * calls malloc itself (its allocation is then no site: its callers mark the
 * object); xrealloc goes through a helper that is no named wrapper (its
 * realloc is a site: the object holds two words, the caller's first). */
#include <stdlib.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

__attribute__((noinline)) static void *try_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

void *xrealloc(void *p, size_t n)
{
    void *q = try_realloc(p, n);
    if (!q && n)
        abort();
    return q;
}
