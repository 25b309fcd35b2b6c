/* Slot (static alloca) liveness at -O0, where every local lives in memory. */
#include <stdlib.h>
void g(void);
void use(void *p);

void stale(void) {
    char *p = malloc(16);
    use(p);
    g();            /* p's slot is never read again: not recorded here */
}

void live_slot(void) {
    char *p = malloc(16);
    g();            /* p is read after the call: its slot is recorded */
    use(p);
}

void escaped(void) {
    char *p = malloc(16);
    use(&p);        /* the callee may keep &p */
    g();            /* recorded: anything may still read it */
}

void overwritten(void) {
    char *p = malloc(16);
    use(p);
    g();            /* p is stored before its next read: not recorded */
    p = malloc(32);
    use(p);
}

struct pair { struct pair *next; long v; };

long typed(void) {
    struct pair *q = malloc(sizeof *q);
    q->next = 0;
    q->v = 7;
    g();            /* recorded with the type of q (struct pair*) */
    return q->v;
}
