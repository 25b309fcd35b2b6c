/* A stale typed pointer gives a reused chunk the wrong type (found in Redis's
 * Lua 5.1: a CallInfo slot above L->ci keeps `top`/`savedpc` pointing at memory
 * that was freed and reused by another allocation; the tracer types the new
 * object by the stale slot's pointee type and skips the words that type calls
 * non-pointer).  Here: ci[1].top is left pointing at a freed 16-byte `struct
 * tvalue` array whose chunk malloc hands back for a `struct holder`; the holder
 * is reachable (through `holders`, a void* global) and its `kid` sits at +8,
 * where struct tvalue has its tag byte and padding.  Nothing is leaked: valgrind
 * and LeakSanitizer report nothing, and MappedTrace must not either. */
#include <stdlib.h>
#include <stdio.h>
#include "../leak_corpus/truth.h"

struct tvalue { long value; unsigned char tt; };          /* 16 bytes: no pointer at +8 */
struct callinfo { struct tvalue *top; long nresults; };   /* a frame record, like Lua's CallInfo */
struct holder { long tag; void *kid; };                   /* 16 bytes: a pointer at +8 */

struct callinfo *ci;      /* the frame array: ci[1] is "popped" but keeps its pointer */
void *holders;            /* untyped: the holder's only proper reference */

int main(int argc, char **argv) {
    ci = calloc(4, sizeof *ci);
    struct tvalue *stack = malloc(sizeof *stack);
    ci[1].top = stack;                 /* frame 1 in use */
    free(stack);                       /* frame 1 popped: ci[1].top is now stale */
    struct holder *h = malloc(sizeof *h);   /* malloc reuses the freed chunk (tcache) */
    if ((void *)h != (void *)ci[1].top)
        fprintf(stderr, "note: the chunk was not reused (%p, %p)\n", (void *)h, (void *)ci[1].top);
    h->tag = 7;
    h->kid = malloc(48);
    holders = h;
    TRUTH_KEPT(h->kid);
    printf("ready %d\n", (int)h->tag);
    fflush(stdout);
    if (argc > 1 && argv[1][0] == 'w')
        (void)getchar();   /* "wait": stay alive for a live check until stdin has a line */
    return 0;          /* at exit: h and h->kid reachable, nothing leaked */
}
