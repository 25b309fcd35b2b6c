/* bench_heap.c — a big heap for the marking benchmark (benchmarks/trace/bench_mark.py).
 *
 * Usage: bench_heap N SIZE   allocates N objects of SIZE bytes (SIZE >= 16):
 *   struct obj { struct obj *next; struct obj *kid; long payload[]; }
 * `table` (a global) points to an array of N pointers; table[i] holds object i
 * except for every 20th, which is dropped (leaked: nothing points to it, it
 * points into the live heap); kid points to a random kept object, next to
 * the next kept object.  Prints "table ADDR", "obj_size BYTES", "ready", then blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct obj { struct obj *next; struct obj *kid; long payload[]; };
struct obj **table;
long table_len;

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long size = argc > 2 ? atol(argv[2]) : 248;
    if (n < 1 || size < 16)
        return 2;
    struct obj **all = malloc(n * sizeof *all);
    for (long i = 0; i < n; i++) {
        all[i] = malloc(size);
        for (long k = 0; k < (size - 16) / 8; k++)
            all[i]->payload[k] = i + k;        /* small integers: not pointer-like */
    }
    unsigned long x = 88172645463325252UL;
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        long j = i + 1 < n && (i + 1) % 20 == 0 ? i + 2 : i + 1;   /* skip the dropped */
        all[i]->next = j < n ? all[j] : NULL;
        long k = x % n;
        all[i]->kid = all[k % 20 == 0 ? (k + 1) % n : k];
    }
    for (long i = 0; i < n; i += 20)
        all[i] = NULL;
    table = all;
    table_len = n;
    printf("table %#lx\nobj_size %ld\nready\n", (unsigned long)&table, size);
    fflush(stdout);
    for (;;)
        pause();
}
