/* Type-table cases: every global below holds pointers and has a known layout. */
#include <stdlib.h>

struct node { long v; struct node *next; };
typedef struct node node_t;

struct pair { void *a, *b; };

union either { struct node *n; long bits; };

struct flex { long len; struct node *items[]; };

struct mixed {
    char *name;                 /* 0: untyped (char*) */
    void (*fn)(int);            /* 8: code pointer */
    union either u;             /* 16: conservative */
    struct pair pairs[1000];    /* 24: two runs of 1000, stride 16 */
    const node_t *list;         /* 16024: typed through typedef and const */
    struct { int x; struct node *p; } anon;  /* 16032: anonymous struct */
    int scalars[4];
};

struct mixed g_mixed;
struct flex *g_flex;
union either g_either;
struct node *g_nodes[8];
long g_no_pointers[16];          /* not in the global table */
const struct pair g_const = {0, 0};
_Thread_local struct pair t_pair;

static void hello(int x) { (void)x; }

int main(int argc, char **argv) {
    g_mixed.fn = hello;
    g_mixed.name = argv[0];
    g_flex = malloc(sizeof *g_flex + 2 * sizeof(struct node *));
    g_nodes[argc] = malloc(sizeof(struct node));
    t_pair.a = g_flex;
    g_no_pointers[0] = (long)g_const.a;
    return 0;
}
