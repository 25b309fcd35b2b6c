/* wrap.c — allocation through wrappers (wrap_alloc.c), named by
 * `mappedtrace cc --alloc-fn=xmalloc,xrealloc:realloc`: each object's site is
 * the wrapper's caller, with the type the caller uses it as.  Prints
 * "site ADDR FILE:LINE FUNC" (the call is on the line of SITE) and the truth. */
#include <stdlib.h>
#include "truth.h"

#define SITE(p) fprintf(stderr, "site %p %s:%d %s\n", (void *)(p), __FILE__, __LINE__, __func__)

void *xmalloc(size_t n);
void *xrealloc(void *p, size_t n);

struct item { struct item *next; long key; };

int main(void)
{
    for (int i = 0; i < 3; i++) {
        struct item *it = xmalloc(sizeof *it); SITE(it);
        it->next = NULL;
        it->key = i;
        TRUTH_LEAK(it, "direct");
    }
    struct item **arr = xrealloc(NULL, 4 * sizeof *arr); SITE(arr);
    for (int i = 0; i < 4; i++) {
        arr[i] = xmalloc(sizeof **arr); SITE(arr[i]);
        arr[i]->next = NULL;
        TRUTH_LEAK(arr[i], "indirect");
    }
    TRUTH_LEAK(arr, "direct");
    arr = NULL;
    return 0;
}
