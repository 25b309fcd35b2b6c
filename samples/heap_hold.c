/* heap_hold.c — a live heap whose retained sizes and paths are known by
 * construction, for `mappedtrace top` and `mappedtrace why`.
 *
 * A global `cache` holds a list of N entries, each owning a value buffer; a
 * local of main holds a small tree; one object is shared by the cache's first
 * entry and the tree (so neither alone retains it); one list is leaked.  It
 * prints the truth on stdout (sizes are malloc_usable_size, what the tracer
 * sees), "ready", then serves stdin until it closes: a line "grow K" appends
 * K entries to the cache and prints "grew BYTES" (their usable bytes):
 *
 *   truth cache ADDR RETAINED      the cache struct, its entries and values, less the
 *                                  last entry and its value: main's `tail` (live, it
 *                                  appends) points into that entry too
 *   truth tree ADDR RETAINED       the tree's nodes (not the shared object)
 *   truth entry ADDR DEPTH         the DEPTH-th entry (1-based) of the list
 *   truth shared ADDR SIZE
 *   truth leaked ADDR SIZE
 */
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct blob { long id; char text[40]; };
struct entry { struct entry *next; char *value; struct blob *extra; long key; };
struct cache { struct entry *head; long count; };
struct tnode { struct tnode *left, *right; struct blob *extra; long v; };

struct cache *cache;

static size_t us(void *p) { return malloc_usable_size(p); }

static struct tnode *tree(int depth, size_t *bytes) {
    if (!depth) return NULL;
    struct tnode *t = calloc(1, sizeof *t);
    *bytes += us(t);
    t->v = depth;
    t->left = tree(depth - 1, bytes);
    t->right = tree(depth - 1, bytes);
    return t;
}

__attribute__((noinline)) static void leak(void) {
    struct entry *e = malloc(sizeof *e);
    e->next = malloc(sizeof *e);
    e->next->next = NULL;
    e->value = NULL; e->extra = NULL; e->next->value = NULL; e->next->extra = NULL;
    printf("truth leaked %p %zu\n", (void *)e, us(e));
}

/* In a function of its own, so that no register of main keeps a pointer
 * into the middle of the list (a conservative root in the top frame). */
__attribute__((noinline)) static void report_entry(int depth) {
    struct entry *e = cache->head;
    for (int i = 1; i < depth; i++) e = e->next;
    printf("truth entry %p %d\n", (void *)e, depth);
}

static long sum(struct tnode *t) { return t ? t->v + sum(t->left) + sum(t->right) : 0; }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    size_t cbytes = 0, tbytes = 0;
    cache = calloc(1, sizeof *cache);
    cbytes += us(cache);
    struct entry **tail = &cache->head;
    for (int i = 0; i < n; i++) {
        struct entry *e = calloc(1, sizeof *e);
        e->key = i;
        e->value = malloc(200);
        snprintf(e->value, 200, "value %d", i);
        cbytes += us(e) + us(e->value);
        *tail = e;
        tail = &e->next;
        cache->count++;
    }
    struct tnode *t = tree(5, &tbytes);
    struct blob *shared = calloc(1, sizeof *shared);
    cache->head->extra = shared;
    t->extra = shared;
    leak();
    struct entry *last = (struct entry *)((char *)tail - offsetof(struct entry, next));
    printf("truth cache %p %zu\n", (void *)cache, cbytes - us(last) - us(last->value));
    printf("truth tree %p %zu\n", (void *)t, tbytes);
    report_entry(n / 2);
    printf("truth shared %p %zu\n", (void *)shared, us(shared));
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int k;
        if (sscanf(line, "grow %d", &k) == 1) {
            size_t grew = 0;
            for (int i = 0; i < k; i++) {
                struct entry *x = calloc(1, sizeof *x);
                x->key = n + i;
                x->value = malloc(200);
                grew += us(x) + us(x->value);
                *tail = x;
                tail = &x->next;
                cache->count++;
            }
            n += k;
            printf("grew %zu\n", grew);
            fflush(stdout);
        }
    }
    printf("%ld %ld\n", sum(t), cache->count);
    return 0;
}
