/* A multi-threaded workload that checks its own heap continuously (issue #17).
 *
 * Each thread owns a doubly linked list (nodes linked through an embedded
 * `struct link` that is not at offset 0: interior pointers), a binary search
 * tree, and a chained hash table keyed by heap strings.  Every round it
 * inserts and deletes with its own PRNG, then walks every structure and checks
 * it against the running totals it keeps (counts, key sums, string checksums);
 * a difference prints "MISMATCH ..." on stderr.  At the end each thread prints
 * a digest of its final data: it depends only on the thread's PRNG, never on
 * timing, so a run whose objects were moved must print the same digests.
 *
 *   relocate_workload THREADS ROUNDS SLEEP_US [wait]
 * ("wait": after its rounds each thread idles until stdin is closed, then
 * checks once more and prints its digest) prints "ready PID" once the structures are built, "result T DIGEST" per
 * thread and "mismatches N" at the end (exit code 1 if N > 0).
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct link { struct link *prev, *next; };
struct item { uint64_t key; uint64_t pad[2]; struct link link; double weight; };
struct tnode { struct tnode *left, *right; uint64_t key; char *label; };
struct entry { struct entry *next; char *key; uint64_t value; };
struct table { struct entry **buckets; size_t nbuckets; size_t count; };

struct state {
    int id;
    uint64_t rng;
    struct link head;             /* list anchor, inside this struct */
    size_t nitems; uint64_t itemsum;
    struct tnode *root; size_t ntree; uint64_t treesum;
    struct table *table; uint64_t tabsum;
    unsigned long mismatches;
    uint64_t digest;
};

static struct state *states;      /* a global root */
static int nthreads, rounds, sleep_us;
static volatile int ready_count, go_home;
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}
static uint64_t str_sum(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
static char *make_label(uint64_t k) {
    char *s = malloc(24 + k % 40);
    int n = snprintf(s, 24, "k%llu-", (unsigned long long)k);
    for (size_t i = n; i < 23 + k % 40; i++) s[i] = 'a' + (k + i) % 26;
    s[23 + k % 40] = 0;
    return s;
}

/* --- list ---------------------------------------------------------------- */
#define ITEM_OF(l) ((struct item *)((char *)(l) - offsetof(struct item, link)))
static void list_add(struct state *st, uint64_t key) {
    struct item *it = malloc(sizeof *it);
    it->key = key; it->pad[0] = key * 3; it->pad[1] = ~key; it->weight = (double)(key % 1000) / 7.0;
    it->link.next = st->head.next; it->link.prev = &st->head;
    st->head.next->prev = &it->link; st->head.next = &it->link;
    st->nitems++; st->itemsum += key;
}
static void list_drop_one(struct state *st, uint64_t r) {
    if (!st->nitems) return;
    struct link *l = st->head.next;
    for (uint64_t i = r % st->nitems; i; i--) l = l->next;
    struct item *it = ITEM_OF(l);
    l->prev->next = l->next; l->next->prev = l->prev;
    st->nitems--; st->itemsum -= it->key;
    free(it);
}
static void list_check(struct state *st) {
    size_t n = 0; uint64_t sum = 0;
    for (struct link *l = st->head.next; l != &st->head && n <= st->nitems; l = l->next) {
        struct item *it = ITEM_OF(l);
        if (l->next->prev != l || it->pad[0] != it->key * 3 || it->pad[1] != ~it->key) {
            fprintf(stderr, "MISMATCH thread %d list node %p\n", st->id, (void *)it);
            st->mismatches++;
        }
        n++; sum += it->key;
    }
    if (n != st->nitems || sum != st->itemsum) {
        fprintf(stderr, "MISMATCH thread %d list %zu/%zu %llu/%llu\n", st->id, n, st->nitems,
                (unsigned long long)sum, (unsigned long long)st->itemsum);
        st->mismatches++;
    }
}

/* --- tree ---------------------------------------------------------------- */
static void tree_insert(struct state *st, uint64_t key) {
    struct tnode **p = &st->root;
    while (*p) {
        if ((*p)->key == key) return;
        p = key < (*p)->key ? &(*p)->left : &(*p)->right;
    }
    struct tnode *t = calloc(1, sizeof *t);
    t->key = key; t->label = make_label(key);
    *p = t;
    st->ntree++; st->treesum += key ^ str_sum(t->label);
}
static void tree_check_rec(struct state *st, struct tnode *t, uint64_t lo, uint64_t hi,
                           size_t *n, uint64_t *sum, int depth) {
    if (!t || depth > 10000) return;
    if (t->key < lo || t->key > hi) {
        fprintf(stderr, "MISMATCH thread %d tree order at %p\n", st->id, (void *)t);
        st->mismatches++;
    }
    (*n)++; *sum += t->key ^ str_sum(t->label);
    tree_check_rec(st, t->left, lo, t->key, n, sum, depth + 1);
    tree_check_rec(st, t->right, t->key, hi, n, sum, depth + 1);
}
static void tree_check(struct state *st) {
    size_t n = 0; uint64_t sum = 0;
    tree_check_rec(st, st->root, 0, UINT64_MAX, &n, &sum, 0);
    if (n != st->ntree || sum != st->treesum) {
        fprintf(stderr, "MISMATCH thread %d tree %zu/%zu\n", st->id, n, st->ntree);
        st->mismatches++;
    }
}

/* --- hash table (keyed by string contents, never by address) ------------- */
static struct table *table_new(size_t n) {
    struct table *t = malloc(sizeof *t);
    t->buckets = calloc(n, sizeof *t->buckets);
    t->nbuckets = n; t->count = 0;
    return t;
}
static void table_put(struct state *st, uint64_t k) {
    char *key = make_label(k * 7 + 1);
    uint64_t h = str_sum(key);
    struct entry **b = &st->table->buckets[h % st->table->nbuckets];
    for (struct entry *e = *b; e; e = e->next)
        if (!strcmp(e->key, key)) { st->tabsum -= e->value; e->value = k; st->tabsum += k; free(key); return; }
    struct entry *e = malloc(sizeof *e);
    e->key = key; e->value = k; e->next = *b; *b = e;
    st->table->count++; st->tabsum += k;
}
static void table_del(struct state *st, uint64_t r) {
    struct table *t = st->table;
    struct entry **b = &t->buckets[r % t->nbuckets];
    if (!*b) return;
    struct entry *e = *b;
    *b = e->next;
    st->tabsum -= e->value; t->count--;
    free(e->key); free(e);
}
static void table_check(struct state *st) {
    struct table *t = st->table;
    size_t n = 0; uint64_t sum = 0;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (struct entry *e = t->buckets[i]; e && n <= t->count; e = e->next) {
            if (str_sum(e->key) % t->nbuckets != i) {
                fprintf(stderr, "MISMATCH thread %d table entry %p in bucket %zu\n", st->id, (void *)e, i);
                st->mismatches++;
            }
            n++; sum += e->value;
        }
    if (n != t->count || sum != st->tabsum) {
        fprintf(stderr, "MISMATCH thread %d table %zu/%zu\n", st->id, n, t->count);
        st->mismatches++;
    }
}

static uint64_t digest(struct state *st) {
    uint64_t d = st->itemsum * 31 + st->nitems;
    d = d * 1000003 ^ st->treesum ^ st->ntree;
    d = d * 1000003 ^ st->tabsum ^ st->table->count;
    for (struct link *l = st->head.next; l != &st->head; l = l->next) d = d * 131 + ITEM_OF(l)->key;
    return d;
}

static void step(struct state *st) {
    for (int i = 0; i < 20; i++) {
        uint64_t r = next_rand(&st->rng);
        switch (r % 6) {
        case 0: case 1: list_add(st, r >> 8); if (st->nitems > 800) list_drop_one(st, r >> 16); break;
        case 2: list_drop_one(st, r >> 8); break;
        case 3: tree_insert(st, (r >> 8) % 3000); break;
        case 4: table_put(st, (r >> 8) % 5000); break;
        case 5: table_del(st, r >> 8); break;
        }
    }
    list_check(st); tree_check(st); table_check(st);
}

static void *worker(void *arg) {
    struct state *st = arg;
    st->head.next = st->head.prev = &st->head;
    st->table = table_new(64);
    for (int i = 0; i < 30; i++) step(st);
    pthread_mutex_lock(&ready_lock);
    ready_count++;
    pthread_mutex_unlock(&ready_lock);
    for (int r = 0; r < rounds; r++) {
        step(st);
        if (sleep_us) usleep(sleep_us);
    }
    while (!go_home)
        usleep(1000);
    list_check(st); tree_check(st); table_check(st);
    st->digest = digest(st);
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 3;
    rounds = argc > 2 ? atoi(argv[2]) : 200;
    sleep_us = argc > 3 ? atoi(argv[3]) : 2000;
    if (nthreads < 1 || nthreads > 64) return 2;
    states = calloc(nthreads, sizeof *states);
    pthread_t *tids = malloc(nthreads * sizeof *tids);
    for (int i = 0; i < nthreads; i++) {
        states[i].id = i; states[i].rng = 0x9E3779B97F4A7C15ull * (i + 1);
        pthread_create(&tids[i], NULL, worker, &states[i]);
    }
    for (;;) {
        pthread_mutex_lock(&ready_lock);
        int n = ready_count;
        pthread_mutex_unlock(&ready_lock);
        if (n == nthreads) break;
        usleep(1000);
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (argc > 4 && !strcmp(argv[4], "wait")) {       /* finish once stdin is closed */
        char buf[256];
        while (fread(buf, 1, sizeof buf, stdin) > 0)
            ;
    }
    go_home = 1;
    unsigned long bad = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(tids[i], NULL);
        printf("result %d %016llx\n", i, (unsigned long long)states[i].digest);
        bad += states[i].mismatches;
    }
    printf("mismatches %lu\n", bad);
    return bad ? 1 : 0;
}
