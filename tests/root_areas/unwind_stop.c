/* A stack the unwinder cannot finish: main pushes the only copy of a heap
 * pointer, then a return address of 0, clears the callee-saved registers and
 * jumps to park(), which blocks until stdin closes and then exits.  The walk
 * stops at park() ("return address is 0"); park() is described by the maps,
 * main's frame above it by nothing: it must be scanned (at exit and live). */
#include <stdlib.h>
#include <unistd.h>
#include "../leak_corpus/truth.h"
void park(void);
__attribute__((noinline)) void park(void) {
    char c;
    puts("ready");
    fflush(stdout);
    while (read(0, &c, 1) > 0) {}
    exit(0);
}
static void **kept;
int main(void) {
    kept = malloc(64);
    kept[0] = malloc(32);        /* reachable through the first */
    TRUTH_KEPT(kept);
    TRUTH_KEPT(kept[0]);
    __asm__ volatile(
        "mov %0, %%rax\n\t"
        "movq $0, %0\n\t"             /* the global no longer holds it */
        "and $-16, %%rsp\n\t"
        "push %%rax\n\t"
        "push %%rax\n\t"
        "xor %%eax, %%eax\n\t"
        "xor %%ebx, %%ebx\n\t"
        "xor %%ebp, %%ebp\n\t"
        "xor %%r12d, %%r12d\n\t"
        "xor %%r13d, %%r13d\n\t"
        "xor %%r14d, %%r14d\n\t"
        "xor %%r15d, %%r15d\n\t"
        "push $0\n\t"                 /* park's return address */
        "jmp park"
        : "+m"(kept) : : "rax", "rbx", "r12", "r13", "r14", "r15", "memory");
    __builtin_unreachable();
}
