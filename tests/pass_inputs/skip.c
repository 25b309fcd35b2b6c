/* Functions the pass must skip with a warning (with_asm, setjmp_in_loop), and a
 * setjmp caller it instruments (all calls but setjmp itself); the file must
 * still compile and run. */
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

__attribute__((noinline)) void step(int i) {
    if (i > 1000)
        longjmp(env, 1);
}

__attribute__((noinline)) char *make_buf(int i) {
    char *p = malloc(8);
    p[0] = (char)i;
    return p;
}

/* `p` is live after setjmp (its error path frees it), but the later call
 * step(i) is reached on later iterations without passing p's definition: the
 * map cannot name p there, so the pass skips the function (and says why). */
__attribute__((noinline)) int setjmp_in_loop(const char *flags, int n) {
    for (int i = 0; i < n; i++) {
        if (flags[i]) {
            char *p = make_buf(i);
            if (setjmp(env)) {
                free(p);
                return 1;
            }
        }
        step(i);
    }
    return 0;
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
    r += setjmp_in_loop("\1\0\0", 3);
    printf("r=%d\n", r);
    return 0;
}
