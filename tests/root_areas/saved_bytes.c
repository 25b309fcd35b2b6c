/* Pointers saved as bytes in a char buffer on the stack while a call runs, the
 * pattern of SQLite's sqlite3NestedParse (`memcpy(saveBuf, PARSE_TAIL(p), …)`,
 * found by the map oracle: tests/real_programs/ORACLE.md).  The buffer's type
 * says "no pointers", yet during wait_here() it holds the only references to
 * three heap objects (the state was zeroed).  The maps must record the buffer
 * as a slot whose words are scanned conservatively: no leak, live (argument
 * "wait": wait_here blocks until stdin closes) and at exit (no argument). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "truth.h"

struct state { void *p[3]; long n; };

__attribute__((noinline)) static void wait_here(struct state *s, int wait) {
    if (wait) {
        char c;
        puts("ready");
        fflush(stdout);
        while (read(0, &c, 1) > 0) {}
    }
    s->n++;
}

__attribute__((noinline)) static void save_restore(struct state *s, int wait) {
    char buf[sizeof *s];
    memcpy(buf, s, sizeof *s);
    memset(s, 0, sizeof *s);
    wait_here(s, wait);
    memcpy(s, buf, sizeof *s);
}

int main(int argc, char **argv) {
    struct state *s = calloc(1, sizeof *s);
    for (int i = 0; i < 3; i++) {
        s->p[i] = malloc(48 + 16 * i);
        memset(s->p[i], 0x5a, 48 + 16 * i);
        TRUTH_KEPT(s->p[i]);
    }
    save_restore(s, argc > 1 && strcmp(argv[1], "wait") == 0);
    for (int i = 0; i < 3; i++)
        free(s->p[i]);
    free(s);
    return 0;
}
