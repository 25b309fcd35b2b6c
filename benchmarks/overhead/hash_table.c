/* hash_table.c — the hash-table workload of the overhead benchmark
 * (benchmarks/overhead/run.py): a chained hash table of string keys mapping
 * to heap records, driven through insert / lookup / update / delete rounds.
 * Pointer-heavy and call-heavy (hashing, strcmp, malloc, free): the calls
 * are where the maps cost something.
 *
 * Usage: hash_table [ROUNDS]   (default 20); prints a checksum.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record {
    long count;
    char *label;
    struct record *prev;            /* the record this key held before an update */
};

struct entry {
    char *key;
    struct record *rec;
    struct entry *next;
};

struct table {
    struct entry **buckets;
    size_t nbuckets, size;
};

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static char *dup_key(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    memcpy(d, s, n);
    return d;
}

static void grow(struct table *t) {
    size_t nb = t->nbuckets * 2;
    struct entry **b = calloc(nb, sizeof *b);
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct entry *e = t->buckets[i];
        while (e) {
            struct entry *next = e->next;
            size_t j = hash(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static struct entry *find(struct table *t, const char *key) {
    struct entry *e = t->buckets[hash(key) & (t->nbuckets - 1)];
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    return e;
}

static void put(struct table *t, const char *key, long count) {
    struct entry *e = find(t, key);
    struct record *r = malloc(sizeof *r);
    r->count = count;
    r->label = dup_key(key);
    if (e) {
        r->prev = e->rec;
        e->rec = r;
        return;
    }
    r->prev = NULL;
    if (t->size + 1 > t->nbuckets)
        grow(t);
    size_t i = hash(key) & (t->nbuckets - 1);
    e = malloc(sizeof *e);
    e->key = dup_key(key);
    e->rec = r;
    e->next = t->buckets[i];
    t->buckets[i] = e;
    t->size++;
}

static void free_records(struct record *r) {
    while (r) {
        struct record *prev = r->prev;
        free(r->label);
        free(r);
        r = prev;
    }
}

static int del(struct table *t, const char *key) {
    struct entry **p = &t->buckets[hash(key) & (t->nbuckets - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    struct entry *e = *p;
    if (!e)
        return 0;
    *p = e->next;
    free_records(e->rec);
    free(e->key);
    free(e);
    t->size--;
    return 1;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    struct table t = {calloc(16, sizeof(struct entry *)), 16, 0};
    char key[32];
    long sum = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof key, "k%d", (i * 7919 + r) % 30000);
            put(&t, key, i);
        }
        for (int i = 0; i < 40000; i++) {
            snprintf(key, sizeof key, "k%d", i);
            struct entry *e = find(&t, key);
            if (e)
                sum += e->rec->count + (long)strlen(e->rec->label);
        }
        for (int i = 0; i < 30000; i += 3) {
            snprintf(key, sizeof key, "k%d", (i + r) % 30000);
            sum += del(&t, key);
        }
    }
    for (size_t i = 0; i < t.nbuckets; i++)
        while (t.buckets[i])
            del(&t, t.buckets[i]->key);
    free(t.buckets);
    printf("%ld %zu\n", sum, t.size);
    return 0;
}
