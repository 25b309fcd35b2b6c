/* mark_structs.c — heap structures with a known answer, for the marker tests.
 *
 * Builds, in the heap: kept structures reachable from the global `g` (a list,
 * a tree with parent pointers, a buffer held only by an interior pointer, an
 * array of pointers, a flexible-array struct, a union holding a pointer, an
 * array of structs, an untyped (void*) block, a chunk typed two ways, a node
 * whose pointer dangles into a freed chunk), and leaked ones (a dropped list,
 * a cycle, a tree with parent pointers, a string, a node only held by a
 * `long` that precise marking with hand-written types does not treat as a
 * pointer (the pass, seeing the ptrtoint stored there, marks it STORED), a
 * node pointing into a kept list).
 *
 * Prints the ground truth on stdout, then blocks until killed:
 *   size TYPE BYTES | off TYPE FIELD BYTES | global g ADDR BYTES
 *   obj NAME ADDR USABLE CLASS   (every malloc'ed object; CLASS kept, leaked,
 *   stale (leaked unless scanned conservatively) or freed) | freed ADDR | ready
 * Build: cc -O0 -g -o mark_structs samples/mark_structs.c
 */
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node { long value; struct node *next; };
struct tree { struct tree *left, *right, *parent; long key; };
struct flex { long n; long pad; struct node *items[]; };
struct tagged { long tag; long a, b, c; union { struct node *p; long bits; } u; long d; };

struct globals {
    struct node *list;
    struct tree *tree;
    char *interior;
    struct node **ptrarr;
    struct flex *flex;
    struct tagged *tagged;
    struct node *nodes;
    void *opaque;
    long stale;
    struct node *dangle;
    struct tree *amb_tree;
    struct node *amb_node;
} g;

/* what the objects allocated next are: "kept" (reachable from g), "leaked",
 * "stale" (leaked, but a conservative scan keeps it), "freed" */
static const char *cls = "kept";

static void *obj(const char *name, size_t n)
{
    void *p = calloc(1, n);
    if (!p)
        abort();
    printf("obj %s %#lx %zu %s\n", name, (unsigned long)p, malloc_usable_size(p), cls);
    return p;
}

static struct node *node(const char *name, long v, struct node *next)
{
    struct node *x = obj(name, sizeof *x);
    x->value = v;
    x->next = next;
    return x;
}

static struct node *list(const char *prefix, int n)
{
    struct node *head = NULL;
    char name[32];
    for (int i = n - 1; i >= 0; i--) {
        snprintf(name, sizeof name, "%s%d", prefix, i);
        head = node(name, i, head);
    }
    return head;
}

static struct tree *tree(const char *prefix, int depth, struct tree *parent, int *key)
{
    char name[32];
    if (depth == 0)
        return NULL;
    snprintf(name, sizeof name, "%s%d", prefix, *key);
    struct tree *t = obj(name, sizeof *t);
    t->parent = parent;
    t->key = (*key)++;
    t->left = tree(prefix, depth - 1, t, key);
    t->right = tree(prefix, depth - 1, t, key);
    return t;
}

#define SIZE(T) printf("size %s %zu\n", #T, sizeof(struct T))
#define OFF(T, F) printf("off %s %s %zu\n", #T, #F, offsetof(struct T, F))

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);     /* no stdio buffer in the heap */
    SIZE(node); SIZE(tree); SIZE(flex); SIZE(tagged); SIZE(globals);
    OFF(node, next); OFF(tree, left); OFF(tree, right); OFF(tree, parent);
    OFF(flex, items); OFF(tagged, u);
    OFF(globals, list); OFF(globals, tree); OFF(globals, interior); OFF(globals, ptrarr);
    OFF(globals, flex); OFF(globals, tagged); OFF(globals, nodes); OFF(globals, opaque);
    OFF(globals, stale); OFF(globals, dangle); OFF(globals, amb_tree); OFF(globals, amb_node);
    printf("global g %#lx %zu\n", (unsigned long)&g, sizeof g);

    int key = 0;
    /* kept */
    g.list = list("kl", 3);
    g.tree = tree("kt", 3, NULL, &key);
    char *buf = obj("ibuf", 64);
    *(struct node **)buf = node("ik", 1, NULL);        /* only held by ibuf's word 0 */
    g.interior = buf + 24;
    g.ptrarr = obj("parr", 4 * sizeof(struct node *));
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "pa%d", i);
        g.ptrarr[i] = node(name, i, NULL);
    }
    g.flex = obj("flex", sizeof(struct flex) + 3 * sizeof(struct node *));
    g.flex->n = 3;
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "fx%d", i);
        g.flex->items[i] = node(name, i, NULL);
    }
    g.tagged = obj("tag", sizeof(struct tagged));
    g.tagged->u.p = node("un", 7, NULL);
    g.nodes = obj("narr", 4 * sizeof(struct node));
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "na%d", i);
        g.nodes[i].next = node(name, i, NULL);
    }
    void **op = obj("opq", 32);
    op[1] = node("op1", 1, NULL);
    op[3] = node("op3", 3, NULL);
    g.opaque = op;
    struct tree *amb = obj("amb", sizeof(struct tree));
    amb->left = (struct tree *)node("am0", 0, NULL);
    g.amb_tree = amb;
    g.amb_node = (struct node *)amb;
    cls = "freed";
    struct node *gone = node("gone", 9, NULL);
    cls = "kept";
    g.dangle = node("dg", 5, gone);

    /* leaked */
    cls = "leaked";
    list("ll", 5);
    struct node *c0 = node("cy0", 0, NULL), *c1 = node("cy1", 1, c0), *c2 = node("cy2", 2, c1);
    c0->next = c2;
    key = 0;
    tree("lt", 3, NULL, &key);
    strcpy(obj("str", 20), "hello, leaked world");
    cls = "stale";
    g.stale = (long)node("stale", 3, NULL);
    cls = "leaked";
    node("tokept", 4, g.list->next);

    printf("freed %#lx\n", (unsigned long)gone);
    free(gone);
    printf("ready\n");
    for (;;)
        pause();
}
