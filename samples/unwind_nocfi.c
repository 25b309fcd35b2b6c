/* unwind_nocfi: functions compiled WITHOUT unwind tables (and without -g),
 * with frame pointers, called from main (which has CFI).  An unwinder must
 * fall back to the rbp chain for them.  Build this file with
 *   -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-omit-frame-pointer
 * Usage: unwind_nocfi DEPTH
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int fds[2];
long nocfi_recurse(int depth, long acc);
/* called through a volatile pointer so the recursion is not turned into a loop */
static long (*volatile again)(int, long) = nocfi_recurse;

__attribute__((noinline)) long nocfi_recurse(int depth, long acc) {
    if (depth == 0) {
        char c;
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        for (;;)
            if (read(fds[0], &c, 1) <= 0)
                pause();
    }
    long a2 = acc * 5 + depth;
    return again(depth - 1, a2) + a2;
}

int main(int argc, char **argv) {
    if (pipe(fds) != 0)
        return 1;
    printf("%ld\n", nocfi_recurse(argc > 1 ? atoi(argv[1]) : 4, 1));
    return 0;
}
