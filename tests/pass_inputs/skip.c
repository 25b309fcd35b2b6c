/* Functions the pass must skip with a warning (with_asm), and a setjmp caller it
 * instruments (all calls but setjmp itself); the file must still compile. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

static jmp_buf env;

__attribute__((noinline)) int with_setjmp(void) {
    char *p = malloc(8);
    if (setjmp(env)) {
        free(p);
        return 1;
    }
    puts("set");
    longjmp(env, 1);
}

__attribute__((noinline)) int with_asm(int x) {
    char *p = malloc(8);
    __asm__ volatile("" : "+m"(*p));      /* a memory operand: skipped */
    __asm__ volatile("" : : "r"(p) : "memory");  /* a barrier alone would not be */
    printf("%d\n", x);
    free(p);
    return x;
}

__attribute__((noinline)) int plain(int x) {
    char *p = malloc(8);
    __asm__ volatile("" : : "r"(p) : "memory");  /* a compiler barrier: no reason to skip */
    printf("%d\n", x);
    free(p);
    return x + 1;
}

int main(void) {
    int r = with_setjmp();
    r += with_asm(2);
    r += plain(3);
    printf("r=%d\n", r);
    return 0;
}
