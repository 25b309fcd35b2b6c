/* A computed-goto interpreter (Lua's and CPython's dispatch: `goto *labels[op]`,
 * an indirectbr in the IR) with heap objects live across the calls of its
 * dispatch loop: the operand stack `sp`, the constant table `consts` and the
 * current frame object `fr`.  OP_WAIT calls wait_here(), which prints "ready" and
 * waits on stdin (a test takes a snapshot there, with run() on the stack);
 * OP_DROP leaks the object on top of the stack.  "truth kept/leak" lines on
 * stderr (tests/leak_corpus/truth.h); the stack is listed as kept just before
 * the wait.  Exits 0 when the result is right. */
#include <stdlib.h>
#include <string.h>
#include "../leak_corpus/truth.h"

struct val { struct val *below; long n; };
struct frame { struct val **consts; long nconsts; char tag[8]; };

enum { OP_PUSH, OP_ADD, OP_DROP, OP_WAIT, OP_END };

__attribute__((noinline)) static struct val *push(struct val *below, long n) {
    struct val *v = malloc(sizeof *v);
    v->below = below;
    v->n = n;
    return v;
}

__attribute__((noinline)) static void wait_here(int wait) {
    if (!wait)
        return;
    puts("ready");
    fflush(stdout);
    getchar();
}

__attribute__((noinline)) static long run(const unsigned char *code, struct frame *fr, int wait) {
    static void *const labels[] = {&&op_push, &&op_add, &&op_drop, &&op_wait, &&op_end};
    struct val *sp = NULL;
    long k = 0;
#define DISPATCH goto *labels[*code++]
    DISPATCH;
op_push:
    sp = push(sp, fr->consts[k++ % fr->nconsts]->n);
    DISPATCH;
op_add:
    if (sp && sp->below) {
        struct val *a = sp, *b = sp->below;
        sp = push(b->below, a->n + b->n);
        free(a);
        free(b);
    }
    DISPATCH;
op_drop:
    if (sp) {
        struct val *top = sp;
        sp = sp->below;
        TRUTH_LEAK(top, "direct");
    }
    DISPATCH;
op_wait:
    for (struct val *v = sp; v; v = v->below)
        TRUTH_KEPT(v);
    wait_here(wait);
    DISPATCH;
op_end:;
    long r = sp ? sp->n : 0;
    while (sp) {
        struct val *v = sp;
        sp = sp->below;
        free(v);
    }
    return r;
}

int main(int argc, char **argv) {
    (void)argv;
    struct frame *fr = malloc(sizeof *fr);
    fr->nconsts = 3;
    fr->consts = malloc(fr->nconsts * sizeof *fr->consts);
    for (long i = 0; i < fr->nconsts; i++) {
        fr->consts[i] = push(NULL, 10 * (i + 1));
        TRUTH_KEPT(fr->consts[i]);
    }
    TRUTH_KEPT(fr);
    TRUTH_KEPT(fr->consts);
    const unsigned char code[] = {OP_PUSH, OP_PUSH, OP_ADD, OP_PUSH, OP_PUSH, OP_DROP,
                                  OP_WAIT, OP_PUSH, OP_ADD, OP_END};
    long r = run(code, fr, argc < 2);
    printf("r=%ld\n", r);
    for (long i = 0; i < fr->nconsts; i++)
        free(fr->consts[i]);
    free(fr->consts);
    free(fr);
    return r == 50 ? 0 : 1;
}
