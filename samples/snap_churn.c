/* snap_churn: threads that come and go.  ITERS times, start T short-lived
 * threads that each sum a small private array, join them, and add up their
 * results.  Snapshots taken meanwhile meet threads being created and exiting.
 *
 *   snap_churn ITERS T        prints "ready PID", then "total N"
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct job { unsigned long seed; uint64_t out; };

static void *run(void *arg) {
    struct job *j = arg;
    uint64_t *a = malloc(4096 * sizeof *a), s = 0;
    for (int i = 0; i < 4096; i++) a[i] = (j->seed * 6364136223846793005ULL + i) >> 7;
    for (int r = 0; r < 16; r++)
        for (int i = 0; i < 4096; i++) s += a[i] ^ (uint64_t)r;
    free(a);
    j->out = s;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    unsigned long iters = strtoul(argv[1], NULL, 10);
    int t = atoi(argv[2]);
    if (t < 1 || t > 32) return 2;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    pthread_t th[32];
    struct job jobs[32];
    uint64_t total = 0;
    for (unsigned long it = 0; it < iters; it++) {
        for (int i = 0; i < t; i++) {
            jobs[i].seed = it * 32 + i;
            if (pthread_create(&th[i], NULL, run, &jobs[i]) != 0) return 3;
        }
        for (int i = 0; i < t; i++) {
            pthread_join(th[i], NULL);
            total += jobs[i].out;
        }
    }
    printf("total %016llx\n", (unsigned long long)total);
    return 0;
}
