/* heap_locked: a thread that holds main_arena's lock until the process has been
 * stopped for a while, then lets it go (tests/test_remote.py: the tracer must
 * stop it again once the lock is free).
 *
 * glibc's malloc_stats() prints each arena's figures with fprintf(stderr)
 * while it holds that arena's mutex.  Here stderr is a pipe of our own, filled
 * first, so the holder thread blocks in write() inside malloc_stats() with the
 * lock held.  A watcher thread reads the clock every millisecond; when it sees
 * a jump of more than a second (the whole process was stopped), it drains the
 * pipe: the holder's write completes and the lock is released.
 *
 * Prints "ready PID" once the holder is blocked; then on each line of stdin
 * prints "ok N" (N: objects allocated since, so the heap is usable again).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int pipefd[2];
static volatile int drained;

struct node { struct node *next; long v; };
static struct node *kept;

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void *holder(void *arg) {
    (void)arg;
    malloc_stats();                 /* blocks in write() with main_arena's lock held */
    return NULL;
}

static void *watcher(void *arg) {
    (void)arg;
    long last = now_ms();
    for (;;) {
        usleep(1000);
        long t = now_ms();
        if (t - last > 1000)
            break;                  /* the process was stopped for more than a second */
        last = t;
    }
    char buf[4096];
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    for (;;) {                      /* drain until the holder is done (its output too) */
        ssize_t n = read(pipefd[0], buf, sizeof buf);
        if (n <= 0 && drained)
            break;
        if (n <= 0)
            usleep(1000);
        if (n < 0 && errno == EAGAIN && !drained) {
            void *p = malloc(16);    /* waits for the lock: the holder has finished */
            free(p);
            drained = 1;
        }
    }
    return NULL;
}

int main(void) {
    for (int i = 0; i < 1000; i++) {            /* a list to find */
        struct node *n = malloc(sizeof *n);
        n->next = kept;
        n->v = i;
        kept = n;
    }
    if (pipe(pipefd) != 0)
        return 1;
    fcntl(pipefd[1], F_SETFL, O_NONBLOCK);
    char fill[4096];
    memset(fill, 'x', sizeof fill);
    while (write(pipefd[1], fill, sizeof fill) > 0)
        ;                                        /* the pipe is full */
    fcntl(pipefd[1], F_SETFL, 0);
    dup2(pipefd[1], 2);
    /* nothing below may call malloc until the lock is free: stdio gets static
     * buffers, the watcher is created before the holder (pthread_create allocates) */
    static char inbuf[4096], outbuf[4096];
    setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);
    pthread_t h, w;
    pthread_create(&w, NULL, watcher, NULL);
    pthread_create(&h, NULL, holder, NULL);
    usleep(200000);                              /* the holder reaches its blocked write */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    long count = 0;
    while (fgets(line, sizeof line, stdin)) {
        struct node *n = malloc(sizeof *n);      /* the heap is usable again */
        n->next = kept;
        kept = n;
        printf("ok %ld\n", ++count);
        fflush(stdout);
    }
    return 0;
}
