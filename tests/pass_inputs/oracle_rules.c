/* oracle_rules.c — one function per rule by which a live pointer may be left
 * out of a map point, for tests/test_map_oracle.py: the oracle must accept each
 * omission after checking its condition, and reject it once the condition is
 * broken (the test edits the IR). Built at -O2 with the pass. */
#include <stdlib.h>

struct node { long key; struct node *next; long pad[4]; };
void use(void *p);
void init(struct node *n);
long ga[64], gb[64];

/* VALUE: n is used after the call */
long value(struct node *n) { use(n->next); return n->key; }

/* DERIVED: &n->pad[1] (n + 24) and &n->pad[2] are n plus a constant */
long derived(struct node *n, int k) {
    long s = 0;
    for (int i = 0; i < k; i++) { use(n); s += n->pad[1] + n->pad[2]; }
    return s;
}

/* frame: the address of a local is no root (the slot is recorded instead) */
long frame(void) { struct node local; init(&local); use(&local); return local.key; }

/* static: t can only point into ga or gb, in the binary's static image */
long stat(int flag, int n) {
    long *t = flag ? ga : gb, s = 0;
    for (int i = 0; i < n; i++) { use(NULL); s += t[i]; }
    return s;
}

/* interior: &arr[i] with a variable i is reached through arr */
long interior(long *arr, int i) { long *p = &arr[i]; use(arr); use(arr); return *p; }

/* cursor: p walks the array a, which stays live */
long cursor(struct node *a, int n) {
    long s = 0;
    for (struct node *p = a; p < a + n; p++) { use(a); s += p->key; }
    return s;
}

/* tail: nothing of the caller is live after use(p) */
void tail(void *p) { use(p); }

/* static, through constant expressions: p is &fmt[0], &fmt[1] or &fmt[2]
 * (inbounds constant GEPs of an internal constant, SQLite's fmtinfo) */
struct info { char c; const char *name; };
static const struct info fmt[] = {{'d', "a"}, {'s', "b"}, {'x', "c"}, {'y', "d"}};
long stat_const(int k, int n) {
    const struct info *p = k == 1 ? &fmt[1] : k == 2 ? &fmt[2] : &fmt[0];
    long s = 0;
    for (int i = 0; i < n; i++) { use(NULL); s += p->c; }
    return s;
}
