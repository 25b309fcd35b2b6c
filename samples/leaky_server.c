/* leaky_server.c — a long-running process with known leaks, for `mappedtrace leaks PID`.
 *
 * Builds a request queue (reachable from a global), leaks a dropped list of
 * `struct session` objects each owning a buffer, prints the ground truth on
 * stderr ("truth leak ADDR SIZE direct|indirect"), prints "ready" on stdout and
 * then serves: it keeps computing a checksum over its live queue until stdin
 * closes, so a test can check the tracer left it running exactly as before.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct request { struct request *next; int id; char path[20]; };
struct session { struct session *next; char *buffer; long bytes; };

struct request *queue;

__attribute__((noinline)) static void open_sessions(int n) {
    struct session *head = NULL;
    for (int i = 0; i < n; i++) {
        struct session *s = malloc(sizeof *s);
        s->buffer = malloc(100 + i);
        snprintf(s->buffer, 100, "session %d buffer", i);
        s->bytes = i;
        s->next = head;
        head = s;
    }
    for (struct session *s = head; s; s = s->next) {
        fprintf(stderr, "truth leak %p %zu %s\n", (void *)s, malloc_usable_size(s), s == head ? "direct" : "indirect");
        fprintf(stderr, "truth leak %p %zu indirect\n", (void *)s->buffer, malloc_usable_size(s->buffer));
    }
    /* head is dropped here: the sessions leak */
}

int main(void) {
    for (int i = 0; i < 8; i++) {
        struct request *r = calloc(1, sizeof *r);
        r->id = i;
        snprintf(r->path, sizeof r->path, "/item/%d", i);
        r->next = queue;
        queue = r;
    }
    open_sessions(5);
    fflush(stderr);
    printf("ready\n");
    fflush(stdout);
    char c;
    unsigned long sum = 0, rounds = 0;
    for (;;) {
        for (struct request *r = queue; r; r = r->next)
            sum = sum * 31 + r->id + (unsigned char)r->path[6];
        rounds++;
        if (rounds % 4096 == 0) {
            ssize_t n = read(0, &c, 1);
            if (n <= 0)
                break;
        }
    }
    printf("checksum %lu rounds %lu\n", sum % 1000003, rounds);
    return 0;
}
