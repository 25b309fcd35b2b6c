/* Copies of argv and environ kept only in the original arrays on the initial
 * stack, as setproctitle does (Redis's spt_init, nginx's ngx_init_setproctitle):
 * every copy is reachable through the argv/envp area above main's caller
 * frames, so none is a leak (at exit, or live with the argument "wait"). */
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
    for (char **e = environ; *e; e++) {
        *e = strdup(*e);
        TRUTH_KEPT(*e);
    }
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        char c;
        puts("ready");
        fflush(stdout);
        while (read(0, &c, 1) > 0) {}     /* until the test closes stdin */
    }
    return 0;
}
