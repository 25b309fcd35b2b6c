/* pic_main.c — a PIE executable linked against libpic.so (tests/test_pic.py).
 * With an argument it waits inside the library for a byte on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include "truth.h"

struct item { struct item *next; long v; char *name; };
extern struct item *pic_kept_list;
long pic_leak_list(int n);
void pic_keep(int n);
long pic_hold_and_wait(int fd);

__attribute__((noinline)) static void leak_own(void) {
    char *p = malloc(40);
    TRUTH_LEAK(p, "direct");
    p[0] = 1;
}

int main(int argc, char **argv) {
    long s = pic_leak_list(3);
    pic_keep(2);
    leak_own();
    s += pic_kept_list->v;
    if (argc > 1)
        s += pic_hold_and_wait(0);
    printf("%ld\n", s);
    return 0;
}
