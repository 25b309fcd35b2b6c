"""The C kernel and the numpy marker agree, on generated heaps; bad input gives typed errors.

The heaps are generated in memory and read through a real
:class:`~mappedtrace.target.base.Target` backend over bytes (the marker's
input), with every feature mixed in: arrays, FLEX, unions, untyped and
function and weak slots, interior and dangling pointers, several segments.
"""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from mappedtrace.analyses.leaks import find_leaks
from mappedtrace.errors import BadData, MappedTraceError, TargetFault
from mappedtrace.roots import Root
from mappedtrace.target.base import Mapping, Target

from conftest import need


def c_mark(*args, **kw):
    """mark() with the C kernel; skips only on a host without a C compiler."""
    need("cc")
    return mark(*args, kernel="c", **kw)
from mappedtrace.trace import mark

from test_trace_helpers import C, S, T
from test_trace_structs import assert_same_graph

NODE, PAIR, PAIRP, FLEXT, HOLD, CHAR, GLOB = 1, 2, 3, 4, 5, 6, 7
UNTYPED, FUNCTION, CONS, WEAK = 1, 2, 4, 8

TYPES = {t.id: t for t in [
    T(NODE, "struct node", 16, "struct", 0, (S(8, NODE),)),
    T(PAIR, "struct pair", 32, "struct", 1, (S(0, NODE), S(8, PAIR), S(16, NODE, flags=CONS),
                                              S(24, 0, flags=FUNCTION))),
    T(PAIRP, "struct pair*", 8, "pointer", 0, (S(0, PAIR),)),
    T(FLEXT, "struct flex[]", 16, "struct", 2, (S(8, NODE, flags=WEAK),), PAIRP, 16),
    T(HOLD, "struct hold", 48, "struct", 0, (S(0, 0, flags=UNTYPED), S(8, CHAR, 4, 8),
                                             S(40, HOLD))),
    T(CHAR, "char", 1, "scalar"),
    T(GLOB, "struct globals", 64, "struct", 0, (S(0, NODE), S(8, PAIR), S(16, PAIRP), S(24, FLEXT),
                                                S(32, HOLD), S(40, CHAR, flags=UNTYPED), S(48, NODE, 2, 8))),
]}


class MemTarget(Target):
    """A target over in-memory regions {start: bytes}."""

    def __init__(self, regions: dict[int, bytes | bytearray]):
        super().__init__(pid=None)
        self.regions = {a: bytes(b) for a, b in regions.items()}
        self.mappings = [Mapping(a, a + len(b), "rw-p") for a, b in sorted(self.regions.items())]
        self.unreadable: set[int] = set()

    def _read(self, addr: int, size: int) -> bytes:
        for a, b in self.regions.items():
            if a <= addr and addr + size <= a + len(b):
                for u in self.unreadable:
                    if addr <= u < addr + size:
                        raise TargetFault(addr, size)
                return b[addr - a:addr - a + size]
        raise TargetFault(addr, size)


def gen_heap(seed: int, n: int = 600):
    rnd = random.Random(seed)
    base, glob, static = 0x10000000, 0x600000, 0x700000
    chunks, addr = [], base
    for i in range(n):
        size = rnd.choice([24, 24, 40, 40, 56, 72, 104, 136])
        if rnd.random() < 0.01:
            addr += 0x20000           # a new segment
        chunks.append((addr, size))
        addr += size + 8 if (size + 8) % 16 == 0 else size + 8 + 8
        addr = (addr + 15) & ~15
    free = set(rnd.sample(range(n), n // 10))
    live = [c for i, c in enumerate(chunks) if i not in free]
    end = chunks[-1][0] + chunks[-1][1] + 64
    mem = bytearray(end - base)

    def rptr():
        r = rnd.random()
        a, s = rnd.choice(chunks)
        if r < 0.70:
            return a
        if r < 0.85:
            return a + rnd.randrange(0, s, 8)
        if r < 0.90:
            return static + 8 * rnd.randrange(16)
        if r < 0.95:
            return 0xdead0000 + rnd.randrange(1000)
        return rnd.randrange(1 << 20)

    for a, s in chunks:
        for off in range(0, s, 8):
            v = rptr() if rnd.random() < 0.45 else (0 if rnd.random() < 0.5 else rnd.randrange(1 << 16))
            struct.pack_into("<Q", mem, a - base + off, v)
    g = bytearray(64)
    for off in range(0, 64, 8):
        struct.pack_into("<Q", g, off, rnd.choice(live)[0] if rnd.random() < 0.8 else rptr())
    regions = {base: mem, glob: g, static: bytes(128)}
    roots = [Root("range", glob, 64, GLOB, True, "global globals")]
    for k in range(40):
        a, _ = rnd.choice(live)
        roots.append(Root("value", a + rnd.choice([0, 0, 8]), 8, rnd.choice([0, NODE, PAIR, HOLD, CHAR]),
                          rnd.random() < 0.8, f"thread 1 #{k} f rbx"))
    stackbuf = bytearray(256)
    for off in range(0, 256, 8):
        if rnd.random() < 0.2:
            struct.pack_into("<Q", stackbuf, off, rnd.choice(live)[0])
    regions[0x7ff000] = stackbuf
    roots.append(Root("range", 0x7ff000, 256, 0, False, "thread 1 #9 ? stack"))
    return MemTarget(regions), [C(a, s) for a, s in live] + [C(chunks[i][0], chunks[i][1], "free") for i in free], roots


@pytest.mark.parametrize("seed", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_c_and_numpy_identical(seed, mode):
    t, chunks, roots = gen_heap(seed)
    a = c_mark(t, chunks, roots, TYPES, mode=mode)
    b = mark(t, chunks, roots, TYPES, mode=mode, kernel="numpy")
    assert_same_graph(a, b)
    assert find_leaks(a).to_dict()["leaks"] == find_leaks(b).to_dict()["leaks"]
    p = a.precision
    assert p.objects == len([c for c in chunks if c.state == "in-use"])
    assert 0 < p.objects_reached < p.objects
    if mode == "precise":
        assert p.objects_typed > 0 and p.edges_exact > 0 and p.dangling_pointers > 0
        assert p.heap_bytes_tail > 0
    else:
        assert p.objects_typed == 0 and p.edges_exact == 0


@pytest.mark.parametrize("seed", [1, 7])
def test_precise_reaches_no_more_than_conservative(seed):
    t, chunks, roots = gen_heap(seed)
    pr = mark(t, chunks, roots, TYPES, mode="precise")
    co = mark(t, chunks, roots, TYPES, mode="conservative")
    assert not np.any(pr.reached & ~co.reached)


def _small(words_by_chunk: dict[int, list[int]], base=0x1000):
    regions = {}
    mem = bytearray(0x1000)
    for a, ws in words_by_chunk.items():
        for i, w in enumerate(ws):
            struct.pack_into("<Q", mem, a - base + 8 * i, w)
    regions[base] = mem
    return MemTarget(regions)


RAW = 8
#: a radix-tree node (Redis rax.c): a 4-byte header, then `unsigned char data[]`
RAW_T = T(RAW, "struct raxNode", 4, "struct", 2, (), CHAR, 4)


@pytest.mark.parametrize("kernel", ["c", "numpy"])
def test_array_flex_tail_and_weak_rules(kernel):
    """What a type decides (trace.py "Sound typing"): its own words; the rest
    of a chunk (its tail, even after a type whose every word is a pointer
    slot) is scanned conservatively."""
    B = 0x1000
    n1, n2, n3, x, p1, p2, p3, rc = (B + 0x200, B + 0x220, B + 0x240, B + 0x280, B + 0x300, B + 0x340,
                                     B + 0x380, B + 0x3c0)
    t = _small({B + 0x10: [x, n1, 0, 0, 0, 0, n2],     # struct node + 40 bytes: word 6 (tail) holds n2
                B + 0x100: [2, n3, p1, 0, 0],           # struct flex[]: weak slot -> n3, items -> p1
                B + 0x180: [p2, 0, p3, 0, 0],           # typed struct pair*: word 0 typed, the rest tail
                B + 0x400: [0x6261_0000_0002, rc, 0],  # raxNode: a child in its raw data[]
                B + 0x800: [x, 0, B + 0x440],           # a root range: struct node + 8 bytes
                p1: [0, 0, 0, 0, 0]})
    chunks = [C(B + 0x10, 56), C(B + 0x100, 40), C(B + 0x180, 40), C(n1, 24), C(n2, 24), C(n3, 24),
              C(x, 24), C(p1, 40), C(p2, 40), C(p3, 40), C(rc, 24), C(B + 0x400, 24), C(B + 0x440, 24)]
    roots = [Root("value", B + 0x10, 8, NODE, True, "r0"), Root("value", B + 0x100, 8, FLEXT, True, "r1"),
             Root("value", B + 0x180, 8, PAIRP, True, "r2"), Root("value", B + 0x400, 8, RAW, True, "r3"),
             Root("range", B + 0x800, 24, NODE, True, "r4")]
    types = {**TYPES, RAW: RAW_T}
    g = c_mark(t, chunks, roots, types) if kernel == "c" else mark(t, chunks, roots, types, kernel=kernel)
    node = {int(a): i for i, a in enumerate(g.addresses)}
    edges = {(int(e.src), e.src_off): e for e in g.iter_edges()}
    first = g.node(node[B + 0x10])
    assert (first.how, first.type_name) == ("typed", "struct node")
    assert g.node(node[n1]).type_name == "struct node" and edges[(node[B + 0x10], 8)].exact
    # the tail (malloc slack or elements of a guessed array) is scanned, not typed
    assert g.node(node[n2]).how == "conservative" and not edges[(node[B + 0x10], 48)].exact
    assert not g.node(node[x]).reached           # struct node's word 0 is a long: skipped
    # FLEX: header slots, then elements of struct pair* (every word a slot)
    assert g.node(node[p1]).type_name == "struct pair"
    assert not g.node(node[n3]).reached          # only a weak slot points to it
    weak = [e for e in g.iter_edges() if e.weak]
    assert len(weak) == 1 and weak[0].dst == node[n3]
    # a chunk typed by a pointer to pointers: its first word by type; the others may be
    # further elements or other members of a bigger struct (first_member.c): scanned, not typed
    assert g.node(node[p2]).type_name == "struct pair" and edges[(node[B + 0x180], 0)].exact
    assert g.node(node[p3]).reached and g.node(node[p3]).how == "conservative"
    assert not edges[(node[B + 0x180], 16)].exact
    # a raw flexible array: the node is pointer-free by type, its data[] is scanned
    raw = g.node(node[B + 0x400])
    assert (raw.how, raw.type_name) == ("typed", "struct raxNode")
    assert g.node(node[rc]).reached and not edges[(node[B + 0x400], 8)].exact
    # a root range bigger than its type: the rest is scanned too, not exactly
    assert g.node(node[B + 0x440]).reached
    assert [bool(e.exact) for e in g.iter_root_edges() if e.root == 4] == [False]
    p = g.precision
    # typed bytes: node 16, flex 40, pair* 8 (its first word), pairs 32 x 2 (p3 is reached
    # from the tail), nodes 16 (n1), raxNode 8 (header, aligned)
    assert p.heap_bytes_typed == 16 + 40 + 8 + 2 * 32 + 16 + 8
    # tails: node 40, pairs 8 x 2 (p1, p2; p3 is reached whole, conservatively), 8 + 16 as
    # before, and the pair* chunk's 32 bytes after its first word
    assert p.heap_bytes_tail == 40 + 2 * 8 + 8 + 16 + 32
    co = mark(t, chunks, roots, types, mode="conservative", kernel=kernel if kernel == "numpy" else "auto")
    assert co.node(node[x]).reached              # the baseline keeps what the long points to


@pytest.mark.parametrize("kernel", ["c", "numpy"])
def test_two_types_make_ambiguous(kernel):
    B = 0x1000
    t = _small({B + 0x10: [0, B + 0x100, B + 0x140, 0, 0]})
    chunks = [C(B + 0x10, 40), C(B + 0x100, 24), C(B + 0x140, 24)]
    roots = [Root("value", B + 0x10, 8, NODE, True, "r0"), Root("value", B + 0x10, 8, PAIR, True, "r1")]
    g = c_mark(t, chunks, roots, TYPES) if kernel == "c" else mark(t, chunks, roots, TYPES, kernel=kernel)
    assert g.node(0).ambiguous and g.precision.objects_ambiguous == 1
    assert g.node(1).reached and g.node(2).reached      # scanned whole, conservatively


def test_interior_pointer_is_untyped():
    B = 0x1000
    t = _small({B + 0x10: [7, B + 0x100, 0, 0, B + 0x200], B + 0x100: [0, 0], B + 0x200: [0, 0]})
    chunks = [C(B + 0x10, 40), C(B + 0x100, 24), C(B + 0x200, 24)]
    g = mark(t, chunks, [Root("value", B + 0x18, 8, NODE, True, "interior")], TYPES)
    n = g.node(0)
    assert n.how == "conservative" and n.type_id == 0
    assert g.node(1).reached and g.node(2).reached        # every word scanned


def test_bad_inputs():
    t = _small({})
    with pytest.raises(BadData, match="overlap"):
        mark(t, [C(0x1010, 40), C(0x1020, 24)], [], TYPES)
    with pytest.raises(BadData, match="aligned"):
        mark(t, [C(0x1014, 24)], [], TYPES)
    with pytest.raises(BadData, match="unknown kind"):
        mark(t, [C(0x1010, 24)], [Root("register", 0x1010, 8, 0, True, "x")], TYPES)
    with pytest.raises(MappedTraceError, match="mode"):
        mark(t, [], [], TYPES, mode="fast")
    # an unreadable chunk is reported, not fatal
    t.unreadable.add(0x1100)
    g = mark(t, [C(0x1010, 24), C(0x1100, 24)], [Root("value", 0x1100, 8, 0, True, "r")], TYPES)
    assert g.precision.unreadable_objects == 1 and g.warnings
    assert g.node(1).reached
    # a root range that cannot be read is a warning
    g = mark(t, [C(0x1010, 24)], [Root("range", 0x900000, 64, 0, False, "gone")], TYPES)
    assert any("gone" in w for w in g.warnings)
    # empty heap
    g = mark(t, [], [Root("value", 0x99990, 8, NODE, True, "r"), Root("value", 0x1238, 8, NODE, True, "s")], TYPES)
    assert len(g) == 0 and g.precision.dangling_pointers == 1 and g.precision.pointers_to_static == 1
    assert find_leaks(g).summary["leaked_objects"] == 0


def test_kernel_build_cache_and_fallback(tmp_path, monkeypatch, capfd):
    from mappedtrace import _markkernel
    t, chunks, roots = gen_heap(11, n=120)
    # a fresh cache: the kernel is built once, with a message on stderr
    monkeypatch.setenv("MAPPEDTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_markkernel, "_loaded", None)
    monkeypatch.setattr(_markkernel, "_failed", False)
    need("cc")
    mod = _markkernel.load()
    assert mod is not None, "the marking kernel did not build although a C compiler is here"
    assert "building the marking kernel" in capfd.readouterr().err
    assert list((tmp_path / "cache").glob("_mt_mark_*.so"))
    a = mark(t, chunks, roots, TYPES, kernel="auto")
    assert a.precision.kernel == "c"
    # no C kernel: "auto" falls back to numpy with the same graph, "c" is a typed error
    monkeypatch.setenv("MAPPEDTRACE_NO_CKERNEL", "1")
    monkeypatch.setattr(_markkernel, "_loaded", None)
    monkeypatch.setattr(_markkernel, "_failed", False)
    b = mark(t, chunks, roots, TYPES, kernel="auto")
    assert b.precision.kernel == "numpy"
    assert_same_graph(a, b)
    with pytest.raises(MappedTraceError, match="C marking kernel"):
        mark(t, chunks, roots, TYPES, kernel="c")


@pytest.mark.parametrize("kernel", ["c", "numpy"])
def test_type_ids_and_bytes_made_on_use(kernel):
    """The graph keeps no column of type ids or byte positions: ``type_ids_of``
    answers for a few nodes without making the column, ``type_ids`` makes it
    once; ``memoff`` and ``object_bytes`` find each node's bytes in the pieces
    read (-1 / None for the chunk that could not be read)."""
    t, chunks, roots = gen_heap(3)
    bad = next(c for c in chunks if c.state == "in-use")
    t.unreadable.add(bad.address)
    g = c_mark(t, chunks, roots, TYPES) if kernel == "c" else mark(t, chunks, roots, TYPES, kernel="numpy")
    nodes = np.arange(0, len(g), 3)
    few = g.type_ids_of(nodes)
    assert g._type_table is not None                   # still indices: no column of ids made
    col = g.type_ids
    assert col.dtype == np.uint64 and g._type_table is None and g.type_ids is col
    assert np.array_equal(few, col[nodes]) and np.array_equal(g.type_ids_of(nodes), few)
    assert (col != 0).any() and int(g.type_ids_of(int(nodes[1]))) == int(col[nodes[1]])
    mo = g.memoff
    assert mo.dtype == np.int64 and int(np.count_nonzero(mo < 0)) == g.precision.unreadable_objects == 1
    i_bad = g.find(bad.address)
    assert mo[i_bad] < 0 and g.object_bytes(i_bad) is None
    for i in range(len(g)):
        if i != i_bad:
            assert g.object_bytes(i) == t.read(int(g.addresses[i]), int(g.sizes[i])), i
    w, ok = g.words(np.array([i_bad, (i_bad + 1) % len(g)]), np.array([0], np.uint64))
    assert not ok[0, 0] and ok[1, 0]


def test_small_read_pieces_same_graph(monkeypatch):
    import mappedtrace.trace as tr
    t, chunks, roots = gen_heap(5)
    a = mark(t, chunks, roots, TYPES)
    monkeypatch.setattr(tr, "READ_PIECE", 300)      # many pieces, cut at chunk starts
    monkeypatch.setattr(tr, "SEGMENT_GAP", 16)
    b = mark(t, chunks, roots, TYPES)
    assert len(b.mem.arrays) > 50
    assert_same_graph(a, b)
    assert find_leaks(a).to_dict()["leaks"] == find_leaks(b).to_dict()["leaks"]


@pytest.mark.parametrize("small", [0, 8, 10**9])
def test_numpy_small_levels_same_graph(monkeypatch, small):
    """The numpy marker's node-by-node path (small frontiers) and its
    vectorised path give the C kernel's graph."""
    import mappedtrace.trace as tr
    t, chunks, roots = gen_heap(3)
    a = c_mark(t, chunks, roots, TYPES)
    monkeypatch.setattr(tr, "SMALL_LEVEL", small)
    assert_same_graph(a, mark(t, chunks, roots, TYPES, kernel="numpy"))


def test_long_list_both_kernels():
    n, B = 3000, 0x100000
    mem = np.zeros(n * 4, np.uint64)
    mem[1::4][:n - 1] = B + 32 * np.arange(1, n, dtype=np.uint64)
    t = MemTarget({B: mem.tobytes()})
    chunks = [C(B + 32 * i, 24) for i in range(n)]
    roots = [Root("value", B, 8, NODE, True, "head")]
    g = mark(t, chunks, roots, TYPES, kernel="numpy")
    assert g.precision.objects_typed == n and g.precision.edges_exact == n - 1
    assert_same_graph(g, c_mark(t, chunks, roots, TYPES))


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_deferred_edges_of_some_nodes(mode):
    """The C marker makes edges on demand: those of some nodes (before and
    after all edges exist) are the rows of the whole edge array with those sources."""
    t, chunks, roots = gen_heap(3)
    g = c_mark(t, chunks, roots, TYPES, mode=mode)
    mask = np.random.default_rng(0).random(len(g)) < 0.3
    mask[~g.reached] = True
    some = g.edges_from(mask)           # before g.edges is made
    e = g.edges
    assert np.array_equal(some, e[mask[e["src"]]])
    assert np.array_equal(g.edges_from(mask), some)
    assert len(g.edges_from(np.zeros(len(g), bool))) == 0


def test_crowded_buckets_same_graph():
    """A segment of many small chunks and one big one: its buckets hold many
    chunks (no compact index); lookups still find every chunk (C = numpy)."""
    B, n = 0x100000, 3000
    mem = np.zeros((n * 32 + (1 << 20)) // 8, np.uint64)
    rnd = np.random.default_rng(5)
    targets = B + 32 * rnd.integers(0, n, n).astype(np.uint64) + rnd.integers(0, 3, n).astype(np.uint64) * 8
    mem[1:n * 4:4] = targets                      # word 1 of each small chunk: an interior-ish pointer
    big = B + 32 * n
    mem[(big - B) // 8 + 7] = B + 32 * 5          # the big chunk points back
    t = MemTarget({B: mem.tobytes()})
    chunks = [C(B + 32 * i, 24) for i in range(n)] + [C(big, (1 << 20) - 64)]
    roots = [Root("value", B, 8, NODE, True, "head"), Root("value", big + 8, 8, 0, True, "into big")]
    a = c_mark(t, chunks, roots, TYPES)
    assert_same_graph(a, mark(t, chunks, roots, TYPES, kernel="numpy"))
    assert a.precision.objects_reached > 10 and len(a.edges) > 10


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_big_heap_queue_and_blocks_same_graph(mode):
    """A heap big enough that the C kernel's queue slides its pending entries
    down over consumed ones (a typed list of 100 000 nodes: the queue's first
    capacity is 52 428) and its conservative phases run in many blocks of
    4 096 nodes, with closures crossing blocks both ways (random tail words):
    the graph is the numpy marker's (the oracle)."""
    n, B = 150_000, 0x1000000
    rng = np.random.default_rng(5)
    mem = np.zeros(n * 4, np.uint64)
    addr = B + 32 * np.arange(n, dtype=np.uint64)
    mem[1::4][:99_999] = addr[1:100_000]                 # a typed list: node.next at 8
    tail = rng.random(n) < 0.3                           # conservative tails (byte 16) anywhere
    mem[2::4][tail] = addr[rng.integers(0, n, int(tail.sum()))]
    extra = rng.random(n) < 0.2                          # untyped nodes' first words
    extra[:100_000] = False
    mem[0::4][extra] = addr[rng.integers(0, n, int(extra.sum()))] + np.uint64(8)
    t = MemTarget({B: mem.tobytes()})
    chunks = [C(int(a), 24) for a in addr]
    roots = [Root("value", B, 8, NODE, True, "head"),
             Root("value", int(addr[n - 7]), 8, 0, False, "thread 1 #0 f rbx")]
    a = c_mark(t, chunks, roots, TYPES, mode=mode)
    b = mark(t, chunks, roots, TYPES, mode=mode, kernel="numpy")
    assert_same_graph(a, b)
    assert find_leaks(a).to_dict()["leaks"] == find_leaks(b).to_dict()["leaks"]
    assert 100_000 < a.precision.objects_reached < n


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_conservative_closure_of_a_forest_keeps_a_small_queue(mode):
    """2 000 binary trees of 127 nodes reached only through an untyped array: the
    conservative closure runs depth first, so the C marker's queue holds about
    the 2 000 roots and a path, not the widest level of every tree at once
    (128 000 entries of 40 bytes, what the breadth-first closure queued: issue
    #13); and the graph is the numpy marker's."""
    ntrees, per = 2000, 127
    B = 0x1000000
    arr_size = 8 * ntrees
    first = B + ((arr_size + 8 + 15) & ~15) + 16
    n = ntrees * per
    addr = first + 32 * np.arange(n, dtype=np.uint64)
    mem = np.zeros((int(addr[-1]) + 32 - B) // 8, np.uint64)
    mem[:ntrees] = addr[::per]                            # the array of tree roots
    i = np.arange(n)
    tree, k = i // per, i % per
    for side, child in ((0, 2 * k + 1), (1, 2 * k + 2)):  # heap order: children of k at 2k+1, 2k+2
        has = child < per
        w = ((addr[has] - np.uint64(B)) // np.uint64(8)).astype(np.int64) + side
        mem[w] = addr[(tree * per + child)[has]]
    t = MemTarget({B: mem.tobytes()})
    chunks = [C(B, arr_size)] + [C(int(a), 24) for a in addr]
    roots = [Root("value", B, 8, 0, False, "thread 1 #0 f rbx")]
    a = c_mark(t, chunks, roots, TYPES, mode=mode)
    assert a.precision.objects_reached == n + 1
    assert 0 < a.precision.mark_queue_bytes <= 2 << 20, a.precision.mark_queue_bytes
    assert_same_graph(a, mark(t, chunks, roots, TYPES, mode=mode, kernel="numpy"))
