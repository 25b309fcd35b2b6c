/* A program under a seccomp filter (one that allows everything; the relocator
 * cannot tell it from one that kills on mmap or mprotect).  The relocator must
 * refuse to inject allocator calls and leave it running untouched.
 * Prints "ready", waits for stdin to close, then checks its list and prints
 * "ok SUM". */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>

struct node { struct node *next; long v; };
struct node *g_head;

int main(void) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        return 3;
    for (long i = 0; i < 1000; i++) {
        struct node *n = malloc(sizeof *n);
        n->next = g_head;
        n->v = i;
        g_head = n;
    }
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF)
        ;
    long sum = 0;
    for (struct node *n = g_head; n; n = n->next)
        sum += n->v;
    printf("ok %ld\n", sum);
    return 0;
}
