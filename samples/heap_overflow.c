/* heap_overflow: a program with real heap-overflow bugs and known leaks, for
 * "a corrupted heap still gives a report" (tests/test_heap_layouts.py).
 *
 * Usage: heap_overflow MODE [LEAKS]
 *   overflow  copy 32 bytes into a 24-byte block: the next chunk's size field
 *             becomes text.  That chunk (kept from a
 *             global) points at a child object, which must stay reachable.
 *   top       the last block writes past its end into the top chunk's size: 2^40
 *   topwrap   the same with 0xfffffffffffffff1 (a size that wraps the address space)
 * LEAKS (default 3) objects are leaked before the damage.  Prints
 *     truth leak 0xADDR USABLE direct     (each leaked object)
 *     truth kept 0xADDR                   (the child only the damaged chunk points at)
 *     chunk 0xHEADER                      (the damaged chunk's header)
 *     ready
 * and blocks reading stdin; never mallocs or frees after the damage.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node { struct node *child; long value; char name[48]; };

static char outbuf[1 << 14];
struct node *kept[4];          /* reachable from here */
char *volatile scratch;        /* the overflowed buffer (kept, so the compiler keeps the bug) */

/* A copy with no bounds check, as in the bug it stands for. */
__attribute__((noinline)) static void copy_unchecked(char *dst, const char *src)
{
    while ((*(volatile char *)dst++ = *src++) != 0) {}
}

__attribute__((noinline)) static void leak(int n)
{
    for (int i = 0; i < n; i++) {
        char *p = malloc(100 + 50 * (size_t)i);
        memset(p, 'x', 16);
        printf("truth leak %p %zu direct\n", (void *)p, malloc_usable_size(p));
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "overflow";
    int nleak = argc > 2 ? atoi(argv[2]) : 3;
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);     /* stdio's buffer outside the heap */
    for (int i = 0; i < 4; i++) {
        kept[i] = calloc(1, sizeof(struct node));
        snprintf(kept[i]->name, sizeof kept[i]->name, "kept %d", i);
    }
    leak(nleak);
    if (!strcmp(mode, "overflow")) {
        char *buf = scratch = malloc(24);
        struct node *victim = calloc(1, sizeof(struct node));
        victim->child = calloc(1, sizeof(struct node));     /* only the damaged chunk points here */
        kept[3]->child = victim;
        printf("truth kept %p\nchunk %p\n", (void *)victim->child, (void *)((char *)victim - 16));
        copy_unchecked(buf, "0123456789abcdefghijklmnopqrstu");  /* 32 bytes into 24: the next size field */
    } else {
        size_t size = !strcmp(mode, "top") ? ((size_t)1 << 40) | 1 : (size_t)0xfffffffffffffff1;
        size_t *last = malloc(24);                          /* the last chunk before the top */
        scratch = (char *)last;
        char *top = (char *)last + 16;
        printf("chunk %p\n", (void *)top);
        last[3] = size;                                     /* one word past its 24 bytes */
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return kept[0]->value != 0;
}
