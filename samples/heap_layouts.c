/* heap_layouts: glibc heaps whose mappings the kernel splits, for the heap
 * walker (tests/test_heap_layouts.py).  The main heap is one range for glibc
 * (mp_.sbrk_base up to the end of the top chunk), but /proc/PID/maps may show
 * it as several lines:
 *
 * Usage: heap_layouts MODE [N]
 *   fork      allocate, fork; the child allocates N more blocks (default
 *             20000): the part of the heap grown after fork is a second
 *             [heap] mapping (its anon_vma differs, the kernel cannot merge).
 *             The child prints the records; the parent waits for it.
 *   mprotect  allocate N blocks, then make one page in the middle of the heap
 *             read-only (three [heap] lines).
 *   mprotect-back  the same, then make it writable again.
 *   thread    a thread allocates N blocks in its own arena, then makes one
 *             page in the middle of that 64 MiB-aligned heap read-only (the
 *             heap_info chain delimits it; its mapping is split in three).
 *   thp       grow the heap by 16 MiB at once (M_TOP_PAD), advise the
 *             2 MiB-aligned middle of it MADV_HUGEPAGE (the mapping splits),
 *             then allocate N blocks into it (faulted in as huge pages where
 *             the kernel's THP setting is "always" or "madvise").
 * Prints (the process that the test checks)
 *     pid PID
 *     live 0xADDR USABLE     (every block it holds, malloc_usable_size)
 *     mallinfo2 arena=… uordblks=… fordblks=…
 *     ready
 * and blocks reading stdin.  Never mallocs or frees after the records.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char outbuf[1 << 16];
static void **blocks;
static int nblocks;

static void take(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(16 + (size_t)(i * 37) % 400);
        memset(p, 0x11, 8);
        blocks[nblocks++] = p;
    }
}

static void report_and_block(void)
{
    printf("pid %d\n", (int)getpid());
    for (int i = 0; i < nblocks; i++)
        printf("live %p %zu\n", blocks[i], malloc_usable_size(blocks[i]));
    printf("live %p %zu\n", (void *)blocks, malloc_usable_size(blocks));
    struct mallinfo2 mi = mallinfo2();
    printf("mallinfo2 arena=%zu uordblks=%zu fordblks=%zu\nready\n", mi.arena, mi.uordblks, mi.fordblks);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
}

static void *thread_heap(void *arg)
{
    int n = *(int *)arg;
    take(n);
    long page = sysconf(_SC_PAGESIZE);
    char *mid = (char *)((uintptr_t)blocks[n / 2] & ~(uintptr_t)(page - 1));
    if (mprotect(mid, (size_t)page, PROT_READ))
        perror("mprotect");
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "fork";
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);     /* stdio's buffer outside the heap */
    if (!strcmp(mode, "thp")) {
        mallopt(M_TOP_PAD, 16 << 20);                   /* the first malloc grows the brk by 16 MiB */
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
    }
    blocks = malloc(sizeof(void *) * (size_t)(n + 1000));
    long page = sysconf(_SC_PAGESIZE);
    if (!strcmp(mode, "fork")) {
        take(500);
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);           /* dies with the parent the test kills */
            take(n);
            report_and_block();
            return 0;
        }
        int st;
        waitpid(child, &st, 0);
        return 0;
    }
    if (!strncmp(mode, "mprotect", 8)) {
        take(n);
        char *mid = (char *)((uintptr_t)blocks[n / 2] & ~(uintptr_t)(page - 1));
        if (mprotect(mid, (size_t)page, PROT_READ)) {
            perror("mprotect");
            return 1;
        }
        if (!strcmp(mode, "mprotect-back") && mprotect(mid, (size_t)page, PROT_READ | PROT_WRITE)) {
            perror("mprotect");
            return 1;
        }
        report_and_block();
        return 0;
    }
    if (!strcmp(mode, "thread")) {
        pthread_t t;
        pthread_create(&t, NULL, thread_heap, &n);
        pthread_join(t, NULL);
        report_and_block();
        return 0;
    }
    if (!strcmp(mode, "thp")) {
        take(1);                                        /* the brk heap: 16 MiB, untouched */
        uintptr_t lo = ((uintptr_t)sbrk(0) - (12u << 20)) & ~(uintptr_t)((2u << 20) - 1);
        if (madvise((void *)lo, 8u << 20, MADV_HUGEPAGE)) {
            perror("madvise");
            return 1;
        }
        take(n);
        report_and_block();
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
