/* unwind_threads: several threads, each blocked at a known depth in a
 * different kind of wait (mutex, condition variable, nanosleep, read, join).
 * Usage: unwind_threads   (prints "ready <pid>" when every thread is parked)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t cm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar;
static int fds[2];
static long deep(long kind, int n, long acc);
/* the recursion goes through a volatile pointer so it is not turned into a loop */
static long (*volatile again)(long, int, long) = deep;

static void park(long kind) {
    switch (kind) {
    case 0: pthread_mutex_lock(&held); break;                 /* futex */
    case 1: pthread_mutex_lock(&cm); for (;;) pthread_cond_wait(&cv, &cm);
    case 2: for (;;) { struct timespec ts = {1000, 0}; nanosleep(&ts, NULL); }
    default: { char c; for (;;) if (read(fds[0], &c, 1) <= 0) pause(); }
    }
}

__attribute__((noinline)) static long deep(long kind, int n, long acc) {
    if (n == 0) {
        pthread_barrier_wait(&bar);
        park(kind);
        return acc;
    }
    long a2 = acc * 17 + n + kind;
    return again(kind, n - 1, a2) + a2;
}

static void *worker(void *arg) {
    long kind = (long)arg;
    return (void *)deep(kind, 2 + (int)kind * 3, kind);
}

int main(void) {
    enum { N = 4 };
    pthread_t th[N];
    if (pipe(fds) != 0)
        return 1;
    pthread_mutex_lock(&held);
    pthread_barrier_init(&bar, NULL, N + 1);
    for (long i = 0; i < N; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&bar);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    pthread_join(th[0], NULL);
    return 0;
}
