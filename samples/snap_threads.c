/* snap_threads: T worker threads, each rewriting its own heap data for a
 * fixed number of rounds, plus threads that sit in blocking system calls
 * (nanosleep, a pipe read) so that snapshots catch threads inside syscalls.
 * Prints "ready PID" at start and one checksum per worker at the end: the
 * output is the same whether or not the process was snapshotted meanwhile.
 *
 *   snap_threads THREADS ROUNDS [KIB_PER_THREAD]
 *
 * ROUNDS 0: the workers run until stdin reaches end-of-file.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct node { struct node *next; uint64_t v[7]; };

struct worker {
    pthread_t th;
    int id;
    unsigned long rounds;
    size_t n;
    struct node *list;
    uint64_t sum;
};

static int pipefd[2];
static volatile int stop_workers;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void *work(void *arg) {
    struct worker *w = arg;
    for (size_t i = 0; i < w->n; i++) {
        struct node *x = malloc(sizeof *x);
        for (int j = 0; j < 7; j++) x->v[j] = mix(w->id * 1000003ULL + i * 7 + j);
        x->next = w->list;
        w->list = x;
    }
    for (unsigned long r = 1; w->rounds ? r <= w->rounds : !stop_workers; r++)
        for (struct node *x = w->list; x; x = x->next)
            for (int j = 0; j < 7; j++) x->v[j] = mix(x->v[j] ^ r);
    uint64_t s = 0;
    for (struct node *x = w->list; x; x = x->next)
        for (int j = 0; j < 7; j++) s = s * 31 + x->v[j];
    w->sum = s;
    return NULL;
}

static volatile int done;

static void *sleeper(void *arg) {
    (void)arg;
    unsigned long n = 0;
    while (!done) {
        struct timespec ts = {0, 2000000};      /* 2 ms */
        nanosleep(&ts, NULL);
        n++;
    }
    return (void *)n;
}

static void *reader(void *arg) {
    (void)arg;
    char c;
    ssize_t r = read(pipefd[0], &c, 1);         /* blocks until the end */
    return (void *)(intptr_t)(r == 1 ? c : -1);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: snap_threads THREADS ROUNDS [KIB]\n"); return 2; }
    int t = atoi(argv[1]);
    unsigned long rounds = strtoul(argv[2], NULL, 10);
    size_t kib = argc > 3 ? strtoul(argv[3], NULL, 10) : 256;
    if (t < 1 || t > 64 || pipe(pipefd) != 0) return 2;
    struct worker *ws = calloc(t, sizeof *ws);
    pthread_t sl, rd;
    pthread_create(&sl, NULL, sleeper, NULL);
    pthread_create(&rd, NULL, reader, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (int i = 0; i < t; i++) {
        ws[i].id = i;
        ws[i].rounds = rounds;
        ws[i].n = kib * 1024 / sizeof(struct node);
        pthread_create(&ws[i].th, NULL, work, &ws[i]);
    }
    if (rounds == 0) {
        char buf[256];
        while (fread(buf, 1, sizeof buf, stdin) > 0) {}
        stop_workers = 1;
    }
    for (int i = 0; i < t; i++) pthread_join(ws[i].th, NULL);
    done = 1;
    if (write(pipefd[1], "x", 1) != 1) return 3;
    void *rv;
    pthread_join(rd, &rv);
    pthread_join(sl, NULL);
    for (int i = 0; i < t; i++) printf("worker %d %016llx\n", i, (unsigned long long)ws[i].sum);
    printf("reader %c\n", (int)(intptr_t)rv);
    return 0;
}
