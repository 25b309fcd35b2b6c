/* heap_corrupt: a glibc heap this program corrupts on purpose, for the heap
 * walker's error tests (tests/test_heap_glibc.py).
 *
 * Usage: heap_corrupt MODE   with MODE one of
 *   zero    the size field of a chunk in the middle of the heap becomes 0
 *   huge    a size field becomes 256 MiB (runs past the heap end)
 *   cycle   a tcache entry's (safe-linked) next pointer points at itself
 *   thread  like "zero", in a thread arena
 *   fastbin a fastbin chunk's (safe-linked) fd points outside the heap
 *   unsorted an unsorted-bin chunk's fd points outside the heap
 *   bins    three chunks in the unsorted bin, the first one's fd smashed: the
 *           other two ("lost 0xHEADER") are still on the list's bk side
 * Prints "chunk 0xHEADER" (the header address of the damaged chunk), then
 * "ready", and blocks reading stdin.  Never frees or mallocs afterwards.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"     /* the point of "cycle" */
#endif

static void *bad;
static void *lost[2];

static void corrupt(const char *mode)
{
    void *a[8];
    for (int i = 0; i < 8; i++)
        a[i] = malloc(40);
    size_t *size_field = (size_t *)a[3] - 1;
    bad = (char *)a[3] - 16;
    if (!strcmp(mode, "zero") || !strcmp(mode, "thread")) {
        *size_field = 0;
    } else if (!strcmp(mode, "huge")) {
        *size_field = ((size_t)256 << 20) | 1;
    } else if (!strcmp(mode, "fastbin")) {
        void *fill[7];
        for (int i = 0; i < 7; i++)
            fill[i] = malloc(40);
        for (int i = 0; i < 7; i++)
            free(fill[i]);          /* tcache[1] full */
        uintptr_t p = (uintptr_t)a[3];
        free(a[3]);                 /* → fastbin */
        *(uintptr_t *)p = (p >> 12) ^ (uintptr_t)0x4141414141414140;
    } else if (!strcmp(mode, "unsorted")) {
        void *big = malloc(2000);
        void *volatile guard = malloc(40);  /* keeps big away from top */
        (void)guard;
        uintptr_t p = (uintptr_t)big;
        bad = (char *)big - 16;
        free(big);                  /* → unsorted (above the tcache range) */
        *(uintptr_t *)p = (uintptr_t)0x4141414141414140;
    } else if (!strcmp(mode, "bins")) {
        void *big[3];
        for (int i = 0; i < 3; i++) {
            big[i] = malloc(2000);
            void *volatile guard = malloc(40);      /* nothing coalesces */
            (void)guard;
        }
        for (int i = 0; i < 3; i++)
            free(big[i]);           /* unsorted: head -> big[2] -> big[1] -> big[0] */
        bad = (char *)big[2] - 16;
        lost[0] = (char *)big[1] - 16;
        lost[1] = (char *)big[0] - 16;
        *(uintptr_t *)big[2] = (uintptr_t)0x4141414141414140;
    } else if (!strcmp(mode, "cycle")) {
        uintptr_t self = (uintptr_t)a[3];
        free(a[2]);
        free(a[3]);                 /* tcache[1]: a[3] -> a[2] */
        *(uintptr_t *)self = (self >> 12) ^ self;
    }
}

static void *worker(void *arg)
{
    corrupt(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "zero";
    printf("pid %d\n", getpid());
    fflush(stdout);
    if (!strcmp(mode, "thread")) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)mode);
        pthread_join(t, NULL);
    } else {
        corrupt(mode);
    }
    for (int i = 0; i < 2; i++)
        if (lost[i])
            printf("lost %p\n", lost[i]);
    printf("chunk %p\nready\n", bad);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
