/* (e) A typed pointer to the FIRST MEMBER of a bigger struct.  `pools` points
 * at ctx->pools[0], a struct of pointers only, so the chunk could be read as an
 * array of it; but the words after the array are other members (the head of a
 * list of `struct src`), and a guessed element must not type what it points
 * to: read as `struct pool`, head.next would type the `struct src` it points to
 * as `struct insn`, whose +32 is not a pointer, and src->fullpath (at +32)
 * would be skipped: a false leak.  Reduced from gawk 5.2.1 (AWK_CONTEXT:
 * INSTRUCTION_POOL pools; SRCFILE srcfiles; found by benchmarks/soundness). */
#include <stdlib.h>
#include <string.h>
#include "truth.h"

struct insn { struct insn *next; void *a; void *b; void *c; short line; short size; int op; };
struct pool { struct insn *free_space; struct insn *free_list; };
struct src { struct src *next, *prev; int type; char *name; char *fullpath; };
struct ctx { struct pool pools[2]; struct src head; };

struct pool *volatile pools;        /* the only root of the context */

__attribute__((noinline)) static void load(struct ctx *c, const char *path) {
    struct src *s = calloc(1, sizeof *s);
    s->name = strdup("script");
    s->fullpath = strdup(path);
    s->next = &c->head;
    s->prev = &c->head;
    c->head.next = c->head.prev = s;
    TRUTH_KEPT(s);
    TRUTH_KEPT(s->name);
    TRUTH_KEPT(s->fullpath);
}

int main(void) {
    struct ctx *c = calloc(1, sizeof *c);
    c->pools[0].free_space = calloc(4, sizeof(struct insn));
    TRUTH_KEPT(c);
    TRUTH_KEPT(c->pools[0].free_space);
    load(c, "/usr/share/awk/a-long-path-to-the-script.awk");
    pools = &c->pools[0];
    char *lost = malloc(24);
    TRUTH_LEAK(lost, "direct");
    lost = NULL;
    return 0;
}
