/* snap_heap: a heap of N MiB in many small objects, for snapshot tests and
 * the pause-time benchmark.
 *
 *   snap_heap MIB ROUNDS        build the heap, rewrite it ROUNDS times, print
 *                               a checksum (same output traced or not)
 *   snap_heap MIB serve         build the heap, print "ready PID", then obey
 *                               stdin: "w" rewrites the heap once and prints
 *                               the nanoseconds it took; "c" prints the
 *                               checksum; "q" quits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct obj {
    struct obj *next;
    uint64_t payload[31];           /* 256-byte objects */
};

static struct obj *head;
static size_t nobj;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void build(size_t mib) {
    nobj = mib * 1024 * 1024 / sizeof(struct obj);
    struct obj *prev = NULL;
    for (size_t i = 0; i < nobj; i++) {
        struct obj *o = malloc(sizeof *o);
        if (!o) { perror("malloc"); exit(1); }
        for (int j = 0; j < 31; j++) o->payload[j] = mix(i * 31 + j);
        o->next = prev;
        prev = o;
    }
    head = prev;
}

static void rewrite(uint64_t round) {
    for (struct obj *o = head; o; o = o->next)
        for (int j = 0; j < 31; j++) o->payload[j] = mix(o->payload[j] + round);
}

static uint64_t checksum(void) {
    uint64_t sum = 0;
    size_t n = 0;
    for (struct obj *o = head; o; o = o->next, n++)
        for (int j = 0; j < 31; j++) sum = sum * 31 + o->payload[j];
    return sum ^ n;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: snap_heap MIB ROUNDS|serve\n"); return 2; }
    build(strtoul(argv[1], NULL, 10));
    if (strcmp(argv[2], "serve") == 0) {
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        char line[64];
        uint64_t round = 0;
        while (fgets(line, sizeof line, stdin)) {
            if (line[0] == 'w') {
                uint64_t t0 = now_ns();
                rewrite(++round);
                printf("%llu\n", (unsigned long long)(now_ns() - t0));
            } else if (line[0] == 'c') {
                printf("%016llx\n", (unsigned long long)checksum());
            } else if (line[0] == 'q') {
                break;
            }
            fflush(stdout);
        }
        return 0;
    }
    unsigned long rounds = strtoul(argv[2], NULL, 10);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (unsigned long r = 1; r <= rounds; r++) rewrite(r);
    printf("checksum %016llx\n", (unsigned long long)checksum());
    return 0;
}
