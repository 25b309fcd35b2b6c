/* heap_busy: threads that malloc and free without pause, for stopping the heap
 * walker's target at random points (inside malloc too: tests/test_heap_glibc.py).
 *
 * Usage: heap_busy [THREADS]   prints "ready" once every thread runs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 4096

static volatile int running;

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg * 2654435761u + 1;
    void **slot = calloc(SLOTS, sizeof *slot);
    __atomic_add_fetch(&running, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % SLOTS;
        free(slot[i]);
        size_t n = (seed >> 20) % 4 == 0 ? (seed >> 4) % 5000 : (seed >> 4) % 200;
        if ((seed >> 24) % 97 == 0)
            n = 150000;                         /* now and then an mmapped one */
        slot[i] = malloc(n + 1);
        memset(slot[i], 1, 8);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    pthread_t t;
    for (int i = 0; i < n; i++)
        pthread_create(&t, NULL, churn, (void *)(size_t)(i + 1));
    while (__atomic_load_n(&running, __ATOMIC_SEQ_CST) < n)
        usleep(1000);
    printf("ready\n");
    fflush(stdout);
    churn((void *)(size_t)0);
    return 0;
}
