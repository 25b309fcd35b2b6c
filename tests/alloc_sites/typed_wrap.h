/* typed_wrap.h — the allocators of typed_wrap_alloc.c and the objects of typed_wrap.c */
#include <stddef.h>

/* the common header of every object on the state's list (Lua's CommonHeader) */
struct gcobj { struct gcobj *next; unsigned char tag; };
struct table { struct gcobj *next; unsigned char tag; struct table *meta; void *slot; long n; };
struct str { struct gcobj *next; unsigned char tag; size_t len; char s[]; };

typedef void *(*alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);
struct state { alloc_fn frealloc; void *ud; struct gcobj *all; size_t bytes; };

void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
struct gcobj *obj_new(struct state *S, int tag, size_t size);
void obj_free(struct state *S, struct gcobj *o, size_t size);
void *vec_new(struct state *S, size_t size);
void *hdr_alloc(size_t n);
void hdr_free(void *p);
#define POOL_SIZE 1024
extern unsigned char *pool;
void *hdr_pool(size_t n);
