/* A fragmented heap that checks itself (issue #17: `mappedtrace compact`).
 *
 * Allocates N objects of six struct kinds (40 to 520 bytes, mixed at random
 * in allocation order, each on its kind's singly linked list), then frees a
 * random (100 - KEEP) % of them: the survivors are scattered over pages that
 * are mostly free but not wholly, so glibc's malloc_trim can give little back.
 * Each survivor then gets a `peer` pointer to another survivor of its kind.
 * Every pointer is a typed slot of a typed object reached from a typed global
 * (no interior pointers, no void *): every survivor can be moved.
 *
 * Every object holds its id and a payload derived from it, and the id its peer
 * must have; "check" walks everything and counts what disagrees.  The digest
 * covers ids, payloads and peers in list order: it depends only on N, KEEP and
 * SEED, never on addresses, so a run whose objects were moved prints the same.
 *
 *   frag_heap N KEEP SEED [THREADS]
 * (THREADS > 1: the objects are allocated by that many threads, each in its own
 * malloc arena, which have exited by "ready"; the digests are the same) prints "ready objects O survivors S bytes B" and then reads commands on
 * stdin, one per line:
 *   check      -> "digest HEX mismatches M"
 *   churn K    -> frees about a quarter of the survivors, allocates K new
 *                 objects (some of them peers of old ones), then as "check"
 *   trim       -> calls malloc_trim(0) itself, prints "trimmed R"
 * At end of input it checks once more, prints "final digest HEX mismatches M"
 * and exits 1 if M > 0.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* sizes 32 + 8 * P are 8 mod 16: malloc_usable_size equals sizeof, no untyped tail */
#define KINDS(X) X(0, 1) X(1, 3) X(2, 7) X(3, 13) X(4, 29) X(5, 61)

#define DECLARE(K, P) \
    struct o##K { struct o##K *next; struct o##K *peer; uint64_t id; uint64_t peer_id; uint64_t pay[P]; }; \
    static struct o##K *head##K; static size_t count##K;
KINDS(DECLARE)

static uint64_t rng;
static unsigned long mismatches;

static uint64_t next_rand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}
static uint64_t mix(uint64_t id, uint64_t j) {
    uint64_t x = id * 0x9e3779b97f4a7c15ull + j * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31; x *= 0x94d049bb133111ebull; x ^= x >> 29;
    return x & 0x00ffffffffffffffull;      /* never a canonical user address with the top byte */
}
static uint64_t fnv(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
    return h;
}

static uint64_t next_id = 1;

/* the first allocations may come from threads (premade[i]: object i's memory) */
static void **premade;
static size_t premade_next;

#define NEW(K, P) \
    static struct o##K *new##K(void) { \
        struct o##K *o = premade ? premade[premade_next++] : malloc(sizeof *o); \
        if (!o) { perror("malloc"); exit(2); } \
        o->id = next_id++; o->peer = NULL; o->peer_id = 0; \
        for (int j = 0; j < P; j++) o->pay[j] = mix(o->id, j); \
        o->next = head##K; head##K = o; count##K++; \
        return o; \
    }
KINDS(NEW)

/* keep about keep % of kind K's list (each object's fate from the PRNG) */
#define THIN(K, P) \
    static void thin##K(unsigned keep) { \
        struct o##K **pp = &head##K; \
        while (*pp) { \
            struct o##K *o = *pp; \
            if (next_rand() % 100 < keep) { pp = &o->next; continue; } \
            *pp = o->next; count##K--; \
            free(o); \
        } \
    }
KINDS(THIN)

/* every survivor: a peer among the survivors of its kind (or none) */
#define PEERS(K, P) \
    static void peers##K(void) { \
        if (!count##K) return; \
        struct o##K **all = malloc(count##K * sizeof *all); \
        size_t n = 0; \
        for (struct o##K *o = head##K; o; o = o->next) all[n++] = o; \
        for (size_t i = 0; i < n; i++) { \
            uint64_t r = next_rand(); \
            struct o##K *p = r % 8 ? all[r % n] : NULL; \
            all[i]->peer = p; all[i]->peer_id = p ? p->id : 0; \
        } \
        memset(all, 0, n * sizeof *all);   /* see main: no stale pointers left behind */ \
        free(all); \
    }
KINDS(PEERS)

/* peers pointing at objects about to be freed are cleared first */
#define UNPEER(K, P) \
    static void unpeer##K(void) { \
        for (struct o##K *o = head##K; o; o = o->next) \
            if (o->peer && o->peer->id == 0) { o->peer = NULL; o->peer_id = 0; } \
    }
KINDS(UNPEER)

#define CHURN(K, P) \
    static void churn##K(void) { \
        for (struct o##K *o = head##K; o; o = o->next) \
            if (next_rand() % 4 == 0) o->id = 0;         /* marked: to be freed */ \
        unpeer##K(); \
        struct o##K **pp = &head##K; \
        while (*pp) { \
            struct o##K *o = *pp; \
            if (o->id) { pp = &o->next; continue; } \
            *pp = o->next; count##K--; free(o); \
        } \
    }
KINDS(CHURN)

#define CHECK(K, P) \
    { \
        size_t n = 0; \
        for (struct o##K *o = head##K; o && n <= count##K; o = o->next, n++) { \
            h = fnv(h, (uint64_t)K); h = fnv(h, o->id); h = fnv(h, o->peer_id); \
            if (malloc_usable_size(o) < sizeof *o) mismatches++; \
            for (int j = 0; j < P; j++) { if (o->pay[j] != mix(o->id, j)) mismatches++; h = fnv(h, o->pay[j]); } \
            if ((o->peer ? o->peer->id : 0) != o->peer_id) mismatches++; \
            if (o->next && o->next->id >= o->id) mismatches++;   /* newest first */ \
        } \
        if (n != count##K) mismatches++; \
    }

static uint64_t check(void) {
    uint64_t h = 1469598103934665603ull;
    KINDS(CHECK)
    return h;
}

static int kind_of(uint64_t r) {
    static const int kinds[16] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5};  /* small ones more often */
    return kinds[r % 16];
}
#define SIZE(K, P) sizeof(struct o##K),
static const size_t kind_size[] = {KINDS(SIZE)};

static void alloc_random(size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (kind_of(next_rand())) {
        case 0: new0(); break;
        case 1: new1(); break;
        case 2: new2(); break;
        case 3: new3(); break;
        case 4: new4(); break;
        default: new5(); break;
        }
    }
}

/* THREADS > 1: thread t allocates objects t, t + THREADS, ... (in its own malloc arena);
 * the main thread then fills and links them exactly as it would its own, so the
 * digests do not depend on THREADS.  The threads have exited by "ready". */
struct job { size_t t, nthreads, n; const unsigned char *kinds; };
static void *alloc_job(void *arg) {
    struct job *j = arg;
    for (size_t i = j->t; i < j->n; i += j->nthreads) premade[i] = malloc(kind_size[j->kinds[i]]);
    return NULL;
}
static void alloc_threaded(size_t n, size_t nthreads) {
    unsigned char *kinds = malloc(n);
    uint64_t saved = rng;
    for (size_t i = 0; i < n; i++) kinds[i] = (unsigned char)kind_of(next_rand());
    rng = saved;                     /* alloc_random draws the same kinds again */
    premade = calloc(n, sizeof *premade);
    pthread_t tid[64];
    struct job jobs[64];
    for (size_t t = 0; t < nthreads; t++) {
        jobs[t] = (struct job){t, nthreads, n, kinds};
        pthread_create(&tid[t], NULL, alloc_job, &jobs[t]);
    }
    for (size_t t = 0; t < nthreads; t++) pthread_join(tid[t], NULL);
    alloc_random(n);
    memset(premade, 0, n * sizeof *premade);
    free(premade);
    premade = NULL;
    free(kinds);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s N KEEP_PERCENT SEED [THREADS]\n", argv[0]);
        return 2;
    }
    size_t nthreads = argc > 4 ? strtoull(argv[4], NULL, 0) : 1;
    if (nthreads < 1 || nthreads > 64) {
        fprintf(stderr, "THREADS must be 1 to 64\n");
        return 2;
    }
    size_t n = strtoull(argv[1], NULL, 0);
    unsigned keep = (unsigned)strtoul(argv[2], NULL, 0);
    rng = strtoull(argv[3], NULL, 0) * 2654435761ull + 88172645463325252ull;
    /* Static stdio buffers, and the temporary array of PEERS cleared before it is
     * freed: a heap buffer that reused that array's chunk would hold stale pointers
     * to the survivors, and its untyped bytes would pin them (conservatively, as they
     * must), so how much could move would depend on the seed. */
    static char inbuf[4096], outbuf[4096];
    setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);

    if (nthreads > 1)
        alloc_threaded(n, nthreads);
    else
        alloc_random(n);
#define DO_THIN(K, P) thin##K(keep);
    KINDS(DO_THIN)
#define DO_PEERS(K, P) peers##K();
    KINDS(DO_PEERS)
    size_t survivors = 0, bytes = 0;
#define SUM(K, P) survivors += count##K; bytes += count##K * sizeof(struct o##K);
    KINDS(SUM)
    printf("ready objects %zu survivors %zu bytes %zu\n", n, survivors, bytes);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "check", 5)) {
            uint64_t d = check();
            printf("digest %016llx mismatches %lu\n", (unsigned long long)d, mismatches);
        } else if (!strncmp(line, "churn", 5)) {
            size_t k = strtoull(line + 5, NULL, 0);
#define DO_CHURN(K, P) churn##K();
            KINDS(DO_CHURN)
            alloc_random(k);
            KINDS(DO_PEERS)
            uint64_t d = check();
            printf("digest %016llx mismatches %lu\n", (unsigned long long)d, mismatches);
        } else if (!strncmp(line, "trim", 4)) {
            printf("trimmed %d\n", malloc_trim(0));
        } else {
            fprintf(stderr, "unknown command: %s", line);
        }
    }
    uint64_t d = check();
    printf("final digest %016llx mismatches %lu\n", (unsigned long long)d, mismatches);
    return mismatches ? 1 : 0;
}
