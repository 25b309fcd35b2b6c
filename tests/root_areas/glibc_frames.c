/* glibc frames under the glibc model (mappedtrace/glibc_model.py, issue #11).
 *
 * Prints "ready" on stdout, then waits inside glibc:
 *   read     main blocks in read(0, buf): buf is malloc'd and dead in main after
 *            the call (a leak by main's liveness, held only by read()'s argument
 *            register); kept is live in main after the call
 *   threads  a thread in pthread_cond_wait on a heap object it uses after the
 *            wait (kept), a thread in read(pipe, buf) with buf dead after the
 *            call (a leak), and main in read(0) like "read" (no buffer);
 *            the threads' start arguments are heap objects (kept)
 *   readlive main blocks in read(0, buf) with buf live in main after the call
 *            (main prints its first byte): the relocator must pin it (the
 *            kernel is filling it through read()'s argument), whatever the
 *            glibc model says for leak finding
 *   fread    main blocks in fread(buf, 1, 100, stdin) with buf dead after the
 *            call (a leak, like "read")
 *   fgets    main blocks in fgets(b, 64, stdin): b is dead in main after the
 *            call (main uses fgets' result), but fgets gives it back: held only
 *            by fgets' frames, which the model does not cover (kept)
 * On stdin's end every thread ends and the process exits 0.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "truth.h"

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
    long sum;
};

static int pipefd[2];

static void *wait_cond(void *arg) {
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->go)
        pthread_cond_wait(&w->cv, &w->mu);
    w->sum += 1;                    /* w is live after the wait */
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void *wait_read(void *arg) {
    long *n = arg;
    char *buf = malloc(200);
    TRUTH_LEAK(buf, "direct");
    ssize_t got = read(pipefd[0], buf, 200);   /* buf is dead after the call */
    *n = got;
    return NULL;
}

static int main_read(void) {
    long *kept = malloc(48);
    TRUTH_KEPT(kept);
    char *buf = malloc(100);
    TRUTH_LEAK(buf, "direct");
    memset(buf, 0, 100);
    puts("ready");
    fflush(stdout);
    ssize_t n = read(0, buf, 100);              /* buf is dead after the call */
    kept[0] = n;
    int rc = kept[0] < 0;
    free(kept);
    return rc;
}

static int main_threads(void) {
    struct waiter *w = calloc(1, sizeof *w);
    long *n = malloc(sizeof *n);
    TRUTH_KEPT(w);
    TRUTH_KEPT(n);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pipe(pipefd))
        return 2;
    pthread_t a, b;
    pthread_create(&a, NULL, wait_cond, w);
    pthread_create(&b, NULL, wait_read, n);
    w = NULL;               /* the waiter is held by its thread only */
    puts("ready");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0)
        ;
    if (write(pipefd[1], "x", 1) != 1)
        return 3;
    pthread_join(b, NULL);
    /* the waiter never wakes: exit ends it */
    return 0;
}

static int main_readlive(void) {
    char *buf = calloc(1, 128);
    TRUTH_KEPT(buf);
    fprintf(stderr, "buffer %p\n", (void *)buf);
    puts("ready");
    fflush(stdout);
    ssize_t n = read(0, buf, 127);
    printf("%zd %d\n", n, buf[0]);             /* buf is live after the call */
    free(buf);
    return 0;
}

static int main_fread(void) {
    char *buf = malloc(100);
    TRUTH_LEAK(buf, "direct");
    puts("ready");
    fflush(stdout);
    size_t n = fread(buf, 1, 100, stdin);      /* buf is dead after the call */
    return n > 100;
}

static int main_fgets(void) {
    char *b = malloc(64);
    TRUTH_KEPT(b);
    puts("ready");
    fflush(stdout);
    char *line = fgets(b, 64, stdin);           /* b dead after; line == b */
    if (line)
        line[0] = 0;
    free(line ? line : b);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "read";
    if (!strcmp(mode, "read"))
        return main_read();
    if (!strcmp(mode, "readlive"))
        return main_readlive();
    if (!strcmp(mode, "fread"))
        return main_fread();
    if (!strcmp(mode, "fgets"))
        return main_fgets();
    return main_threads();
}
