/* Leaks in several threads and in thread-locals.
 *  - each of 4 worker threads leaks one object (allocated and dropped in the thread): direct
 *  - each worker keeps one object in a thread-local; the worker exits, so its TLS is gone: direct
 *  - the main thread keeps one object in its own thread-local (alive at exit): kept */
#include <pthread.h>
#include <stdlib.h>
#include "truth.h"
_Thread_local void *tls_obj;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void *worker(void *arg) {
    long id = (long)arg;
    char *dropped = malloc(32 + id);
    dropped[0] = 'x';
    tls_obj = malloc(48 + id);
    pthread_mutex_lock(&mu);
    TRUTH_LEAK(dropped, "direct");
    TRUTH_LEAK(tls_obj, "direct");
    pthread_mutex_unlock(&mu);
    return NULL;
}
int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    tls_obj = malloc(200);
    TRUTH_KEPT(tls_obj);
    puts("done");
    return 0;
}
