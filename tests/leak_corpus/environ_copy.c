/* Copies of argv and environ kept only in the original arrays on the initial
 * stack, as setproctitle implementations do: Redis's spt_init strdup()s each
 * argv[i], nginx's ngx_init_setproctitle copies every environ string into one
 * block and points environ[i] into it.  Everything stays reachable through the
 * argv/envp area above main's caller frames: no leak, at exit or live (with
 * the argument "wait" the program blocks until stdin closes). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "truth.h"
extern char **environ;
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        argv[i] = strdup(argv[i]);
        TRUTH_KEPT(argv[i]);
    }
    size_t size = 0;
    for (char **e = environ; *e; e++)
        size += strlen(*e) + 1;
    char *block = malloc(size + 1), *p = block;
    TRUTH_KEPT(block);
    for (char **e = environ; *e; e++) {
        size_t n = strlen(*e) + 1;
        memcpy(p, *e, n);
        *e = p;
        p += n;
    }
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        char c;
        puts("ready");
        fflush(stdout);
        while (read(0, &c, 1) > 0) {}     /* until the test closes stdin */
    }
    return 0;
}
