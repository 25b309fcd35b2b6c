/* sizes.c — what --alloc-sites costs in memory: for every request size
 * 1..MAX (a site each call, in a loop), the chunk glibc gives (usable size + 8),
 * summed; and binary_trees' node (16 bytes) alone.  Built with and without
 * --alloc-sites by run.py: the difference per object is the cost. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX 1024
struct node { struct node *left, *right; };

int main(void)
{
    static void *keep[MAX + 1];
    unsigned long total = 0;
    for (int n = 1; n <= MAX; n++) {
        keep[n] = malloc(n);
        total += malloc_usable_size(keep[n]) + 8;
    }
    struct node *nd = malloc(sizeof *nd);
    printf("sizes 1..%d: %lu chunk bytes\nnode: %zu chunk bytes\n", MAX, total, malloc_usable_size(nd) + 8);
    for (int n = 1; n <= MAX; n++)
        free(keep[n]);
    free(nd);
    return 0;
}
