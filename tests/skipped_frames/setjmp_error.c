/* setjmp/longjmp error recovery with heap pointers in locals (Lua's
 * luaD_rawrunprotected, Redis's Lua scripts).  guarded() keeps `saved` for its
 * error path only: after setjmp returns the second time.  The CFG says
 * `saved` is dead at the call of work() (the normal path never reads it), but
 * work() longjmps back, and the error path frees it: the maps must record it
 * at that call.  `pending` is a volatile local written after setjmp (C keeps
 * such locals across longjmp); `ctx.buf` lives in a stack struct whose address
 * work() receives.  work() waits on stdin (so a test can take a snapshot with
 * every guarded frame on the stack) and longjmps; each error path frees its
 * objects and rethrows to the enclosing guard.  main leaks one object.
 * Prints "ready" when waiting; "truth kept/leak" lines on stderr (truth.h). */
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include "../leak_corpus/truth.h"

struct obj { struct obj *next; long v; char name[16]; };
struct ctx { jmp_buf env; struct obj *buf; int depth; long carry; };

static struct obj *mk(long v) {
    struct obj *o = malloc(sizeof *o);
    o->next = NULL;
    o->v = v;
    strcpy(o->name, "obj");
    return o;
}

__attribute__((noinline)) static void work(struct ctx *c, int wait) {
    if (wait) {
        puts("ready");
        fflush(stdout);
        getchar();
    }
    if (c->depth >= 0)
        longjmp(c->env, 1);
}

__attribute__((noinline)) static long guarded(int depth, struct ctx *parent, int wait) {
    struct obj *saved = mk(depth);
    saved->next = mk(depth + 100);
    TRUTH_KEPT(saved);
    TRUTH_KEPT(saved->next);
    struct ctx c;
    c.depth = depth;
    c.carry = 0;
    c.buf = mk(depth + 200);
    TRUTH_KEPT(c.buf);
    struct obj *volatile pending = NULL;
    if (setjmp(c.env)) {
        /* the error path: everything read here was kept across longjmp */
        long n = saved->v + saved->next->v + c.buf->v + (pending ? pending->v : 0) + c.carry;
        free(saved->next);
        free(saved);
        free(c.buf);
        free(pending);
        if (parent) {                      /* rethrow to the enclosing guard */
            parent->carry += n;
            longjmp(parent->env, 1);
        }
        return n;
    }
    pending = mk(depth + 300);
    TRUTH_KEPT(pending);
    if (depth > 0)
        guarded(depth - 1, &c, wait);      /* nested guards, each with its own jmp_buf */
    else
        work(&c, wait);
    return -1;                             /* not reached: both longjmp */
}

int main(int argc, char **argv) {
    (void)argv;
    struct obj *lost = mk(-1);         /* leaked before the guards, so that no stale copy */
    TRUTH_LEAK(lost, "direct");        /* is left where libc's frames will be scanned */
    lost = NULL;
    long n = guarded(2, NULL, argc < 2);
    printf("n=%ld\n", n);
    return n == 1812 ? 0 : 1;
}
