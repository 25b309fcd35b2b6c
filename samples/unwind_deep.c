/* unwind_deep: recursion to a fixed depth, then block forever in a syscall.
 *
 * Each level keeps values in callee-saved registers across the recursive
 * call (a checksum of the depth and a pointer), so an unwinder must recover
 * them frame by frame.  Prints "ready <pid>" just before blocking.
 * Usage: unwind_deep DEPTH [read|nanosleep|pause|futex]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

static const char *mode = "read";
static int fds[2];

__attribute__((noinline)) static void block_forever(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) {
        if (strcmp(mode, "nanosleep") == 0) {
            struct timespec ts = {1000, 0};
            nanosleep(&ts, NULL);
        } else if (strcmp(mode, "pause") == 0) {
            pause();
        } else if (strcmp(mode, "futex") == 0) {
            static int word;
            syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        } else {
            char c;
            if (read(fds[0], &c, 1) <= 0)
                pause();
        }
    }
}

/* one node per level, on the stack, linked to the caller's node */
struct node {
    struct node *parent;
    long depth;
};

__attribute__((noinline)) long recurse(int depth, long acc, struct node *parent) {
    struct node local = {parent, depth};
    if (depth == 0) {
        block_forever();
        return acc;
    }
    /* acc2 and parent stay live across the call: callee-saved registers at -O2;
     * the caller's node is reachable only through parent (a map "value") and
     * this level's node is a stack slot holding a pointer (a map "slot") */
    long acc2 = acc * 31 + depth;
    long r = recurse(depth - 1, acc2, &local);
    return r + acc2 + local.depth + (parent ? parent->depth : 0);
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 10;
    if (argc > 2)
        mode = argv[2];
    if (pipe(fds) != 0)
        return 1;
    long r = recurse(depth, 1, NULL);
    printf("%ld\n", r);
    return 0;
}
