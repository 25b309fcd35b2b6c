/* snap_signals: counts SIGUSR1 deliveries; after each one, prints the count.
 * A snapshot taken while a signal is on its way must not lose or duplicate it:
 * the tracer hands back any signal it saw on detach.  Prints "ready PID" first.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t count;

static void on_usr1(int sig) { (void)sig; count++; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    /* SIGUSR1 is blocked except inside sigsuspend: no delivery between the
     * check and the wait can be missed */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    int seen = 0;
    for (;;) {
        while (seen < count) {
            seen++;
            printf("%d\n", seen);
            fflush(stdout);
        }
        if (seen >= 1000) break;
        sigsuspend(&old);
    }
    return 0;
}
