/* The maps must say where the pointers are: hold() prints the addresses of
 * the objects it keeps across the call to pause_here(); a debugger stopped in
 * pause_here() reads the caller's record and must find them there. */
#include <stdio.h>
#include <stdlib.h>

struct node { struct node *next; long v; };

__attribute__((noinline)) void pause_here(long i) {
    static volatile long sink;
    sink += i;
}

__attribute__((noinline)) long hold(long n) {
    struct node *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
    a->v = n; a->next = b;
    b->v = n + 1; b->next = NULL;
    c->v = n + 2; c->next = a;
    printf("a=%p b=%p c=%p\n", (void *)a, (void *)b, (void *)c);
    fflush(stdout);
    pause_here(n);
    long r = a->v + b->v + c->v;
    free(a); free(b); free(c);
    return r;
}

int main(int argc, char **argv) {
    (void)argv;
    printf("%ld\n", hold(argc));
    return 0;
}
