/* heap_pattern: a known glibc heap for the heap walker tests (tests/test_heap.c).
 *
 * Usage: heap_pattern [THREADS] [BIG] [THREAD_BIG]
 *   Every thread (main + THREADS workers, each in its own arena) allocates a
 *   pattern of sizes (tcache, fastbin, small, large, mmapped), frees some so
 *   they land in tcache, fastbins, unsorted, small and large bins, and prints
 *       live  0xADDR USABLE          (malloc_usable_size)
 *       freed 0xADDR
 *   BIG > 0 adds BIG live 16..256-byte objects in the main arena (speed test);
 *   THREAD_BIG > 0 adds THREAD_BIG live 1000-byte objects in every worker's
 *   arena first (100000 of them need two 64 MiB heaps per arena).
 *   Then main prints malloc_info(0, stdout) and
 *       mallinfo2 arena=… ordblks=… smblks=… hblks=… hblkhd=… uordblks=… fordblks=… keepcost=…
 *       ready
 *   and blocks reading stdin; every thread stays alive (its tcache too).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t done;
static int block_fd[2];
static long thread_big;
static void *last_mmapped;

static void record_live(void *p)
{
    printf("live %p %zu\n", p, malloc_usable_size(p));
}

struct size_class { size_t size; int count, nfree, phase; };

/* phase 0 frees before the sorting malloc (→ tcache, then unsorted, then
 * sorted into small/large bins); phase 1 frees after it (→ tcache, then
 * fastbins, or the unsorted bin).  Blocks are separated by live 24-byte
 * guards so that nothing coalesces. */
static const struct size_class classes[] = {
    {200, 10, 9, 0},    /* 7 tcache + 2 smallbin */
    {500, 10, 8, 0},    /* 7 tcache + 1 smallbin */
    {1500, 3, 2, 0},    /* largebin */
    {3000, 3, 2, 0},
    {5000, 3, 1, 0},
    {24, 12, 10, 1},    /* 7 tcache + 3 fastbin */
    {40, 12, 10, 1},
    {100, 12, 9, 1},    /* 7 tcache + 2 fastbin */
    {2000, 2, 1, 1},    /* unsorted */
};
#define NCLASSES (sizeof classes / sizeof classes[0])

static void pattern(void)
{
    static __thread void *blocks[NCLASSES][16];
    void *keep[512];
    int nkeep = 0;
    pthread_mutex_lock(&print_lock);
    /* mmapped (threshold fixed); first: a large request consolidates fastbins */
    for (int i = 0; i < 3; i++)
        keep[nkeep++] = last_mmapped = malloc(200000 + 4096 * i);
    for (unsigned c = 0; c < NCLASSES; c++)
        for (int i = 0; i < classes[c].count; i++) {
            blocks[c][i] = malloc(classes[c].size);
            memset(blocks[c][i], 0x5a, 16);
            keep[nkeep++] = malloc(24);
        }
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            keep[nkeep++] = malloc(9000);       /* sorts the unsorted bin */
        }
        for (unsigned c = 0; c < NCLASSES; c++) {
            if (classes[c].phase != phase)
                continue;
            for (int i = 0; i < classes[c].nfree; i++) {
                printf("freed %p\n", blocks[c][i]);
                free(blocks[c][i]);
            }
        }
    }
    for (unsigned c = 0; c < NCLASSES; c++)
        for (int i = classes[c].nfree; i < classes[c].count; i++)
            keep[nkeep++] = blocks[c][i];
    for (int i = 0; i < nkeep; i++)
        record_live(keep[i]);
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
}

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 0; i < thread_big; i++) {
        void *p = malloc(1000);
        if (i % 4096 == 0) {
            pthread_mutex_lock(&print_lock);
            record_live(p);
            pthread_mutex_unlock(&print_lock);
        }
    }
    pattern();
    pthread_barrier_wait(&done);
    char c;
    while (read(block_fd[0], &c, 1) < 0) {}     /* block forever, alive */
    return NULL;
}

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? atoi(argv[1]) : 0;
    long big = argc > 2 ? atol(argv[2]) : 0;
    thread_big = argc > 3 ? atol(argv[3]) : 0;
    if (pipe(block_fd) != 0)
        return 1;
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);      /* no dynamic threshold */
    printf("pid %d\n", getpid());               /* allocates stdout's buffer */
    fflush(stdout);
    pthread_barrier_init(&done, NULL, nthreads + 1);
    pthread_t tids[64];
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_create(&tids[i], NULL, worker, NULL);
    for (long i = 0; i < big; i++) {
        void *p = malloc(16 + (i * 37) % 241);
        if (i % 4096 == 0)
            record_live(p);
    }
    /* aligned blocks: memalign'd mmapped chunks start inside their mapping,
     * an aligned arena chunk leaves a free chunk in front of it */
    void *aligned[3];
    if (posix_memalign(&aligned[0], 4096, 300000) || posix_memalign(&aligned[1], 32768, 150000) ||
        posix_memalign(&aligned[2], 256, 1000))
        return 1;
    for (int i = 0; i < 3; i++)
        record_live(aligned[i]);
    pattern();
    pthread_barrier_wait(&done);
    /* An anonymous page right below an mmapped chunk (if the kernel takes the
     * hint): their mappings merge, and the chunk no longer starts a mapping. */
    char *page = mmap((char *)last_mmapped - 16 - 4096, 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED)
        memset(page, 0x77, 64);
    printf("adjacent %d\n", page == (char *)last_mmapped - 16 - 4096);
    malloc_info(0, stdout);
    struct mallinfo2 mi = mallinfo2();
    printf("\nmallinfo2 arena=%zu ordblks=%zu smblks=%zu hblks=%zu hblkhd=%zu "
           "uordblks=%zu fordblks=%zu keepcost=%zu fsmblks=%zu\nready\n",
           mi.arena, mi.ordblks, mi.smblks, mi.hblks, mi.hblkhd, mi.uordblks,
           mi.fordblks, mi.keepcost, mi.fsmblks);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
