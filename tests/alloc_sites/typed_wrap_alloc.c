/* typed_wrap_alloc.c — two allocators whose callers know the type, named
 * with `--alloc-fn=obj_new:wrapper,hdr_*:wrapper` by the test:
 *   - Lua's shape: obj_new(S, tag, size) calls the state's allocator through a
 *     function pointer (l_alloc: realloc/free) and counts the bytes; objects
 *     are freed with their size (obj_free), so no request may grow;
 *   - SQLite's shape: hdr_alloc(n) keeps the size in a word before the
 *     object and returns the chunk + 8. */
#include <stdlib.h>
#include <string.h>
#include "typed_wrap.h"

void *foreign_resize(void *p, size_t n);

void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

struct gcobj *obj_new(struct state *S, int tag, size_t size)
{
    struct gcobj *o = S->frealloc(S->ud, NULL, (size_t)tag, size);
    if (!o)
        abort();
    o->tag = (unsigned char)tag;
    o->next = S->all;
    S->all = o;
    S->bytes += size;
    return o;
}

/* unlinks o from the list (the caller knows its size) and frees it */
void obj_free(struct state *S, struct gcobj *o, size_t size)
{
    for (struct gcobj **pp = &S->all; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    S->frealloc(S->ud, o, size, 0);
    S->bytes -= size;
}

/* a vector of the state (Lua's luaM_newvector): the caller's n * sizeof(T) */
void *vec_new(struct state *S, size_t size)
{
    void *v = S->frealloc(S->ud, NULL, 0, size);
    if (!v)
        abort();
    S->bytes += size;
    return v;
}

void *hdr_alloc(size_t n)
{
    long long *p = malloc(n + 8);
    if (!p)
        return NULL;
    p[0] = (long long)n;
    return p + 1;
}

void hdr_free(void *p)
{
    if (p)
        free((long long *)p - 1);
}

/* a pool (named like the hdr_* wrappers): 64-byte slots of one block that
 * code without the maps allocated, so no site padded it; after each call the
 * caller finds no block of its own in the handoff pair and writes nothing */
unsigned char *pool;
static size_t pool_used;

void *hdr_pool(size_t n)
{
    if (!pool) {
        pool = foreign_resize(NULL, POOL_SIZE);
        memset(pool, 0x5a, POOL_SIZE);
    }
    if (n > 64 || pool_used + 64 > POOL_SIZE)
        return NULL;
    void *p = pool + pool_used;
    pool_used += 64;
    return p;
}
