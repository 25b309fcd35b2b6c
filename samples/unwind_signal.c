/* unwind_signal: a signal handler that blocks inside itself.
 *
 * main recurses to depth N and raises SIGUSR1 there; the handler recurses a
 * little on its own and blocks forever in read(2) on a pipe.  An unwinder
 * must go handler -> __restore_rt -> the interrupted frames -> main, and
 * recover the interrupted frames' registers from the ucontext_t.
 * Usage: unwind_signal DEPTH [altstack]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fds[2];
long recurse(int depth, long acc);
static long handler_deep(int n, long acc);
/* calls go through volatile pointers so the recursions are not turned into loops */
static long (*volatile again)(int, long) = recurse;
static long (*volatile hagain)(int, long) = handler_deep;

__attribute__((noinline)) static long handler_deep(int n, long acc) {
    if (n == 0) {
        char c;
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        for (;;)
            if (read(fds[0], &c, 1) <= 0)
                pause();
    }
    long a2 = acc * 7 + n;
    return hagain(n - 1, a2) + a2;
}

static void on_usr1(int sig) {
    (void)sig;
    hagain(3, sig);
}

__attribute__((noinline)) long recurse(int depth, long acc) {
    long a2 = acc * 13 + depth;
    if (depth == 0) {
        raise(SIGUSR1);
        return a2;
    }
    return again(depth - 1, a2) + a2;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 5;
    if (pipe(fds) != 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    if (argc > 2 && strcmp(argv[2], "altstack") == 0) {
        stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
        sigaltstack(&ss, NULL);
        sa.sa_flags = SA_ONSTACK;
    }
    sigaction(SIGUSR1, &sa, NULL);
    printf("%ld\n", recurse(depth, 1));
    return 0;
}
