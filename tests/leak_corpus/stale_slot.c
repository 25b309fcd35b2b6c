/* A leak hidden from conservative scanners: the only remaining copy of the leaked
 * pointer sits in a DEAD stack slot of a LIVE frame (serve() calls exit() while
 * its frame is still on the stack).  MappedTrace's maps say the slot is dead, so
 * the object is reported; a conservative scanner (LeakSanitizer) sees the stale
 * word and misses it.  Build at -O0 so the slot is a plain alloca. */
#include <stdlib.h>
#include <string.h>
#include "truth.h"
__attribute__((noinline)) static void use(char *p) { strcpy(p, "request buffer"); puts(p); }
__attribute__((noinline)) static void serve(void) {
    char *request = malloc(100);
    use(request);
    TRUTH_LEAK(request, "direct");
    /* 'request' is never read again: its slot is dead from here on, but still holds the address */
    fflush(stdout);
    exit(0);
}
int main(void) { serve(); return 1; }
