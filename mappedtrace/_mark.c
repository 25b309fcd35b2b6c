/* _mark.c — the marking kernel of mappedtrace.trace (DESIGN step 8).
 *
 * Compiled with cffi (API mode) by mappedtrace/_markkernel.py on first use.
 * mappedtrace/trace.py holds the specification of the algorithm (typing
 * rules, phases, edge flags); mappedtrace/trace.py::_NumpyMarker is the
 * vectorised fallback and must produce the identical graph.  Keep both in
 * step.
 *
 * Nothing here trusts a count from the target: every read of object memory is
 * bounded by the chunk's usable size, every slot run by its object's size.
 *
 * Speed.  Marking a big heap is bound by cache and TLB misses: each edge is
 * a random pointer into a random object.  Three things keep the misses few
 * and overlapping:
 *  - per node only the graph's own columns (start, size: u64) and the
 *    marking's (state: u8, type: i32), 21 bytes in all; a node's bytes are
 *    found from the pieces table (sorted, a few dozen entries), not kept per
 *    node.  A lookup touches the start, size and state lines of its node, all
 *    prefetched together.  (A 32-byte record per node, with the bytes'
 *    address, touched one line, but was held beside the graph's columns:
 *    32 bytes per object more of the tracer's memory, issue #13.)
 *  - a bucket index per heap segment (0.5 to 1 bucket per chunk, u32
 *    entries): a pointer's bucket names the first chunk that ends after the
 *    bucket's start, so a lookup is one bucket load and one or two nodes;
 *  - a software pipeline (as in Boehm GC's mark stack prefetching, here with
 *    a candidate buffer): the words of queued nodes are read ahead into a
 *    buffer of candidate pointers while their objects' lines, their buckets
 *    and then their nodes' columns are prefetched, and the candidates are then
 *    handled strictly in order.  Handling in order keeps the result exactly
 *    that of the plain FIFO algorithm: reading words and buckets changes no
 *    state, and a node is expanded only once it is in the queue.
 * mt_chain is the glibc chunk walk of mappedtrace.heap.glibc (follow size
 * fields), here because it is a per-chunk loop too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* mremap */
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* node state bits (mirror of trace.py ST_*) */
#define ST_REACHED   0x01u
#define ST_TYPED     0x02u   /* typed by a pointer to its start */
#define ST_UNKNOWN   0x04u   /* reached through an untyped/interior/conservative pointer */
#define ST_AMBIG     0x08u   /* reached with two different pointer-bearing types */
#define ST_SCALAR    0x10u   /* reached at offset 0 by a pointer to a pointer-free type */
#define ST_CQUEUED   0x20u   /* queued for (or done) a conservative scan */

/* slot flags (FORMAT.md §2) */
#define SLOT_UNTYPED      0x1u
#define SLOT_FUNCTION     0x2u
#define SLOT_CONSERVATIVE 0x4u
#define SLOT_WEAK         0x8u
#define TYPE_FLEX         0x2u

/* edge flags (mirror of graph.py EDGE_*) */
#define EDGE_EXACT     0x1u
#define EDGE_WEAK      0x2u
#define EDGE_TYPEDSCAN 0x4u
#define EDGE_UNREACHED 0x8u

struct mt_edge {
    int64_t src;
    int64_t dst;
    uint64_t src_off;
    uint64_t dst_off;
    uint32_t flags;
    uint32_t pad;
};

/* a run of nearly contiguous chunks first..last-1 covering [lo, hi) */
struct mt_seg {
    uint64_t lo, hi;
    int64_t first, last;
    int64_t boff, nb;          /* its buckets: bucket[boff .. boff+nb) */
    uint32_t shift, pad;       /* bucket b covers [lo + (b << shift), lo + ((b+1) << shift)) */
};

struct mt_heap {
    int64_t n;                 /* nodes (in-use chunks), sorted by start, not overlapping */
    const uint64_t *start;     /* per node: first byte */
    const uint64_t *size;      /* per node: usable bytes */
    uint8_t *state;            /* per node: ST_* */
    int32_t *type;             /* per node: type index of ST_TYPED, else of ST_SCALAR, else -1 */
    int64_t npiece;            /* the bytes read: (lo, hi, address in this process) triples, */
    const uint64_t *piece;     /*   sorted by lo, not overlapping; a node outside them is unreadable */
    int64_t nseg;
    const struct mt_seg *segs; /* sorted by lo */
    int64_t hot;               /* the segment with the most chunks: tried first */
    uint64_t lo, hi;           /* of all segments */
    const uint32_t *bucket;    /* per bucket: first chunk (relative to the segment's first)
                                  whose end lies after the bucket's start */
    /* classification of values that are not heap edges: sorted [lo, hi) pairs */
    int64_t nheapmaps;
    const uint64_t *heapmaps;
    int64_t nmaps;
    const uint64_t *maps;
};

struct mt_types {
    int64_t n;
    const uint64_t *size;
    const uint32_t *flags;
    const int64_t *slot_lo;
    const int64_t *slot_hi;
    const int64_t *elem;       /* FLEX element type index, -1 none */
    const uint64_t *flex_off;
    const uint8_t *hasptr;     /* the type (or its flex element) has pointer slots */
    const uint8_t *covered;    /* every word of the type is a pointer slot (not code):
                                  a bigger chunk may be read as an array of it */
    const uint64_t *s_off;
    const uint64_t *s_count;
    const uint64_t *s_stride;
    const int64_t *s_target;   /* type index, -1 unknown */
    const uint32_t *s_flags;
};

struct mt_out {
    int64_t nedges;            /* edges counted by mt_mark, and by kind: */
    int64_t nexact;            /*   typed-scan edges from exact slots */
    int64_t ntcons;            /*   typed-scan edges from conservative (union) slots */
    int64_t ncons;             /*   edges of the conservative closure */
    int64_t nunreached;        /*   edges of the leak scan */
    uint64_t counters[8];      /* 0 dangling, 1 static, 2 typed words, 3 conservative words,
                                  4 unreadable chunks, 5 out of memory, 6 the queue's peak bytes */
    const int64_t *site_type;  /* per node: type index of its allocation site, -1 none;
                                  NULL: no sites (trace.py "Allocation sites") */
};

/* ------------------------------------------------------------------------ */
/* the lookup index                                                          */

static inline uint64_t node_end(const struct mt_heap *h, int64_t d)
{
    return h->start[d] + h->size[d];
}

/* The bytes of node d in this process, NULL when they were not read: the
 * piece holding its start, by binary search (once per queued node). */
static inline const uint8_t *node_bytes(const struct mt_heap *h, int64_t d)
{
    uint64_t a = h->start[d], z = a + h->size[d];
    int64_t lo = 0, hi = h->npiece;      /* last piece with lo <= a */
    while (lo < hi) {
        int64_t m = (lo + hi) / 2;
        if (h->piece[3 * m] <= a)
            lo = m + 1;
        else
            hi = m;
    }
    if (lo == 0)
        return NULL;
    const uint64_t *pc = &h->piece[3 * (lo - 1)];
    if (z > pc[1] || z < a)
        return NULL;
    return (const uint8_t *)(uintptr_t)(pc[2] + (a - pc[0]));
}

/* Fill bucket[] (sum of the segments' nb entries) for the segments' chunks. */
void mt_index(const struct mt_heap *h, uint32_t *bucket)
{
    for (int64_t s = 0; s < h->nseg; s++) {
        const struct mt_seg *g = &h->segs[s];
        int64_t i = g->first;
        for (int64_t b = 0; b < g->nb; b++) {
            uint64_t bstart = g->lo + ((uint64_t)b << g->shift);
            while (i < g->last && node_end(h, i) <= bstart)
                i++;
            bucket[g->boff + b] = (uint32_t)(i - g->first);
        }
    }
}

/* The segment whose [lo, hi) holds v, or -1. */
static inline int64_t seg_of(const struct mt_heap *h, uint64_t v)
{
    if (v < h->lo || v >= h->hi)
        return -1;
    const struct mt_seg *g = &h->segs[h->hot];
    if (v >= g->lo && v < g->hi)
        return h->hot;
    int64_t a = 0, b = h->nseg;          /* first segment with hi > v */
    while (a < b) {
        int64_t m = (a + b) / 2;
        if (h->segs[m].hi <= v)
            a = m + 1;
        else
            b = m;
    }
    if (a >= h->nseg || v < h->segs[a].lo)
        return -1;
    return a;
}

static inline const uint32_t *bucket_of(const struct mt_heap *h, int64_t s, uint64_t v)
{
    const struct mt_seg *g = &h->segs[s];
    uint64_t b = (v - g->lo) >> g->shift;
    if (b >= (uint64_t)g->nb)
        b = (uint64_t)g->nb - 1;
    return &h->bucket[g->boff + (int64_t)b];
}

/* The node of segment s containing v, or -1: the first chunk ending after v,
 * searched between the bucket's chunk and the next bucket's. */
static inline int64_t find_in(const struct mt_heap *h, int64_t s, uint64_t v)
{
    const struct mt_seg *g = &h->segs[s];
    const uint32_t *bk = bucket_of(h, s, v);
    int64_t a = g->first + bk[0];
    int64_t z = bk + 1 < &h->bucket[g->boff + g->nb] ? g->first + bk[1] : g->last - 1;
    if (z > g->last - 1)
        z = g->last - 1;
    while (z - a > 4) {                  /* a crowded bucket: binary search */
        int64_t m = a + (z - a) / 2;
        if (node_end(h, m) > v)
            z = m;
        else
            a = m + 1;
    }
    while (a < z && node_end(h, a) <= v)
        a++;
    if (a < g->first || a >= g->last || h->start[a] > v || node_end(h, a) <= v)
        return -1;
    return a;
}

int64_t mt_find(const struct mt_heap *h, uint64_t v)
{
    int64_t s = seg_of(h, v);
    return s < 0 ? -1 : find_in(h, s, v);
}

static int in_ranges(const uint64_t *r, int64_t n, uint64_t v)
{
    int64_t a = 0, b = n;       /* first range with hi > v */
    while (a < b) {
        int64_t m = (a + b) / 2;
        if (r[2 * m + 1] <= v)
            a = m + 1;
        else
            b = m;
    }
    return a < n && r[2 * a] <= v;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------------------ */
/* queue, candidates, edges                                                  */

/* The growing arrays (queue, edges) are anonymous mappings advised
 * MADV_HUGEPAGE and grown with mremap: 4 KiB pages cost a page fault (and a
 * page clear) every 4 KiB, about 30 000 faults for a 1 M-object heap, which
 * measured as half of the marking time. */
#define BIG_MIN ((size_t)1 << 21)

static void *big_grow(void *p, size_t old, size_t size)
{
    if (size < BIG_MIN)
        size = BIG_MIN;
    void *q = p ? mremap(p, old, size, MREMAP_MAYMOVE)
                : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED)
        return NULL;
    madvise(q, size, MADV_HUGEPAGE);
    return q;
}

static void big_free(void *p, size_t size)
{
    if (p)
        munmap(p, size < BIG_MIN ? BIG_MIN : size);
}

/* a queued scan of node d: typed as ti (>= 0), or conservative (SCAN_QCONS: reaching,
 * SCAN_QUNREACHED: the leak scan) from byte ``from`` (a typed node's tail) */
struct qent { int64_t d; const uint8_t *p; uint64_t size; int64_t ti; uint64_t from; };
#define SCAN_QCONS      (-1)
#define SCAN_QUNREACHED (-2)
/* candidate modes */
#define SCAN_TYPED     0u
#define SCAN_CONS      1u
#define SCAN_UNREACHED 2u
/* v[head..tail) are pending; run_queue advances head as it reads, so a full
 * queue first slides its pending entries down over the consumed ones (the
 * queue holds the frontier, not every node ever queued: 40 bytes per object
 * of a 20 M-object heap was 800 MB) */
struct mt_queue { struct qent *v; int64_t head, tail, cap; };

static int q_push_from(struct mt_queue *q, const struct mt_heap *h, int64_t d, int64_t ti, uint64_t from)
{
    if (q->tail == q->cap && q->head >= q->cap / 2) {
        memmove(q->v, q->v + q->head, (size_t)(q->tail - q->head) * sizeof *q->v);
        q->tail -= q->head;
        q->head = 0;
    }
    if (q->tail == q->cap) {
        int64_t cap = q->cap ? q->cap * 2 : (int64_t)(BIG_MIN / sizeof *q->v);
        struct qent *v = big_grow(q->v, (size_t)q->cap * sizeof *v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        q->v = v;
        q->cap = cap;
    }
    struct qent *e = &q->v[q->tail++];
    e->d = d;
    e->p = node_bytes(h, d);
    e->size = h->size[d];
    e->ti = ti;
    e->from = from;
    return 0;
}

static inline int q_push(struct mt_queue *q, const struct mt_heap *h, int64_t d, int64_t ti)
{
    return q_push_from(q, h, d, ti, 0);
}

/* a word read from a node, to be looked up: seg -1 when outside every segment */
struct cand { int64_t src; uint64_t off; uint64_t v; int32_t target; int32_t seg; uint32_t sfl, mode; };
struct cbuf { struct cand *v; int64_t head, tail, cap; };

static int c_push(struct cbuf *c, const struct mt_heap *h, int64_t src, uint64_t off, uint64_t v,
                  int64_t target, uint32_t sfl, int64_t seg, uint32_t mode)
{
    if (c->tail == c->cap) {
        if (c->head > 0) {               /* slide the pending ones down */
            memmove(c->v, c->v + c->head, (size_t)(c->tail - c->head) * sizeof *c->v);
            c->tail -= c->head;
            c->head = 0;
        }
        if (c->tail == c->cap) {
            int64_t cap = c->cap ? c->cap * 2 : 4096;
            struct cand *nv = realloc(c->v, (size_t)cap * sizeof *nv);
            if (!nv)
                return -1;
            c->v = nv;
            c->cap = cap;
        }
    }
    if (seg >= 0)
        __builtin_prefetch(bucket_of(h, seg, v));
    struct cand *e = &c->v[c->tail++];
    e->src = src;
    e->off = off;
    e->v = v;
    e->target = (int32_t)target;
    e->seg = (int32_t)seg;
    e->sfl = sfl;
    e->mode = mode;
    return 0;
}

/* Marking only counts the edges: mt_edges makes them afterwards, node by
 * node, straight into the caller's array in canonical order (no edge buffer,
 * no sort: for 11 M edges those cost 1.5 s, most of it clearing fresh pages). */
static inline int emit(struct mt_out *o)
{
    o->nedges++;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the rules                                                                  */

/* Elements of type ti read by type in a node of size bytes (trace.py "Sound
 * typing"): one.  Reading a bigger chunk as an array of a type whose every
 * word is a pointer slot skips no word of the chunk, but the guessed elements
 * would type what their words point to: a pointer to a struct's first member
 * (gawk's `pools = &ctxt->pools`) types the rest of the struct as more
 * elements, and a list head there typed its `struct srcfile` as INSTRUCTION,
 * skipping `fullpath` (tests/sound_typing/first_member.c).  The rest is tail. */
static inline uint64_t typed_elems(const struct mt_types *t, int64_t ti, uint64_t size)
{
    (void)t;
    (void)ti;
    (void)size;
    return 1;
}

/* Does a FLEX type's element layout decide its flexible part (elements with
 * pointer slots), or is that part raw bytes (scanned conservatively)? */
static inline int flex_typed(const struct mt_types *t, int64_t ti)
{
    int64_t el = t->elem[ti];
    return el >= 0 && t->size[el] > 0 && t->hasptr[el];
}

/* First byte (8-aligned) of a node of type ti beyond what the type
 * describes: its tail, scanned conservatively. */
static uint64_t tail_start(const struct mt_types *t, int64_t ti, uint64_t size)
{
    uint64_t end;
    if (t->flags[ti] & TYPE_FLEX) {
        end = t->flex_off[ti];
        if (flex_typed(t, ti) && size > end) {
            uint64_t esz = t->size[t->elem[ti]];
            end += (size - end) / esz * esz;
        }
    } else {
        end = typed_elems(t, ti, size) * t->size[ti];
    }
    if (end > size)
        end = size;
    return (end + 7) & ~(uint64_t)7;
}

/* Where the conservative scan of a queued (ST_CQUEUED) node starts: its
 * tail when a type describes the rest, else 0. */
static uint64_t cons_from(const struct mt_heap *h, const struct mt_types *t, int64_t d)
{
    uint8_t s = h->state[d];
    if (s & ST_AMBIG)
        return 0;
    if (s & (ST_TYPED | ST_SCALAR))      /* type[d] is the typed one when both */
        return tail_start(t, h->type[d], h->size[d]);
    return 0;
}

/* Is word offset pos, with slot flags fl, an instance of a slot of type s? */
static int slot_at(const struct mt_types *t, int64_t s, uint64_t pos, uint32_t fl)
{
    for (int64_t j = t->slot_lo[s]; j < t->slot_hi[s]; j++) {
        uint64_t o = t->s_off[j], st = t->s_stride[j];
        if (t->s_flags[j] != fl || pos < o)
            continue;
        if (pos == o || (st && (pos - o) % st == 0 && (pos - o) / st < t->s_count[j]))
            return 1;
    }
    return 0;
}

/* Every pointer slot of type a is one of type s (same offset and flags,
 * instance by instance; the pointee may differ), and a has no
 * pointer-bearing flexible array: a's view of an object of type s is no
 * different layout (Lua's GCObject, the common initial sequence of its
 * Table; an element of an array its site proved). */
#define COVERS_MAX_INSTANCES 64
static int covers(const struct mt_types *t, int64_t s, int64_t a)
{
    if ((t->flags[a] & TYPE_FLEX) && flex_typed(t, a))
        return 0;
    for (int64_t i = t->slot_lo[a]; i < t->slot_hi[a]; i++) {
        uint64_t n = t->s_count[i] ? t->s_count[i] : 1;
        if (n > COVERS_MAX_INSTANCES)
            return 0;
        for (uint64_t m = 0; m < n; m++)
            if (!slot_at(t, s, t->s_off[i] + m * t->s_stride[i], t->s_flags[i]))
                return 0;
    }
    return 1;
}

/* The visit rule (trace.py "Typing rule"). Returns -1 on out of memory. */
static int visit(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                 struct mt_queue *q, int64_t d, int64_t ti, uint64_t doff)
{
    uint8_t *st = &h->state[d];
    /* first reached: its allocation site's type comes first, as a typed
     * pointer to its start would (the pointer that reached it is visited next) */
    if (!(*st & ST_REACHED) && o->site_type && o->site_type[d] >= 0) {
        *st |= ST_REACHED;
        if (visit(h, t, o, q, d, o->site_type[d], 0))
            return -1;
    }
    *st |= ST_REACHED;
    if (ti < 0) {
        *st |= ST_UNKNOWN;
        return 0;
    }
    if (!t->hasptr[ti]) {
        if (doff != 0) {
            *st |= ST_UNKNOWN;
        } else if (!(*st & ST_SCALAR)) {
            *st |= ST_SCALAR;
            if (!(*st & ST_TYPED))      /* one type column: the typed one wins */
                h->type[d] = (int32_t)ti;
        }
        return 0;
    }
    if (doff != 0) {            /* inside an object of unknown layout: no type from it */
        *st |= ST_UNKNOWN;
        return 0;
    }
    if (*st & ST_TYPED) {
        /* typed by its allocation site: a pointer whose type the site's covers agrees */
        int64_t xt = h->type[d];
        if (xt != ti && !(o->site_type && o->site_type[d] == xt && covers(t, xt, ti)))
            *st |= ST_AMBIG;
        return 0;
    }
    *st |= ST_TYPED;
    h->type[d] = (int32_t)ti;
    return q_push(q, h, d, ti);
}

/* One typed candidate: edge, visit, or a dangling/static count. */
static int handle_typed(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                        struct mt_queue *q, const struct cand *c)
{
    int64_t d = c->seg >= 0 ? find_in(h, c->seg, c->v) : -1;
    uint32_t sfl = c->sfl;
    if (d >= 0) {
        uint64_t doff = c->v - h->start[d];
        emit(o);
        if (sfl & SLOT_CONSERVATIVE)
            o->ntcons++;
        else
            o->nexact++;
        if (sfl & SLOT_WEAK)     /* followed for the graph, but keeps nothing alive */
            return 0;
        return visit(h, t, o, q, d, (sfl & (SLOT_UNTYPED | SLOT_CONSERVATIVE)) ? -1 : c->target, doff);
    }
    if (!(sfl & SLOT_CONSERVATIVE)) {
        if (in_ranges(h->heapmaps, h->nheapmaps, c->v) || !in_ranges(h->maps, h->nmaps, c->v))
            o->counters[0]++;
        else
            o->counters[1]++;
    }
    return 0;
}

/* One conservative candidate: edge, and in the closure (SCAN_CONS) the node is reached and queued. */
static int handle_cons(const struct mt_heap *h, struct mt_out *o, struct mt_queue *q, const struct cand *c)
{
    int64_t d = find_in(h, c->seg, c->v);
    if (d < 0)
        return 0;
    uint8_t *st = &h->state[d];
    emit(o);
    if (c->mode != SCAN_CONS) {
        o->nunreached++;
        return 0;
    }
    o->ncons++;
    *st |= ST_REACHED | ST_UNKNOWN;
    if (!(*st & (ST_TYPED | ST_SCALAR | ST_CQUEUED))) {
        *st |= ST_CQUEUED;
        if (q_push(q, h, d, -1))
            return -1;
    }
    return 0;
}

/* The edge of one candidate, if it points into a node (the second pass;
 * out NULL: only count it). */
static inline void handle_emit(const struct mt_heap *h, const struct cand *c, struct mt_edge *out,
                               int64_t *k, int64_t cap)
{
    int64_t d = c->seg >= 0 ? find_in(h, c->seg, c->v) : -1;
    if (d < 0)
        return;
    if (!out) {                 /* counting */
        (*k)++;
        return;
    }
    if (*k >= cap)
        return;
    uint32_t fl = 0;
    if (c->mode == SCAN_TYPED) {
        fl = EDGE_TYPEDSCAN;
        if (!(c->sfl & SLOT_CONSERVATIVE))
            fl |= EDGE_EXACT;
        if (c->sfl & SLOT_WEAK)
            fl |= EDGE_WEAK;
    } else if (c->mode == SCAN_UNREACHED) {
        fl = EDGE_UNREACHED;
    }
    struct mt_edge *e = &out[(*k)++];
    e->src = c->src;
    e->dst = d;
    e->src_off = c->off;
    e->dst_off = c->v - h->start[d];
    e->flags = fl;
    e->pad = 0;
}

/* ------------------------------------------------------------------------ */
/* reading the words of queued nodes into candidates                         */

/* words of one piece (at most this many slot words or words per call) */
#define PIECE_WORDS 512
/* generate candidates while fewer than this are pending */
#define LOW_WATER 32
/* queued nodes whose object lines are prefetched ahead of the reader */
#define PD_NODE 16
/* candidates whose bucket is loaded and node columns prefetched ahead of handling */
#define PD_CAND 16

/* where the reader is inside the node being read (the node at the queue's head) */
struct reader {
    int started;
    int flexhead;              /* FLEX: header slots not read yet */
    uint64_t next;             /* next element (typed) or byte offset (conservative) */
};

/* The slots of type ti laid at byte base of node e, bounded by limit, as candidates. */
static int read_slots(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                      struct cbuf *cb, const struct qent *e, int64_t ti, uint64_t base, uint64_t limit)
{
    for (int64_t s = t->slot_lo[ti]; s < t->slot_hi[ti]; s++) {
        uint32_t sfl = t->s_flags[s];
        if (sfl & SLOT_FUNCTION)
            continue;
        if (limit < 8 || base > limit || t->s_off[s] > limit)
            continue;           /* offsets are bounded by MAX_OBJECT in trace.py: no wrap below */
        uint64_t cnt = t->s_count[s] ? t->s_count[s] : 1;
        uint64_t stride = t->s_stride[s];
        if (stride == 0)
            cnt = 1;
        for (uint64_t i = 0; i < cnt; i++) {
            uint64_t off = base + t->s_off[s] + i * stride;
            if (off > limit - 8)
                break;
            o->counters[2]++;
            uint64_t v = load64(e->p + off);
            if (v && c_push(cb, h, e->d, off, v, t->s_target[s], sfl, seg_of(h, v), SCAN_TYPED))
                return -1;
        }
    }
    return 0;
}

static inline int64_t slot_words(const struct mt_types *t, int64_t ti)
{
    int64_t n = 0;
    for (int64_t s = t->slot_lo[ti]; s < t->slot_hi[ti]; s++)
        n += t->s_stride[s] && t->s_count[s] ? (int64_t)(t->s_count[s] > PIECE_WORDS ? PIECE_WORDS : t->s_count[s]) : 1;
    return n > 0 ? n : 1;
}

/* Read the next piece of the node e (the queue's head): some elements of a typed node,
 * some words of a conservative one.  Returns 1 when the node is done, 0 when
 * more is left, -1 when out of memory. */
static int read_piece(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                      struct cbuf *cb, const struct qent *e, struct reader *r)
{
    uint64_t size = e->size;
    int typed = e->ti >= 0;
    if (!e->p)
        return 1;
    if (!typed) {
        if (!r->started) {
            r->started = 1;
            r->next = e->from;
            o->counters[3] += e->from < size ? (size - e->from) / 8 : 0;
        }
        uint64_t off = r->next, stop = off + 8 * PIECE_WORDS;
        for (; off + 8 <= size && off < stop; off += 8) {
            uint64_t v = load64(e->p + off);
            if (v < h->lo || v >= h->hi)
                continue;
            int64_t s = seg_of(h, v);
            if (s >= 0 && c_push(cb, h, e->d, off, v, -1, 0, s, e->ti == -1 ? SCAN_CONS : SCAN_UNREACHED))
                return -1;
        }
        r->next = off;
        return off + 8 > size;
    }
    int64_t ti = e->ti;
    if (t->flags[ti] & TYPE_FLEX) {
        int64_t el = t->elem[ti];
        if (!r->started) {
            r->started = 1;
            r->next = t->flex_off[ti];
            if (read_slots(h, t, o, cb, e, ti, 0, size))
                return -1;
            return !flex_typed(t, ti);
        }
        uint64_t esz = t->size[el];
        int64_t per = PIECE_WORDS / slot_words(t, el);
        for (int64_t k = 0; k < (per > 0 ? per : 1); k++) {
            if (r->next + esz > size || r->next + esz < r->next)
                return 1;
            if (read_slots(h, t, o, cb, e, el, r->next, size))
                return -1;
            r->next += esz;
        }
        return r->next + esz > size;
    }
    uint64_t tsz = t->size[ti];
    uint64_t nel = typed_elems(t, ti, size);
    if (!r->started) {
        r->started = 1;
        r->next = 0;
    }
    int64_t per = PIECE_WORDS / slot_words(t, ti);
    for (int64_t k = 0; k < (per > 0 ? per : 1) && r->next < nel; k++, r->next++)
        if (read_slots(h, t, o, cb, e, ti, r->next * tsz, size))
            return -1;
    return r->next >= nel;
}

/* always_inline: GCC 12 finds a function that only prefetches "const" and
 * drops its calls before inlining it (the prefetches then vanish) */
static inline __attribute__((always_inline)) void prefetch_node_bytes(const struct mt_types *t, const struct qent *e)
{
    if (!e->p)
        return;
    if (e->ti < 0) {            /* every word is read: the first four lines */
        if (e->from >= e->size)
            return;
        __builtin_prefetch(e->p + e->from);
        if (e->size > 64)
            __builtin_prefetch(e->p + 64);
        if (e->size > 128)
            __builtin_prefetch(e->p + 128);
        if (e->size > 192)
            __builtin_prefetch(e->p + 192);
        return;
    }
    int64_t ti = e->ti;
    for (int64_t s = t->slot_lo[ti], k = 0; s < t->slot_hi[ti] && k < 4; s++, k++)
        if (t->s_off[s] < e->size)
            __builtin_prefetch(e->p + t->s_off[s]);
}

/* Drain the queue: read the queued nodes' words into candidates (ahead),
 * handle the candidates in order.  ``lifo`` takes nodes from the top instead
 * (the conservative closure, whose result does not depend on the order: a
 * node it reaches is reached, whenever): a depth-first closure holds a stack
 * of about depth × fan-out, where the breadth-first one held the widest level
 * of every structure at once (a forest of 2 000 trees: 3.3 M entries of 40
 * bytes, a third of the marker's memory at 4 M objects; issue #13).  Marking visits and counts; the second
 * pass writes the edges (or counts them, out NULL).  A steady pipeline, not bursts:
 * each node read prefetches the bytes of the node PD_NODE places later in
 * the queue, each candidate read prefetches its bucket, each candidate
 * handled first prefetches the node of the one PD_CAND places later (by
 * then its bucket is in cache). */
static int run_queue(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                     struct mt_queue *q, int second, struct mt_edge *out, int64_t *k, int64_t cap,
                     int lifo)
{
    struct cbuf cb = {0};
    struct reader r = {0, 0, 0};
    struct qent cur;            /* lifo: the node being read, taken off the top */
    int rc = -1;
    if (!lifo)
        for (int64_t i = q->head; i < q->tail && i < q->head + PD_NODE; i++)
            prefetch_node_bytes(t, &q->v[i]);
    for (;;) {
        while (cb.tail - cb.head < LOW_WATER && (r.started || q->head < q->tail)) {
            int done;
            if (lifo) {
                if (!r.started) {
                    cur = q->v[--q->tail];
                    if (q->tail > q->head)
                        prefetch_node_bytes(t, &q->v[q->tail - 1]);
                }
                done = read_piece(h, t, o, &cb, &cur, &r);
            } else {
                if (!r.started && q->head + PD_NODE < q->tail)
                    prefetch_node_bytes(t, &q->v[q->head + PD_NODE]);
                done = read_piece(h, t, o, &cb, &q->v[q->head], &r);
            }
            if (done < 0)
                goto out;
            if (done) {
                if (!lifo)
                    q->head++;      /* consumed: a push may slide the rest down */
                r.started = 0;
            }
        }
        if (cb.head == cb.tail)
            break;
        if (cb.head + PD_CAND < cb.tail) {
            const struct cand *f = &cb.v[cb.head + PD_CAND];
            if (f->seg >= 0) {
                const uint32_t *bk = bucket_of(h, f->seg, f->v);
                int64_t a = h->segs[f->seg].first + bk[0];
                __builtin_prefetch(&h->start[a]);
                __builtin_prefetch(&h->size[a]);
                __builtin_prefetch(&h->state[a]);
            }
        }
        const struct cand *c = &cb.v[cb.head++];
        if (second)
            handle_emit(h, c, out, k, cap);
        else if (c->mode == SCAN_TYPED ? handle_typed(h, t, o, q, c) : handle_cons(h, o, q, c))
            goto out;
        if (cb.head == cb.tail)
            cb.head = cb.tail = 0;
    }
    q->head = q->tail;
    rc = 0;
out:
    free(cb.v);
    return rc;
}

/* nodes queued per block (phases 2–3 of mt_mark, and mt_edges) */
#define EMIT_BLOCK 4096

/* Mark.  Phase 1: visit the typed root pointers in order, then scan typed
 * nodes in FIFO order.  Phase 2: conservative closure from every node that is
 * reached but has no pointer-free/typed layout, from ambiguous nodes, and
 * from the tail of every typed or pointer-free node (the bytes its type does
 * not describe, tail_start).  Phase 3 (leak scan): every in-use chunk left unreached is scanned
 * conservatively, its edges flagged EDGE_UNREACHED, reaching nothing.
 * The edges are counted (o->nedges); mt_edges makes them.
 * Returns 0, or -1 when out of memory (counters[5]). */
int mt_mark(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
            int64_t ninit, const int64_t *init_node, const int64_t *init_type,
            const uint64_t *init_off, int conservative)
{
    struct mt_queue q = {0};
    int rc = -1;
    for (int64_t i = 0; i < ninit; i++) {
        int64_t ti = conservative ? -1 : init_type[i];
        if (init_node[i] < 0 || init_node[i] >= h->n || ti >= t->n)
            goto out;
        if (visit(h, t, o, &q, init_node[i], ti, init_off[i]))
            goto out;
    }
    if (run_queue(h, t, o, &q, 0, NULL, NULL, 0, 0))
        goto out;
    /* Phases 2 and 3 queue their nodes a block at a time (the closure of each
     * block drained before the next), so the queue never holds every node.
     * The same nodes are scanned from the same bytes as with everything queued
     * first: phase 1 queues none conservatively, the closure queues only nodes
     * with neither type nor ST_CQUEUED, and a node it queued is skipped here. */
    for (int64_t d0 = 0; d0 < h->n; d0 += EMIT_BLOCK) {
        int64_t d1 = d0 + EMIT_BLOCK < h->n ? d0 + EMIT_BLOCK : h->n;
        for (int64_t d = d0; d < d1; d++) {
            uint8_t s = h->state[d];
            if (s & ST_CQUEUED)
                continue;
            uint64_t from = cons_from(h, t, d);
            /* ambiguous, reached untyped only, or typed with a tail its type does not describe */
            if ((s & ST_AMBIG) || ((s & ST_UNKNOWN) && !(s & (ST_TYPED | ST_SCALAR)))
                || ((s & (ST_TYPED | ST_SCALAR)) && from + 8 <= h->size[d])) {
                h->state[d] |= ST_CQUEUED;
                if (q_push_from(&q, h, d, SCAN_QCONS, from))
                    goto out;
            }
        }
        if (run_queue(h, t, o, &q, 0, NULL, NULL, 0, 1))
            goto out;
    }
    for (int64_t d0 = 0; d0 < h->n; d0 += EMIT_BLOCK) {
        int64_t d1 = d0 + EMIT_BLOCK < h->n ? d0 + EMIT_BLOCK : h->n;
        for (int64_t d = d0; d < d1; d++)
            if (!(h->state[d] & ST_REACHED) && q_push(&q, h, d, SCAN_QUNREACHED))
                goto out;
        if (run_queue(h, t, o, &q, 0, NULL, NULL, 0, 0))
            goto out;
    }
    rc = 0;
out:
    o->counters[6] = q.cap ? ((size_t)q.cap * sizeof *q.v < BIG_MIN ? BIG_MIN : (size_t)q.cap * sizeof *q.v) : 0;
    big_free(q.v, (size_t)q.cap * sizeof *q.v);
    if (rc)
        o->counters[5]++;
    return rc;
}

/* Sort one node's few edges by offset (already ascending but for strided
 * slot runs that interleave). */
static void sort_run(struct mt_edge *e, int64_t lo, int64_t hi)
{
    for (int64_t i = lo + 1; i < hi; i++) {
        struct mt_edge x = e[i];
        int64_t j = i - 1;
        while (j >= lo && e[j].src_off > x.src_off) {
            e[j + 1] = e[j];
            j--;
        }
        e[j + 1] = x;
    }
}

/* One node's edges [lo, hi): its typed-scan edges (sorted here), then the
 * edges of its conservative scan (ascending), merged by offset, typed first
 * on a tie.  Returns -1 when out of memory. */
static int order_node(struct mt_edge *e, int64_t lo, int64_t hi)
{
    int64_t mid = lo;
    while (mid < hi && (e[mid].flags & EDGE_TYPEDSCAN))
        mid++;
    sort_run(e, lo, mid);
    if (mid == lo || mid == hi || e[mid - 1].src_off <= e[mid].src_off)
        return 0;
    struct mt_edge *tmp = malloc((size_t)(mid - lo) * sizeof *tmp);
    if (!tmp)
        return -1;
    memcpy(tmp, &e[lo], (size_t)(mid - lo) * sizeof *tmp);
    int64_t a = 0, na = mid - lo, b = mid, w = lo;
    while (a < na && b < hi)
        e[w++] = tmp[a].src_off <= e[b].src_off ? tmp[a++] : e[b++];
    while (a < na)
        e[w++] = tmp[a++];
    free(tmp);
    return 0;
}

/* The second pass: every scan the marking made, node by node in address
 * order, its edges written to out (cap of them: o->nedges from mt_mark) in
 * canonical order (src, src_off).  A node typed was scanned typed; one
 * queued conservatively (ST_CQUEUED) was scanned so; an unreached one by
 * the leak scan.  The same words and the same lookups give the same edges
 * as the marking counted.  select (NULL: every node) picks the nodes whose
 * edges are made; out NULL only counts them.  Returns the number written
 * (counted), or -1 when out of memory. */
int64_t mt_edges(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                 const uint8_t *select, struct mt_edge *out, int64_t cap)
{
    struct mt_queue q = {0};
    uint64_t saved[8];
    memcpy(saved, o->counters, sizeof saved);        /* the words were counted by the marking */
    int64_t k = 0, rc = -1;
    for (int64_t d0 = 0; d0 < h->n; d0 += EMIT_BLOCK) {
        int64_t d1 = d0 + EMIT_BLOCK < h->n ? d0 + EMIT_BLOCK : h->n;
        q.head = q.tail = 0;
        for (int64_t d = d0; d < d1; d++) {
            if (select && !select[d])
                continue;
            uint8_t s = h->state[d];
            if ((s & ST_TYPED) && q_push(&q, h, d, h->type[d]))
                goto out;
            if ((s & ST_CQUEUED) && q_push_from(&q, h, d, SCAN_QCONS, cons_from(h, t, d)))
                goto out;
            if (!(s & ST_REACHED) && q_push(&q, h, d, SCAN_QUNREACHED))
                goto out;
        }
        int64_t k0 = k;
        if (run_queue(h, t, o, &q, 1, out, &k, cap, 0))
            goto out;
        for (int64_t lo = k0; out && lo < k;) {
            int64_t hi = lo + 1;
            while (hi < k && out[hi].src == out[lo].src)
                hi++;
            if (order_node(out, lo, hi))
                goto out;
            lo = hi;
        }
    }
    rc = k;
out:
    big_free(q.v, (size_t)q.cap * sizeof *q.v);
    memcpy(o->counters, saved, sizeof saved);
    return rc;
}

/* glibc chunk chain (mappedtrace.heap.glibc._walk_words): from word *pos,
 * record each header's word offset and size field (raw) and step by the size (in words,
 * flag bits dropped) while *pos < lim; stop at a size below 4 words (below
 * MINSIZE: corrupt, or a fence post) or when the header's size word is not
 * inside the nw words.  Each step advances at least 4 words, so at most
 * (lim - *pos) / 4 + 1 offsets are written (cap bounds it too).  Returns
 * the count; *pos is where the walk stopped. */
int64_t mt_chain(const uint64_t *w, int64_t nw, int64_t *pos, int64_t lim, int64_t *out, uint64_t *raw,
                 int64_t cap)
{
    int64_t o = *pos, k = 0;
    while (o < lim && k < cap) {
        if (o < 0 || o + 1 >= nw)
            break;
        out[k] = o;
        raw[k++] = w[o + 1];
        uint64_t s = w[o + 1] >> 3;
        if (s < 4)
            break;
        if (s > (uint64_t)(INT64_MAX / 2))
            s = INT64_MAX / 2;           /* past any segment: the caller reports the bad size */
        o += (int64_t)s;
    }
    *pos = o;
    return k;
}


/* ---- graph kernels of mappedtrace.analyses.dominators ------------------------
 *
 * mt_csr: successor lists (CSR) of a graph given as edge arrays, by counting
 * sort (O(n + m), edges of a vertex in input order).  mt_reach: the vertices
 * reachable from some starts (iterative DFS).  mt_dominators: immediate
 * dominators from a root by SNCA (L. Georgiadis, "Linear-Time Algorithms for
 * Dominators and Related Problems", PhD thesis, Princeton 2005, §3.3: the
 * semidominators of Lengauer-Tarjan with simple path compression, then the
 * idom of each vertex as the nearest common ancestor rule
 * idom(w) = the first ancestor of parent(w) in the tree whose number is at
 * most sdom(w)).  O(m log n); every array is indexed by bounded numbers, and
 * every loop ends (DFS pushes each vertex once; compression walks ancestors
 * whose preorder numbers strictly decrease).
 */
int mt_csr(int64_t n, int64_t m, const int64_t *src, const int64_t *dst, int64_t *ptr, int64_t *adj)
{
    for (int64_t v = 0; v <= n; v++)
        ptr[v] = 0;
    for (int64_t e = 0; e < m; e++) {
        if (src[e] < 0 || src[e] >= n || dst[e] < 0 || dst[e] >= n)
            return -1;
        ptr[src[e] + 1]++;
    }
    for (int64_t v = 0; v < n; v++)
        ptr[v + 1] += ptr[v];
    int64_t *fill = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!fill)
        return -2;
    for (int64_t v = 0; v < n; v++)
        fill[v] = ptr[v];
    for (int64_t e = 0; e < m; e++)
        adj[fill[src[e]]++] = dst[e];
    free(fill);
    return 0;
}

int64_t mt_reach(int64_t n, const int64_t *ptr, const int64_t *adj, int64_t nstart, const int64_t *starts,
                 uint8_t *seen)
{
    int64_t *stack = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!stack)
        return -2;
    int64_t sp = 0, count = 0;
    for (int64_t v = 0; v < n; v++)
        seen[v] = 0;
    for (int64_t i = 0; i < nstart; i++) {
        int64_t s = starts[i];
        if (s < 0 || s >= n || seen[s])
            continue;
        seen[s] = 1;
        count++;
        stack[sp++] = s;
        while (sp) {
            int64_t v = stack[--sp];
            for (int64_t k = ptr[v]; k < ptr[v + 1]; k++) {
                int64_t w = adj[k];
                if (!seen[w]) {
                    seen[w] = 1;
                    count++;
                    stack[sp++] = w;       /* each vertex once: sp <= n */
                }
            }
        }
    }
    free(stack);
    return count;
}

/* idom[v]: the immediate dominator of v (-1 for the root and for vertices the
 * root does not reach).  Returns the number of vertices reached, < 0 on error. */
int64_t mt_dominators(int64_t n, const int64_t *ptr, const int64_t *adj, int64_t root, int64_t *idom)
{
    if (root < 0 || root >= n)
        return -1;
    int64_t m = ptr[n];
    size_t sz = sizeof(int64_t) * (size_t)(n > 0 ? n : 1);
    int64_t *pre = malloc(sz), *vert = malloc(sz), *parent = malloc(sz), *semi = malloc(sz);
    int64_t *label = malloc(sz), *anc = malloc(sz), *stack = malloc(sz), *it = malloc(sz);
    int64_t *rptr = malloc(sizeof(int64_t) * (size_t)(n + 1)), *radj = malloc(sizeof(int64_t) * (size_t)(m > 0 ? m : 1));
    int64_t count = 0;
    if (!pre || !vert || !parent || !semi || !label || !anc || !stack || !it || !rptr || !radj) {
        count = -2;
        goto out;
    }
    /* predecessors */
    for (int64_t v = 0; v <= n; v++)
        rptr[v] = 0;
    for (int64_t e = 0; e < m; e++)
        rptr[adj[e] + 1]++;
    for (int64_t v = 0; v < n; v++)
        rptr[v + 1] += rptr[v];
    for (int64_t v = 0; v < n; v++)
        it[v] = rptr[v];
    for (int64_t v = 0; v < n; v++)
        for (int64_t k = ptr[v]; k < ptr[v + 1]; k++)
            radj[it[adj[k]]++] = v;
    /* iterative DFS: preorder numbers, tree parents (as numbers) */
    for (int64_t v = 0; v < n; v++) {
        pre[v] = -1;
        idom[v] = -1;
    }
    int64_t sp = 0;
    pre[root] = 0;
    vert[0] = root;
    parent[0] = -1;
    count = 1;
    stack[sp++] = root;
    it[root] = ptr[root];
    while (sp) {
        int64_t v = stack[sp - 1];
        if (it[v] < ptr[v + 1]) {
            int64_t w = adj[it[v]++];
            if (pre[w] < 0) {
                pre[w] = count;
                vert[count] = w;
                parent[count] = pre[v];
                count++;
                it[w] = ptr[w];
                stack[sp++] = w;
            }
        } else {
            sp--;
        }
    }
    for (int64_t i = 0; i < count; i++) {
        semi[i] = i;
        label[i] = i;
        anc[i] = -1;
    }
    /* semidominators, in decreasing preorder */
    for (int64_t i = count - 1; i > 0; i--) {
        int64_t w = vert[i];
        for (int64_t k = rptr[w]; k < rptr[w + 1]; k++) {
            int64_t u = pre[radj[k]];
            if (u < 0)
                continue;                  /* a predecessor the root does not reach */
            /* eval(u): the vertex of least semi on u's compressed ancestor path */
            int64_t e = u;
            if (anc[u] >= 0) {
                int64_t top = 0;
                int64_t x = u;
                while (anc[anc[x]] >= 0) { /* collect the path to compress */
                    stack[top++] = x;
                    x = anc[x];
                }
                while (top) {
                    int64_t y = stack[--top];
                    if (semi[label[anc[y]]] < semi[label[y]])
                        label[y] = label[anc[y]];
                    anc[y] = anc[anc[y]];
                }
                e = label[u];
            }
            if (semi[e] < semi[i])
                semi[i] = semi[e];
        }
        anc[i] = parent[i];                /* link */
    }
    /* idom by the NCA rule, in increasing preorder (parents first) */
    it[0] = -1;
    for (int64_t i = 1; i < count; i++) {
        int64_t d = parent[i];
        while (d > semi[i])
            d = it[d];
        it[i] = d;
        idom[vert[i]] = vert[d];
    }
out:
    free(pre); free(vert); free(parent); free(semi); free(label); free(anc); free(stack); free(it);
    free(rptr); free(radj);
    return count;
}

/* Sum of weight over each vertex's subtree in the forest parent (parent[v] < 0:
 * a tree root), in one pass from the leaves up (Kahn's order: a vertex is added
 * to its parent once all its children are): O(n), where pointer doubling in
 * numpy took a round over every vertex per doubling of the depth (22 rounds for
 * a 4 M-node list).  out may alias nothing.  Returns the number of vertices
 * summed (n for a forest; fewer when parent has a cycle, whose vertices are
 * left with their own weight), < 0 on error. */
int64_t mt_subtree_sums(int64_t n, const int64_t *parent, const uint64_t *weight, uint64_t *out)
{
    int64_t *kids = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    int64_t *stack = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    int64_t done = -2, sp = 0;
    if (!kids || !stack)
        goto out;
    for (int64_t v = 0; v < n; v++) {
        if (parent[v] >= n) {
            done = -1;
            goto out;
        }
        out[v] = weight[v];
        if (parent[v] >= 0)
            kids[parent[v]]++;
    }
    for (int64_t v = 0; v < n; v++)
        if (kids[v] == 0)
            stack[sp++] = v;
    done = 0;
    while (sp) {                        /* each vertex is pushed once: sp <= n */
        int64_t v = stack[--sp];
        done++;
        int64_t p = parent[v];
        if (p >= 0) {
            out[p] += out[v];
            if (--kids[p] == 0)
                stack[sp++] = p;
        }
    }
out:
    free(kids);
    free(stack);
    return done;
}

/* Sum of weight over each vertex and its ancestors in the forest parent, and
 * the tree root of each vertex (root may be NULL): parents before children, in
 * the reverse of the leaves-up order of mt_subtree_sums.  O(n).  Returns the
 * number of vertices done (n for a forest), < 0 on error. */
int64_t mt_path_sums(int64_t n, const int64_t *parent, const int64_t *weight, int64_t *out, int64_t *root)
{
    size_t sz = sizeof(int64_t) * (size_t)(n > 0 ? n : 1);
    int64_t *kids = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    int64_t *order = malloc(sz), *stack = malloc(sz);
    int64_t done = -2, sp = 0, k = 0;
    if (!kids || !order || !stack)
        goto out;
    for (int64_t v = 0; v < n; v++) {
        if (parent[v] >= n) {
            done = -1;
            goto out;
        }
        if (parent[v] >= 0)
            kids[parent[v]]++;
    }
    for (int64_t v = 0; v < n; v++)
        if (kids[v] == 0)
            stack[sp++] = v;
    while (sp) {                        /* each vertex is pushed once: sp, k <= n */
        int64_t v = stack[--sp];
        order[k++] = v;
        int64_t p = parent[v];
        if (p >= 0 && --kids[p] == 0)
            stack[sp++] = p;
    }
    for (int64_t i = k - 1; i >= 0; i--) {      /* parents before their children */
        int64_t v = order[i], p = parent[v];
        out[v] = weight[v] + (p >= 0 ? out[p] : 0);
        if (root)
            root[v] = p >= 0 ? root[p] : v;
    }
    done = k;
out:
    free(kids);
    free(order);
    free(stack);
    return done;
}
