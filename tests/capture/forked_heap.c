/* forked_heap.c — a process whose heap is shared copy-on-write with a child
 * of its own (as Redis's while it saves in the background), for
 * tests/test_snapshot.py::test_stop_copy_leaves_a_forked_targets_pages_shared.
 *
 * Usage: forked_heap MIB   builds MIB MiB of 64-byte objects, forks a child
 * that only sleeps, prints "ready PID CHILD", then waits for a line on stdin
 * and exits (killing the child).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 16;
    void **prev = NULL;
    for (long i = 0; i < mib * (1 << 20) / 80; i++) {
        void **p = malloc(64);
        if (!p)
            return 1;
        memset(p, 0x5a, 64);
        p[0] = prev;
        prev = p;
    }
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        for (;;)
            pause();
    }
    printf("ready %d %d\n", (int)getpid(), (int)child);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        line[0] = 0;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return prev ? 0 : 1;
}
