/* unwind_busy: CPU-busy threads, for unwinding at arbitrary interruption
 * points (prologues, epilogues, leaf code, libc, qsort callbacks, the vDSO).
 * Runs until killed; prints "ready <pid>" once the worker threads run.
 * Usage: unwind_busy [NTHREADS [vdso]]   (vdso: the threads mostly call clock_gettime)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile long sink;

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

__attribute__((noinline)) static long leaf(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += i * i ^ (s >> 3);
    return s;
}

__attribute__((noinline)) static long with_libc(long seed) {
    long buf[64];
    for (int i = 0; i < 64; i++)
        buf[i] = (seed * 2654435761u + i * 40503u) % 1000;
    qsort(buf, 64, sizeof buf[0], cmp_long);           /* callbacks through libc */
    char *p = malloc(256 + (seed & 255));
    memset(p, (int)seed, 256);
    long r = (long)strlen(p) + buf[7];
    free(p);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);               /* the vDSO */
    return r + ts.tv_nsec;
}

static long work(int depth, long acc);
static long (*volatile again)(int, long) = work;

__attribute__((noinline)) static long work(int depth, long acc) {
    if (depth == 0)
        return leaf(50 + (acc & 63)) + with_libc(acc);
    long a2 = acc * 31 + depth;
    long r = again(depth - 1, a2);
    return r + a2 + leaf(depth);
}

static int vdso_mode;

__attribute__((noinline)) static long clocks(long n) {
    struct timespec ts;
    long s = 0;
    for (long i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s += ts.tv_nsec;
    }
    return s;
}

static void *spin(void *arg) {
    long i = (long)arg;
    for (;;) {
        if (vdso_mode) {
            sink += clocks(1000);
            continue;
        }
        sink += work((int)(i % 9), i);
        i++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    vdso_mode = argc > 2 && strcmp(argv[2], "vdso") == 0;
    pthread_t th;
    for (long i = 0; i < n; i++)
        pthread_create(&th, NULL, spin, (void *)(i * 1000));
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    spin((void *)7);
    return 0;
}
