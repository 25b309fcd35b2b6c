/* A dead pointer left in a callee-saved register while the program blocks in
 * libc: main puts the only copy of a leaked list's head in r14 (an asm that
 * clobbers r14, so main saved the caller's r14 and the value is dead to it),
 * then calls read() in libc, which never touches r14.  The top frame is libc's,
 * uninstrumented, and used to be scanned with all its registers: r14 hid the
 * leak (the 20 M-object benchmark lost 3 of 3 000 leaked objects that way in
 * libc's pause()).  The libc frame's CFI leaves r14 alone, so r14 holds main's
 * value, and main's map record says it is dead: the list is a leak. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "truth.h"

struct node { struct node *next; long v[4]; };

__attribute__((noinline)) static struct node *make(int n) {
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *x = malloc(sizeof *x);
        memset(x, 0, sizeof *x);
        x->next = head;
        head = x;
    }
    return head;
}

/* wipe the stack below main's frame: printing the truth left copies of the
 * pointers in dead stack words that read()'s scanned frame would cover */
__attribute__((noinline)) static void scrub(void) {
    volatile char buf[16384];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = 0;
}

int main(void) {
    struct node *head = make(3);
    for (struct node *x = head; x; x = x->next)
        TRUTH_LEAK(x, x == head ? "direct" : "indirect");
    puts("ready");
    fflush(stdout);
    scrub();
    __asm__ volatile("mov %0, %%r14" : : "r"(head) : "r14");
    head = NULL;
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
