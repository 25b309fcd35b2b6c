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
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* node state bits (mirror of trace.py ST_*) */
#define ST_REACHED   0x01u
#define ST_TYPED     0x02u   /* typed by a pointer at an element offset */
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

struct mt_heap {
    int64_t n;                 /* chunks, sorted by start, not overlapping */
    const uint64_t *starts;
    const uint64_t *sizes;     /* usable bytes */
    const uint64_t *cptr;      /* address of the chunk's bytes in this process, 0 unreadable */
    const uint64_t *rng;       /* start, size of chunk i at rng[2i], rng[2i+1]: one cache line per probe */
    /* lookup index: the chunks form nseg segments (runs of nearly contiguous
     * chunks, sorted); segment s covers [seg_lo[s], seg_hi[s]) and chunks
     * seg_first[s] .. seg_last[s]-1; it has seg_nb[s] buckets of 1 << seg_shift[s]
     * bytes at bucket[seg_boff[s]...]: the index of the last chunk starting at or
     * before the bucket's first address (or seg_first[s]) */
    uint64_t lo, hi;
    int64_t nseg;
    const uint64_t *seg_lo, *seg_hi;
    const int64_t *seg_first, *seg_last, *seg_boff, *seg_nb;
    const uint32_t *seg_shift;
    const int64_t *bucket;
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
    const uint64_t *s_off;
    const uint64_t *s_count;
    const uint64_t *s_stride;
    const int64_t *s_target;   /* type index, -1 unknown */
    const uint32_t *s_flags;
};

struct mt_out {
    uint8_t *state;            /* per node */
    int64_t *type;             /* per node: type index of ST_TYPED, else -1 */
    int64_t *scalar_type;      /* per node: type index of ST_SCALAR, else -1 */
    struct mt_edge *edges;     /* malloc'ed, grown; free with mt_free */
    int64_t nedges, capedges;
    uint64_t counters[8];      /* 0 dangling, 1 static, 2 typed words, 3 conservative words,
                                  4 unreadable chunks, 5 out of memory */
};

struct mt_queue { int64_t *v; int64_t head, tail, cap; };

static int q_push(struct mt_queue *q, int64_t x)
{
    if (q->tail == q->cap) {
        int64_t cap = q->cap ? q->cap * 2 : 1024;
        int64_t *v = realloc(q->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        q->v = v;
        q->cap = cap;
    }
    q->v[q->tail++] = x;
    return 0;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
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

int64_t mt_find(const struct mt_heap *h, uint64_t v)
{
    if (h->n == 0 || v < h->lo || v >= h->hi)
        return -1;
    int64_t a = 0, b = h->nseg;          /* first segment with hi > v */
    while (a < b) {
        int64_t m = (a + b) / 2;
        if (h->seg_hi[m] <= v)
            a = m + 1;
        else
            b = m;
    }
    if (a >= h->nseg || v < h->seg_lo[a])
        return -1;
    int64_t s = a;
    int64_t bk = (int64_t)((v - h->seg_lo[s]) >> h->seg_shift[s]);
    if (bk >= h->seg_nb[s])
        bk = h->seg_nb[s] - 1;
    int64_t lo = h->bucket[h->seg_boff[s] + bk];
    int64_t z = bk + 1 < h->seg_nb[s] ? h->bucket[h->seg_boff[s] + bk + 1] : h->seg_last[s] - 1;
    int64_t hi = z + 1;                  /* last chunk in [lo, z] with start <= v */
    const uint64_t *r = h->rng;
    while (lo < hi) {
        int64_t m = (lo + hi) / 2;
        if (r[2 * m] <= v)
            lo = m + 1;
        else
            hi = m;
    }
    int64_t i = lo - 1;
    if (i < h->seg_first[s] || v - r[2 * i] >= r[2 * i + 1])
        return -1;
    return i;
}

/* Prefetch distance (queue entries) for the software pipeline of the FIFO
 * loops: cptr[] at 2*PD, the object's first line at PD, and the bucket of
 * the object's first slot words at PD/2.  Marking is bound by cache misses on
 * a big heap (one random object, bucket and range per edge); Boehm GC
 * prefetches grey objects the same way. */
#define PD 16

static inline void prefetch_bucket(const struct mt_heap *h, uint64_t v)
{
    if (v < h->lo || v >= h->hi)
        return;
    int64_t a = 0, b = h->nseg;
    while (a < b) {
        int64_t m = (a + b) / 2;
        if (h->seg_hi[m] <= v)
            a = m + 1;
        else
            b = m;
    }
    if (a >= h->nseg || v < h->seg_lo[a])
        return;
    int64_t bk = (int64_t)((v - h->seg_lo[a]) >> h->seg_shift[a]);
    if (bk < h->seg_nb[a])
        __builtin_prefetch(&h->bucket[h->seg_boff[a] + bk]);
}

static inline void prefetch_ahead(const struct mt_heap *h, const struct mt_types *t,
                                  const struct mt_out *o, const struct mt_queue *q, int typed)
{
    int64_t i = q->head;
    if (i + 2 * PD < q->tail) {
        int64_t d = q->v[i + 2 * PD];
        __builtin_prefetch(&h->cptr[d]);
        if (typed)
            __builtin_prefetch(&o->type[d]);
    }
    if (i + PD < q->tail) {
        int64_t d = q->v[i + PD];
        if (h->cptr[d])
            __builtin_prefetch((const void *)(uintptr_t)h->cptr[d]);
    }
    if (i + PD / 2 < q->tail) {
        int64_t d = q->v[i + PD / 2];
        if (!h->cptr[d])
            return;
        const uint8_t *p = (const uint8_t *)(uintptr_t)h->cptr[d];
        if (!typed) {
            if (h->sizes[d] >= 16) {
                prefetch_bucket(h, load64(p));
                prefetch_bucket(h, load64(p + 8));
            }
            return;
        }
        int64_t ti = o->type[d];
        for (int64_t s = t->slot_lo[ti], k = 0; s < t->slot_hi[ti] && k < 2; s++, k++)
            if (t->s_off[s] + 8 <= h->sizes[d])
                prefetch_bucket(h, load64(p + t->s_off[s]));
    }
}

static int emit(struct mt_out *o, int64_t src, uint64_t soff, int64_t dst, uint64_t doff, uint32_t fl)
{
    if (o->nedges == o->capedges) {
        int64_t cap = o->capedges ? o->capedges * 2 : 4096;
        struct mt_edge *e = realloc(o->edges, (size_t)cap * sizeof *e);
        if (!e) {
            o->counters[5]++;
            return -1;
        }
        o->edges = e;
        o->capedges = cap;
    }
    struct mt_edge *e = &o->edges[o->nedges++];
    e->src = src;
    e->dst = dst;
    e->src_off = soff;
    e->dst_off = doff;
    e->flags = fl;
    e->pad = 0;
    return 0;
}

/* The visit rule (trace.py "Typing rule"). Returns -1 on out of memory. */
static int visit(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                 struct mt_queue *q, int64_t d, int64_t ti, uint64_t doff)
{
    uint8_t *st = &o->state[d];
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
            o->scalar_type[d] = ti;
        }
        return 0;
    }
    uint64_t tsz = t->size[ti];
    int aligned = doff == 0 ||
        (tsz > 0 && !(t->flags[ti] & TYPE_FLEX) && doff % tsz == 0 && h->sizes[d] >= 2 * tsz);
    if (!aligned) {
        *st |= ST_UNKNOWN;
        return 0;
    }
    if (*st & ST_TYPED) {
        if (o->type[d] != ti)
            *st |= ST_AMBIG;
        return 0;
    }
    *st |= ST_TYPED;
    o->type[d] = ti;
    return q_push(q, d);
}

static int handle(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                  struct mt_queue *q, int64_t src, uint64_t off, uint64_t v,
                  int64_t target, uint32_t sfl)
{
    int64_t d = mt_find(h, v);
    if (d >= 0) {
        uint32_t fl = EDGE_TYPEDSCAN;
        if (!(sfl & SLOT_CONSERVATIVE))
            fl |= EDGE_EXACT;
        if (sfl & SLOT_WEAK)
            fl |= EDGE_WEAK;
        if (emit(o, src, off, d, v - h->starts[d], fl))
            return -1;
        if (sfl & SLOT_WEAK)     /* followed for the graph, but keeps nothing alive */
            return 0;
        if (sfl & (SLOT_UNTYPED | SLOT_CONSERVATIVE))
            target = -1;
        return visit(h, t, o, q, d, target, v - h->starts[d]);
    }
    if (!(sfl & SLOT_CONSERVATIVE)) {
        if (in_ranges(h->heapmaps, h->nheapmaps, v) || !in_ranges(h->maps, h->nmaps, v))
            o->counters[0]++;
        else
            o->counters[1]++;
    }
    return 0;
}

/* The slots of type ti laid at byte base of node d, bounded by limit. */
static int scan_slots(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                      struct mt_queue *q, int64_t d, const uint8_t *p, int64_t ti,
                      uint64_t base, uint64_t limit)
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
            uint64_t v = load64(p + off);
            if (v && handle(h, t, o, q, d, off, v, t->s_target[s], sfl))
                return -1;
        }
    }
    return 0;
}

static int scan_typed(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                      struct mt_queue *q, int64_t d, int64_t ti)
{
    uint64_t size = h->sizes[d], tsz = t->size[ti];
    if (!h->cptr[d])
        return 0;
    const uint8_t *p = (const uint8_t *)(uintptr_t)h->cptr[d];
    if (t->flags[ti] & TYPE_FLEX) {
        if (scan_slots(h, t, o, q, d, p, ti, 0, size))
            return -1;
        int64_t e = t->elem[ti];
        if (e >= 0 && t->size[e] > 0)
            for (uint64_t off = t->flex_off[ti]; off + t->size[e] <= size; off += t->size[e])
                if (scan_slots(h, t, o, q, d, p, e, off, size))
                    return -1;
        return 0;
    }
    uint64_t nel = tsz ? size / tsz : 1;
    if (nel < 1)
        nel = 1;
    for (uint64_t k = 0; k < nel; k++)
        if (scan_slots(h, t, o, q, d, p, ti, k * tsz, size))
            return -1;
    return 0;
}

static int scan_cons(const struct mt_heap *h, struct mt_out *o, struct mt_queue *q,
                     int64_t d, uint32_t extra, int reach)
{
    if (!h->cptr[d])
        return 0;
    const uint8_t *p = (const uint8_t *)(uintptr_t)h->cptr[d];
    uint64_t size = h->sizes[d];
    for (uint64_t off = 0; off + 8 <= size; off += 8) {
        uint64_t v = load64(p + off);
        if (v < h->lo || v >= h->hi)
            continue;
        int64_t c = mt_find(h, v);
        if (c < 0)
            continue;
        if (emit(o, d, off, c, v - h->starts[c], extra))
            return -1;
        if (!reach)
            continue;
        uint8_t *st = &o->state[c];
        *st |= ST_REACHED | ST_UNKNOWN;
        if (!(*st & (ST_TYPED | ST_SCALAR | ST_CQUEUED))) {
            *st |= ST_CQUEUED;
            if (q_push(q, c))
                return -1;
        }
    }
    o->counters[3] += size / 8;
    return 0;
}

/* Mark.  Phase 1: visit the typed root pointers in order, then scan typed
 * nodes in FIFO order.  Phase 2: conservative closure from every node that is
 * reached but has no pointer-free/typed layout, and from ambiguous nodes.
 * Phase 3 (leak scan): every in-use chunk left unreached is scanned
 * conservatively, its edges flagged EDGE_UNREACHED, reaching nothing.
 * Returns 0, or -1 when out of memory (counters[5]). */
int mt_mark(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
            int64_t ninit, const int64_t *init_node, const int64_t *init_type,
            const uint64_t *init_off, int conservative)
{
    struct mt_queue q = {0};
    int rc = -1;
    for (int64_t i = 0; i < ninit; i++) {
        int64_t ti = conservative ? -1 : init_type[i];
        if (visit(h, t, o, &q, init_node[i], ti, init_off[i]))
            goto out;
    }
    while (q.head < q.tail) {
        prefetch_ahead(h, t, o, &q, 1);
        int64_t d = q.v[q.head++];
        if (scan_typed(h, t, o, &q, d, o->type[d]))
            goto out;
    }
    q.head = q.tail = 0;
    for (int64_t d = 0; d < h->n; d++) {
        uint8_t s = o->state[d];
        if ((s & ST_AMBIG) || ((s & ST_UNKNOWN) && !(s & (ST_TYPED | ST_SCALAR)))) {
            o->state[d] |= ST_CQUEUED;
            if (q_push(&q, d))
                goto out;
        }
    }
    while (q.head < q.tail) {
        prefetch_ahead(h, t, o, &q, 0);
        int64_t d = q.v[q.head++];
        if (scan_cons(h, o, &q, d, 0, 1))
            goto out;
    }
    for (int64_t d = 0; d < h->n; d++)
        if (!(o->state[d] & ST_REACHED) && scan_cons(h, o, &q, d, EDGE_UNREACHED, 0))
            goto out;
    rc = 0;
out:
    free(q.v);
    if (rc)
        o->counters[5]++;
    return rc;
}

/* Edges in canonical order, (src, src_off), into out: a counting sort by src
 * (stable: a node's edges were emitted together), then an insertion sort of
 * each node's few edges by offset (already ascending but for strided slot
 * runs that interleave).  O(E + nodes).  Returns -1 when out of memory. */
int mt_sort_edges(const struct mt_edge *e, int64_t n, int64_t nnodes, struct mt_edge *out)
{
    int64_t *pos = calloc((size_t)nnodes + 1, sizeof *pos);
    if (!pos)
        return -1;
    for (int64_t i = 0; i < n; i++)
        pos[e[i].src + 1]++;
    for (int64_t d = 0; d < nnodes; d++)
        pos[d + 1] += pos[d];
    for (int64_t i = 0; i < n; i++)
        out[pos[e[i].src]++] = e[i];
    int64_t lo = 0;
    for (int64_t d = 0; d < nnodes; d++) {
        int64_t hi = pos[d];
        for (int64_t i = lo + 1; i < hi; i++) {
            struct mt_edge x = out[i];
            int64_t j = i - 1;
            while (j >= lo && out[j].src_off > x.src_off) {
                out[j + 1] = out[j];
                j--;
            }
            out[j + 1] = x;
        }
        lo = hi;
    }
    free(pos);
    return 0;
}

void mt_free(void *p)
{
    free(p);
}
