/* A pointer one past the end of a 24-byte object (its usable size: the pointer lands on
 * the next chunk's header, inside no object).  The relocator must pin the object
 * (moving it would leave `end` behind) and may move the span that holds both.
 * Prints "ready BEGIN SPAN", waits for stdin to close, prints end - begin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

struct span { char *begin; char *end; long n; };
struct span *g_span;

int main(void) {
    g_span = malloc(sizeof *g_span);
    g_span->begin = malloc(24);
    if (malloc_usable_size(g_span->begin) != 24)
        return 3;
    memset(g_span->begin, 'x', 24);
    g_span->end = g_span->begin + 24;
    g_span->n = 24;
    printf("ready %p %p\n", (void *)g_span->begin, (void *)g_span);
    fflush(stdout);
    while (getchar() != EOF)
        ;
    long bad = 0;
    for (char *p = g_span->begin; p != g_span->end && bad < 100; p++)
        bad += *p != 'x';
    printf("%ld %ld\n", (long)(g_span->end - g_span->begin), bad);
    return 0;
}
