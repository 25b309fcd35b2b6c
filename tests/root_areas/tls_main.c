/* Linked against libbig.so.1 (a large static TLS block) and libfoo.so.1, both
 * installed as versioned files (libfoo.so.1 -> libfoo.so.1.0.4), with an rpath.
 * Objects kept only in the libraries' thread-locals are reachable; blocks
 * malloc'ed and freed sit in glibc's tcache (found through libc's TLS block):
 * the right answer is no leak at all (the worker thread lives until the exit).  With the argument "wait" it blocks
 * until stdin closes (a live check). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../leak_corpus/truth.h"
void *big_keep(size_t n);
void *foo_keep(size_t n);
static void churn(void) {
    void *p[64];
    for (int i = 0; i < 64; i++) p[i] = malloc(16 + 8 * (i % 8));
    for (int i = 0; i < 64; i++) free(p[i]);
}
static void *worker(void *arg) {
    TRUTH_KEPT(foo_keep(72));
    churn();
    pthread_barrier_wait(arg);
    for (;;) pause();            /* alive (with its TLS) until the process exits */
}
int main(int argc, char **argv) {
    static pthread_barrier_t b;
    pthread_t t;
    pthread_barrier_init(&b, NULL, 2);
    pthread_create(&t, NULL, worker, &b);
    TRUTH_KEPT(big_keep(40));
    void *mine = foo_keep(56);
    TRUTH_KEPT(mine);
    fprintf(stderr, "main foo_obj %p\n", mine);   /* what libfoo's thread-local holds in main */
    churn();
    pthread_barrier_wait(&b);
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        char c;
        puts("ready");
        fflush(stdout);
        while (read(0, &c, 1) > 0) {}
    }
    return 0;
}
