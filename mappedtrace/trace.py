"""Typed marking (DESIGN step 8): from the roots over the type layouts to a heap graph.

:func:`mark` reads every in-use chunk (one ``target.read`` per run of
contiguous chunks, not one per object), then marks from the roots:

Typing rule (what type a heap object gets)
    A pointer of pointee type ``T`` reaching chunk ``c`` at byte ``o``:

    * ``T`` unknown (type id 0, not in the table, zero-sized like Rust's
      ``()`` behind a ``dyn`` pointer, opaque, a function, a ``void*``/``char*``
      slot flagged UNTYPED, or a union/enum slot flagged CONSERVATIVE): ``c``
      is *reached untyped*.
    * ``T`` has no pointer slots (``int``, ``char``, a pointer-free struct):
      at ``o == 0`` ``c`` becomes *pointer-free* (its type's bytes are not
      scanned, its tail is: see below); at an
      interior offset it is reached untyped (a ``char*`` into the middle of a
      struct says nothing about the struct).  Known imprecision: a ``char*``
      to the first field of a struct held by nothing else would hide the
      struct's pointers; a pointer-bearing type always wins over this.
    * ``T`` has pointer slots: at ``o == 0`` the chunk is typed ``T`` by the
      **first** such pointer in breadth-first order from the roots (roots in
      the order given, slots in offset order); a later pointer of another
      pointer-bearing type makes it *ambiguous*.  At an interior offset the
      pointer points at a sub-object (or an array element) whose enclosing
      layout is unknown: the chunk is reached untyped.  No type is ever taken
      from a chunk's size.

Sound typing (issue #11): a type makes the tracer skip a word only where the
program provably never stores a pointer there.  A type describes its own
bytes; the rest of the chunk, its *tail*, is scanned conservatively:

    * a chunk typed ``T`` holds one ``T``, and the bytes after it (malloc's
      rounding slack, ``malloc(sizeof(T) + n)`` trailing data, the other
      elements of what may be an array) are the tail.  Even when every
      8-byte word of ``T`` is a pointer slot (:attr:`_Types.covered`), the
      chunk is not read as an array of ``T``: that reading skips no word, but
      a guessed element would type its pointees (a pointer to a struct's
      first member is not an array: tests/sound_typing/first_member.c);
    * FLEX types: the header's slots, then the elements from ``flex_offset``
      to the chunk's end when the element type has pointer slots; a
      pointer-free flexible array (``unsigned char data[]`` holding child
      pointers written with ``memcpy``, as in Redis's ``rax.c``) is tail;
    * a pointer-free type at offset 0 makes the chunk *pointer-free* in its
      type's bytes only: its tail is scanned too.

    Tails are scanned in phase 2 (their edges are conservative, what they
    reach is reached untyped); ``Precision.heap_bytes_tail`` counts them
    (they are part of ``heap_bytes_conservative``).  Known imprecision: a
    tail holding malloc's slack can hold a stale pointer from an earlier use
    of the chunk, which then keeps its target alive (as in LeakSanitizer).

Phases
    1. typed: the typed root pointers, then every typed chunk in FIFO order,
       reading exactly its type's slots.  Edges from typed slots are exact,
       except CONSERVATIVE (union/enum) slots.  WEAK slots give an edge but
       keep nothing alive.  A non-null exact slot pointing into no in-use
       chunk is counted *dangling* (into a free chunk, heap metadata, or no
       mapping), or *static* (into globals, stacks, libraries); neither is
       followed.
    2. conservative: every chunk reached untyped and not typed/pointer-free,
       every ambiguous chunk (its typed-scan edges are dropped), and the
       tail of every typed or pointer-free chunk, is scanned word by word
       like LeakSanitizer: every 8-aligned word that
       points into an in-use chunk is a conservative edge; closure.
    3. leak scan: chunks still unreached are scanned conservatively so the
       leak analysis sees the shape of leaked structures (edges flagged
       ``EDGE_UNREACHED``; they reach nothing).

Allocation sites (``mappedtrace cc --alloc-sites``, :mod:`mappedtrace.heap.allocsites`)
    A chunk whose site word names a site of known type ``T`` is visited with
    ``T`` at offset 0 when it is *first reached* in phase 1, before the
    pointer that reached it: the site counts as one more typed pointer to
    its start, with every rule above (a different pointer-bearing type makes
    it ambiguous; the bytes after ``T`` are its tail).  A site never makes a
    chunk reachable.  Chunks reached only by the conservative closure
    (phase 2) are scanned conservatively as before; their site type, and that
    of unreached chunks, only names them (``type_ids``, ``how`` unchanged).
    ``Precision.objects_typed_by_site`` counts the typed chunks whose type is
    their site's.  A chunk typed by its site and reached by a pointer of
    another type ``A`` is not ambiguous when ``A`` *is covered* by the site's
    type (every pointer slot of ``A`` is one of the site's type, same offset,
    count, stride and flags, and no pointer-bearing flexible array): ``A`` is
    a view of its common initial sequence (Lua's ``GCObject *`` to a
    ``Table``).  A typed wrapper's object at offset ``d`` of its chunk
    (SQLite's ``chunk + 8``) is typed by a synthetic type ``T [+d]``:
    ``T``'s slots moved by ``d``, the words before it conservative.  A site
    whose request is a multiple of its type's size (flag ``ARRAY``: ``n *
    sizeof(T)``) types its chunk as ``T[k]``, ``k`` the elements before the
    site word (a chunk's slack after the request stays tail).  A *byte
    buffer* site (flag ``BYTES``: the result is used only as pointer-free
    memory, ``char *`` or a pointer-free header struct, as Redis's sds and
    listpacks) types its chunk ``char[k]``, ``k`` the bytes before the site
    word, a pointer-free type: its words are skipped **only** when every
    module of the program counted no untyped pointer write
    (:attr:`SiteTable.bytes_trusted`); otherwise the site only names the
    chunk (typed for naming, ``heap_bytes_named_by_site``; scanned
    conservatively).

``mode="conservative"`` is the LeakSanitizer baseline: every root range
scanned word by word, every root value and every reached chunk untyped.

The per-word work runs in ``_mark.c`` (compiled with cffi on first use);
:class:`_NumpyMarker` implements the same phases level by level with numpy
and yields the identical graph (tests check it).
"""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

import numpy as np

from .errors import BadData, MappedTraceError, TargetFault
from .graph import (EDGE_DTYPE, EDGE_EXACT, EDGE_TYPEDSCAN, EDGE_UNREACHED, EDGE_WEAK,
                    HOW_CONSERVATIVE, HOW_TYPED, HOW_UNREACHED, ROOT_EDGE_DTYPE, HeapGraph,
                    Precision)
from .formats.mtmap import SLOT_CONSERVATIVE, SLOT_FUNCTION, SLOT_UNTYPED, SLOT_WEAK, TYPE_FLEX  # mirrored in _mark.c
from .formats.mtmap import Field, Slot, TypeInfo
from .roots import Root
from .target.base import new_buffer

if TYPE_CHECKING:
    from .heap.allocsites import SiteTable


# node state bits (mirrored in _mark.c)
ST_REACHED = 0x01
ST_TYPED = 0x02
ST_UNKNOWN = 0x04
ST_AMBIG = 0x08
ST_SCALAR = 0x10
ST_CQUEUED = 0x20

#: chunks closer than this are read together in one segment
SEGMENT_GAP = 64 * 1024
#: largest single target.read
READ_PIECE = 64 << 20
#: bound on type sizes and slot offsets/strides/counts taken from a type table
MAX_OBJECT = 1 << 40
#: largest type (bytes) checked for covering every word with pointer slots
MAX_COVER = 1 << 20
#: frontiers up to this many nodes are marked node by node by the numpy marker
SMALL_LEVEL = 8
#: entries per numpy batch (bounds the fallback's temporary memory)
NP_BATCH = 1 << 22


class ChunkLike(Protocol):
    """What the marker needs of a heap chunk (mappedtrace.heap.glibc.Chunk has it)."""

    address: int     # user pointer
    size: int        # usable bytes
    state: str       # "in-use" | "free"


class MarkError(MappedTraceError):
    """The marker could not finish (out of memory in the kernel)."""


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------
@dataclass
class _Heap:
    starts: np.ndarray       # u64
    sizes: np.ndarray        # u64
    mem: "PieceMemory"       # the bytes read, in pieces (no copy of what target.read gave)
    heapmaps: np.ndarray     # u64 (k, 2)
    maps: np.ndarray         # u64 (k, 2)
    warnings: list[str]
    segs: list[tuple[int, int, int, int]]    # (first, last+1, lo, hi)
    unreadable: int = 0      # nodes whose bytes could not be read
    _memoff: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.starts)

    @property
    def memoff(self) -> np.ndarray:
        """i64 position of each node in ``mem``'s virtual space, -1 unreadable:
        made on first use (the numpy marker, allocation sites), not by the C
        marker, which finds a node's bytes from the pieces (8 bytes per object less)."""
        if self._memoff is None:
            self._memoff = self.mem.positions(self.starts, self.sizes)
        return self._memoff

    def find(self, values: np.ndarray) -> np.ndarray:
        """Node index containing each value, -1 for none."""
        v = values.astype(np.uint64, copy=False)
        i = np.searchsorted(self.starts, v, side="right").astype(np.int64) - 1
        ok = i >= 0
        ic = np.where(ok, i, 0)
        if self.n:
            ok &= (v - self.starts[ic]) < self.sizes[ic]
        else:
            ok[:] = False
        return np.where(ok, i, -1)

    def classify_missing(self, values: np.ndarray) -> tuple[int, int]:
        """(dangling, static) counts for values that are not heap edges."""
        if len(values) == 0:
            return 0, 0
        in_heap = _in_ranges(self.heapmaps, values)
        in_map = _in_ranges(self.maps, values)
        dangling = int(np.count_nonzero(in_heap | ~in_map))
        return dangling, len(values) - dangling

    def words(self, d: np.ndarray, off: np.ndarray) -> np.ndarray:
        """The u64 at byte ``off`` of node ``d`` (memoff >= 0 assumed)."""
        return self.mem.u64(self.memoff[d].astype(np.uint64) + off.astype(np.uint64))


#: elements per slice where a whole-heap computation is done in slices
#: (bounded temporaries: 1 M × 8 bytes each)
_SLICE = 1 << 20


class PieceMemory:
    """Bytes read from the target, kept as the pieces ``target.read`` returned.

    Each piece gets a *virtual* base (8-aligned, pieces laid end to end); a
    chunk's bytes are at a virtual position inside one piece.  Nothing is
    copied into one big buffer: a 1 GiB heap costs 1 GiB, not 2.
    """

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.arrays: list[np.ndarray] = []
        self.addrs: list[int] = []          # the target address of each piece's first byte
        self.size = 0
        self._bases_np: np.ndarray | None = None

    def add(self, data, addr: int) -> int:
        """Keep ``data`` (bytes or a uint8 array), the target's bytes at ``addr``
        (pieces are added in address order, not overlapping); return its virtual base."""
        if self.addrs and addr < self.addrs[-1] + len(self.arrays[-1]):
            raise ValueError(f"piece at {addr:#x} is not after the last one")
        base = self.size
        self.bases.append(base)
        self.arrays.append(np.frombuffer(data, dtype=np.uint8))
        self.addrs.append(addr)
        self.size = (base + len(data) + 7) & ~7
        self._bases_np = None
        return base

    def table(self) -> np.ndarray:
        """u64 (k, 3): each piece's target address range [lo, hi) and the address
        of its bytes in this process (``struct mt_heap.piece``)."""
        t = np.zeros((len(self.arrays), 3), np.uint64)
        for k, (a, arr) in enumerate(zip(self.addrs, self.arrays)):
            t[k] = (a, a + len(arr), arr.ctypes.data)
        return t

    def position(self, start: int, size: int) -> int:
        """Virtual position of the object [start, start + size), -1 where no piece
        holds it whole (:meth:`positions` for one object, without numpy)."""
        k = bisect.bisect_right(self.addrs, start) - 1
        if k < 0 or start + size > self.addrs[k] + len(self.arrays[k]):
            return -1
        return self.bases[k] + (start - self.addrs[k])

    def positions(self, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """i64 virtual position of each object [start, start + size), -1 where no
        piece holds it whole (in slices: small temporaries)."""
        out = np.full(len(starts), -1, np.int64)
        if not self.arrays or not len(starts):
            return out
        lo = np.array(self.addrs, np.uint64)
        hi = lo + np.array([len(a) for a in self.arrays], np.uint64)
        base = np.array(self.bases, np.uint64)
        for a in range(0, len(starts), _SLICE):
            st = np.asarray(starts[a:a + _SLICE], np.uint64)
            sz = np.asarray(sizes[a:a + _SLICE], np.uint64)
            k = np.searchsorted(lo, st, side="right").astype(np.int64) - 1
            kc = np.maximum(k, 0)
            ok = (k >= 0) & (st + sz <= hi[kc])
            out[a:a + _SLICE] = np.where(ok, (base[kc] + (st - lo[kc])).view(np.int64), -1)
        return out

    def _piece(self, pos: np.ndarray) -> np.ndarray:
        if self._bases_np is None:
            self._bases_np = np.array(self.bases, dtype=np.uint64)
        return np.searchsorted(self._bases_np, pos, side="right").astype(np.int64) - 1

    def u64(self, pos: np.ndarray) -> np.ndarray:
        """The little-endian u64 at each virtual position (inside one piece each)."""
        pos = np.asarray(pos, dtype=np.uint64)
        out = np.zeros(len(pos), dtype=np.uint64)
        if not len(pos) or not self.arrays:
            return out
        k = self._piece(pos)
        pieces = np.unique(k) if len(self.arrays) > 1 else np.zeros(1, np.int64)
        for pi in pieces.tolist():
            m = k == pi if len(pieces) > 1 else slice(None)
            local = (pos[m] - np.uint64(self.bases[pi])).astype(np.int64)
            arr = self.arrays[pi]
            if np.any(local & 7):
                b = arr[local[:, None] + np.arange(8)]
                out[m] = np.ascontiguousarray(b).view("<u8").reshape(-1)
            else:
                out[m] = arr[:len(arr) // 8 * 8].view("<u8")[local >> 3]
        return out

    def bytes(self, pos: int, n: int) -> bytes:
        """``n`` bytes at virtual position ``pos`` (inside one piece)."""
        pi = bisect.bisect_right(self.bases, pos) - 1
        local = pos - self.bases[pi]
        return self.arrays[pi][local:local + n].tobytes()


def _in_ranges(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    if len(r) == 0:
        return np.zeros(len(v), dtype=bool)
    i = np.searchsorted(r[:, 1], v, side="right")
    ok = i < len(r)
    ic = np.where(ok, i, 0)
    return ok & (r[ic, 0] <= v)


def _merge_ranges(pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    out: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return np.array(out, dtype=np.uint64).reshape(-1, 2)


def _as_u64(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64) if a.dtype in (np.int64, np.uint64) and a.flags.c_contiguous else a.astype(np.uint64)


def _chunk_arrays(chunks) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (starts, usable sizes) of the in-use chunks.

    Accepts a sequence of chunk records, a heap object with column arrays
    ``addresses``, ``usable`` and ``state`` (0 = in use), or one with
    ``share_in_use()`` as :class:`mappedtrace.heap.glibc.GlibcHeap` has (its
    own in-use rows, which become the graph's columns): a 4 M-chunk heap is
    then taken without making one Python object per chunk.
    """
    cols = [getattr(chunks, k, None) for k in ("addresses", "usable", "state")] \
        if not callable(getattr(chunks, "share_in_use", None)) else None
    if cols is None:
        starts, sizes = chunks.share_in_use()       # the heap's own in-use rows, not a copy
    elif all(isinstance(c, np.ndarray) for c in cols):
        # one copy each (a view of int64 as uint64: addresses and sizes are never negative)
        m = cols[2] == 0
        starts, sizes = (_as_u64(c[m]) for c in cols[:2])
    else:
        used = [(int(c.address), int(c.size)) for c in chunks
                if getattr(c, "state", "in-use") == "in-use"]
        starts = np.array([a for a, _ in used], dtype=np.uint64)
        sizes = np.array([s for _, s in used], dtype=np.uint64)
    if len(starts) < 2 or bool(np.all(starts[1:] >= starts[:-1])):
        return starts, sizes                    # a heap walker's columns are sorted already
    order = np.argsort(starts, kind="stable")
    return starts[order], sizes[order]


def _load_heap(target, chunks: Sequence[ChunkLike]) -> _Heap:
    starts, sizes = _chunk_arrays(chunks)
    warnings: list[str] = []

    def end(i: int) -> int:
        return int(starts[i]) + int(sizes[i])

    # overlaps and the segments' cuts, in slices (no column of ends beside the nodes)
    cuts = []
    for lo in range(0, max(len(starts) - 1, 0), _SLICE):
        hi = min(lo + _SLICE, len(starts) - 1)
        gap = starts[lo + 1:hi + 1] - (starts[lo:hi] + sizes[lo:hi])       # mod 2**64: an overlap is huge
        over = starts[lo + 1:hi + 1] < starts[lo:hi] + sizes[lo:hi]
        if over.any():
            i = lo + int(np.flatnonzero(over)[0])
            raise BadData("heap", None, f"chunks overlap: {int(starts[i]):#x}+{int(sizes[i])} "
                          f"and {int(starts[i + 1]):#x}", hint="the heap walk is inconsistent")
        cuts.append(np.flatnonzero(gap > np.uint64(SEGMENT_GAP)) + lo + 1)
    # segments of nearly contiguous chunks: one read each (in pieces of READ_PIECE)
    segs: list[tuple[int, int, int, int]] = []   # (first, last+1, lo, hi)
    if len(starts):
        cut = np.concatenate(cuts) if cuts else np.zeros(0, np.int64)
        firsts = np.concatenate([[0], cut]).astype(np.int64)
        lasts = np.concatenate([cut, [len(starts)]]).astype(np.int64)
        for f, l in zip(firsts.tolist(), lasts.tolist()):
            segs.append((f, l, int(starts[f]), end(l - 1)))
    for lo in range(0, len(starts), _SLICE):
        mis = np.flatnonzero(starts[lo:lo + _SLICE] & np.uint64(7))
        if len(mis):
            raise BadData("heap", None, f"chunk address {int(starts[lo + mis[0]]):#x} is not 8-byte aligned")
    mem = PieceMemory()
    nbad = 0
    # bytes the heap walker already read (GlibcHeap.memory_blocks): used, not read again
    blocks = list(getattr(chunks, "memory_blocks", None) or [])
    bstarts = [b[0] for b in blocks]

    def read(lo: int, hi: int):
        i = bisect.bisect_right(bstarts, lo) - 1
        if i >= 0 and hi <= blocks[i][0] + len(blocks[i][1]):
            return blocks[i][1][lo - blocks[i][0]:hi - blocks[i][0]]
        try:
            buf = new_buffer(hi - lo)
        except (MemoryError, OSError):      # an absurd range: read chunk by chunk below
            raise TargetFault(lo, hi - lo) from None
        target.read_into(lo, buf)
        return buf

    for first, last, lo, hi in segs:
        # pieces of about READ_PIECE bytes, cut at chunk starts (a chunk never straddles two)
        cuts = np.searchsorted(starts[first:last],
                               np.arange(lo + READ_PIECE, hi, READ_PIECE, dtype=np.uint64))
        bounds = sorted(set([0, *cuts.tolist(), last - first]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a >= b:
                continue
            plo, phi = int(starts[first + a]), end(first + b - 1)
            try:
                mem.add(read(plo, phi), plo)
            except TargetFault:
                for c in range(first + a, first + b):     # one chunk at a time: keep what can be read
                    try:
                        mem.add(target.read(int(starts[c]), int(sizes[c])), int(starts[c]))
                    except TargetFault:
                        nbad += 1
    if nbad:
        warnings.append(f"{nbad} heap objects could not be read; they are not scanned")
    mset = getattr(target, "mappings", []) or []
    maps = _merge_ranges((m.start, m.end) for m in mset)
    heapm = []
    if len(starts):
        for m in mset:
            k = int(np.searchsorted(starts, np.uint64(m.start)))
            if k < len(starts) and int(starts[k]) < m.end:
                heapm.append((m.start, m.end))
    return _Heap(starts, sizes, mem, _merge_ranges(heapm), maps, warnings, segs, nbad)


@dataclass
class _Types:
    ids: list[int]
    index: dict[int, int]
    size: np.ndarray
    flags: np.ndarray
    slot_lo: np.ndarray
    slot_hi: np.ndarray
    elem: np.ndarray
    flex_off: np.ndarray
    hasptr: np.ndarray
    s_off: np.ndarray
    s_count: np.ndarray
    s_stride: np.ndarray
    s_target: np.ndarray
    s_flags: np.ndarray
    covered: np.ndarray = None     # u8: every word of the type is a pointer slot (not code)
    _tmpl: dict | None = None
    _exp: dict | None = None
    _covers_cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.covered is None:
            self.covered = np.array([self._covers(i) for i in range(len(self.ids))], np.uint8)

    def _covers(self, ti: int) -> bool:
        """Is every 8-byte word of type ti a (non-code) pointer slot?  Then
        reading a bigger chunk as an array of it skips no word."""
        tsz = int(self.size[ti])
        if tsz <= 0 or tsz % 8 or int(self.flags[ti]) & TYPE_FLEX or tsz > MAX_COVER:
            return False
        offs, _, fl = self.template(ti)
        o = offs[(fl & SLOT_FUNCTION) == 0] if len(offs) else offs
        o = o[(o % np.uint64(8) == 0) & (o < np.uint64(tsz))]
        return len(np.unique(o)) == tsz // 8

    def flex_typed(self, ti: np.ndarray) -> np.ndarray:
        """Per FLEX type: does its element layout decide the flexible part
        (elements with pointer slots)?  Otherwise the part is raw bytes."""
        el = self.elem[ti]
        elc = np.maximum(el, 0)
        return (el >= 0) & (self.size[elc] > 0) & (self.hasptr[elc] != 0)

    def typed_elems(self, ti: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Elements of type ti read by type in a node of ``size`` bytes: one (as
        in _mark.c).  A guessed array of a type that covers every word skips no
        word, but its guessed elements would type their pointees: a pointer to
        a struct's first member types the rest of the struct as more elements
        (gawk's ``pools = &ctxt->pools``; tests/sound_typing/first_member.c)."""
        return np.ones(np.shape(ti), np.uint64)

    def tail_start(self, ti: np.ndarray, size: np.ndarray) -> np.ndarray:
        """First byte (8-aligned) beyond what type ti describes in a node of
        ``size`` bytes: the node's tail, scanned conservatively (_mark.c tail_start)."""
        ti = np.asarray(ti, np.int64)
        size = np.asarray(size, np.uint64)
        if len(ti) == 0:
            return np.zeros(0, np.uint64)
        flex = (self.flags[ti] & TYPE_FLEX) != 0
        fo = self.flex_off[ti]
        esz = np.maximum(self.size[np.maximum(self.elem[ti], 0)], np.uint64(1))
        ft = self.flex_typed(ti) & (size > fo)
        flex_end = fo + np.where(ft, (size - np.minimum(fo, size)) // esz * esz, np.uint64(0))
        end = np.where(flex, flex_end, self.typed_elems(ti, size) * self.size[ti])
        end = np.minimum(end, size)
        return (end + np.uint64(7)) & ~np.uint64(7)

    def covers(self, s: int, a: int) -> bool:
        """Every pointer slot of type ``a`` is one of type ``s``, instance by
        instance (``covers`` in _mark.c)."""
        key = (s, a)
        hit = self._covers_cache.get(key)
        if hit is None:
            js = range(int(self.slot_lo[s]), int(self.slot_hi[s]))

            def at(pos: int, fl: int) -> bool:
                for j in js:
                    o, st = int(self.s_off[j]), int(self.s_stride[j])
                    if int(self.s_flags[j]) != fl or pos < o:
                        continue
                    if pos == o or (st and (pos - o) % st == 0 and (pos - o) // st < int(self.s_count[j])):
                        return True
                return False
            hit = not ((int(self.flags[a]) & TYPE_FLEX) and bool(self.flex_typed(np.array([a]))[0]))
            for i in range(int(self.slot_lo[a]), int(self.slot_hi[a])):
                n = max(1, int(self.s_count[i]))
                if not hit or n > 64:
                    hit = False
                    break
                hit = all(at(int(self.s_off[i]) + m * int(self.s_stride[i]), int(self.s_flags[i])) for m in range(n))
            self._covers_cache[key] = hit
        return hit

    def idx(self, type_id: int) -> int:
        return self.index.get(int(type_id), -1) if type_id else -1

    def template(self, ti: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, target index, flags) of one element of type ti, in scan order."""
        if self._tmpl is None:
            self._tmpl = {}
        t = self._tmpl.get(ti)
        if t is None:
            offs, tg, fl = [], [], []
            for s in range(int(self.slot_lo[ti]), int(self.slot_hi[ti])):
                f = int(self.s_flags[s])
                if f & SLOT_FUNCTION:
                    continue
                cnt = max(1, int(self.s_count[s]))
                stride = int(self.s_stride[s])
                if stride == 0:
                    cnt = 1
                base = int(self.s_off[s])
                offs.append(base + stride * np.arange(cnt, dtype=np.uint64))
                tg.append(np.full(cnt, int(self.s_target[s]), dtype=np.int64))
                fl.append(np.full(cnt, f, dtype=np.uint32))
            if offs:
                t = (np.concatenate(offs).astype(np.uint64), np.concatenate(tg), np.concatenate(fl))
            else:
                t = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint32))
            self._tmpl[ti] = t
        return t

    def expand(self, ti: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every slot word of an object of type ti and ``size`` bytes, in scan order."""
        if self._exp is None:
            self._exp = {}
        key = (ti, size)
        r = self._exp.get(key)
        if r is None:
            r = self._expand(ti, size)
            if len(self._exp) < 4096 and len(r[0]) <= 4096:
                self._exp[key] = r
        return r

    def _expand(self, ti: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offs, tg, fl = self.template(ti)
        tsz = int(self.size[ti])
        parts = []
        if int(self.flags[ti]) & TYPE_FLEX:
            parts.append((offs, tg, fl))
            e = int(self.elem[ti])
            if bool(self.flex_typed(np.array([ti]))[0]):
                esz, fo = int(self.size[e]), int(self.flex_off[ti])
                k = (size - fo) // esz if size >= fo else 0
                eo, et, ef = self.template(e)
                if k > 0 and len(eo):
                    parts.append(((fo + esz * np.repeat(np.arange(k, dtype=np.uint64), len(eo))
                                   + np.tile(eo, k)), np.tile(et, k), np.tile(ef, k)))
        else:
            k = int(self.typed_elems(np.array([ti]), np.array([size], np.uint64))[0])
            parts.append(((tsz * np.repeat(np.arange(k, dtype=np.uint64), len(offs)) + np.tile(offs, k)),
                          np.tile(tg, k), np.tile(fl, k)))
        o = np.concatenate([p[0] for p in parts]).astype(np.uint64)
        keep = o + np.uint64(8) <= np.uint64(size)
        return (o[keep], np.concatenate([p[1] for p in parts])[keep],
                np.concatenate([p[2] for p in parts])[keep])


def _compile_types(types: dict[int, Any]) -> _Types:
    ids = sorted(int(k) for k in types)
    index = {tid: i for i, tid in enumerate(ids)}
    # a pointee type that says nothing about the object: zero-sized (Rust `()`,
    # the data half of a `dyn` pointer), opaque, or code.  Pointers to it are untyped.
    vague = {tid for tid in ids if int(types[tid].size) <= 0
             or getattr(types[tid], "kind", "") in ("unknown", "function")}
    index_ptr = {tid: i for tid, i in index.items() if tid not in vague}
    n = len(ids)
    size = np.zeros(n, np.uint64)
    flags = np.zeros(n, np.uint32)
    slot_lo = np.zeros(n, np.int64)
    slot_hi = np.zeros(n, np.int64)
    elem = np.full(n, -1, np.int64)
    flex_off = np.zeros(n, np.uint64)
    so, sc, ss, st, sf = [], [], [], [], []
    own_ptr = np.zeros(n, bool)
    for i, tid in enumerate(ids):
        t = types[tid]
        size[i] = min(max(0, int(t.size)), MAX_OBJECT)
        flags[i] = int(t.flags)
        elem[i] = index.get(int(getattr(t, "elem_type", 0) or 0), -1) if (int(t.flags) & TYPE_FLEX) else -1
        flex_off[i] = min(max(0, int(getattr(t, "flex_offset", 0) or 0)), MAX_OBJECT)
        slot_lo[i] = len(so)
        for s in sorted(t.slots, key=lambda s: s.offset):
            if not (0 <= int(s.offset) < MAX_OBJECT and 0 <= int(s.stride) < MAX_OBJECT
                    and 0 <= int(s.count) < MAX_OBJECT):
                continue                # nonsense from a damaged table: the slot is ignored
            so.append(int(s.offset))
            sc.append(max(1, int(s.count)))
            ss.append(int(s.stride))
            st.append(index_ptr.get(int(s.target), -1) if s.target else -1)
            sf.append(int(s.flags))
            if not int(s.flags) & SLOT_FUNCTION:
                own_ptr[i] = True
        slot_hi[i] = len(so)
    hasptr = own_ptr.copy()
    for i in range(n):
        if elem[i] >= 0 and own_ptr[elem[i]]:
            hasptr[i] = True
    return _Types(ids, index_ptr, size, flags, slot_lo, slot_hi, elem, flex_off, hasptr.astype(np.uint8),
                  np.array(so, np.uint64), np.array(sc, np.uint64), np.array(ss, np.uint64),
                  np.array(st, np.int64), np.array(sf, np.uint32))


# --------------------------------------------------------------------------
# roots
# --------------------------------------------------------------------------
@dataclass
class _RootScan:
    init_node: np.ndarray
    init_type: np.ndarray
    init_off: np.ndarray
    root_edges: np.ndarray
    dangling: int = 0
    static: int = 0
    words: int = 0


def _scan_roots(target, heap: _Heap, tt: _Types, roots: Sequence[Root], conservative: bool,
                warnings: list[str]) -> _RootScan:
    nodes, tys, offs, redges = [], [], [], []
    dangling = static = words = 0
    for ri, r in enumerate(roots):
        if r.kind == "value":
            v = np.array([r.value & (2**64 - 1)], dtype=np.uint64)
            d = heap.find(v)
            ti = -1 if (conservative or not r.exact) else tt.idx(r.type_id)
            if d[0] >= 0:
                doff = int(v[0] - heap.starts[d[0]])
                nodes.append(d)
                tys.append(np.array([ti], np.int64))
                offs.append(np.array([doff], np.uint64))
                redges.append(np.array([(ri, int(d[0]), 0, doff, EDGE_EXACT if (r.exact and not conservative)
                                         else 0, 0)], ROOT_EDGE_DTYPE))
            elif r.exact and not conservative and r.value:
                a, b = heap.classify_missing(v)
                dangling += a
                static += b
            continue
        if r.kind != "range":
            raise BadData("roots", None, f"root {ri} ({r.source}): unknown kind {r.kind!r}")
        if r.size <= 0:
            continue
        try:
            raw = target.read(r.value, r.size)
        except TargetFault as e:
            warnings.append(f"root {r.source}: {e.message}; not scanned")
            continue
        ti = -1 if conservative else tt.idx(r.type_id)
        if ti >= 0 and r.exact:
            o, tg, fl = tt.expand(ti, r.size)
            keep = (fl & SLOT_FUNCTION) == 0
            o, tg, fl = o[keep], tg[keep], fl[keep]
            buf = np.frombuffer(raw, np.uint8)
            vals = np.ascontiguousarray(buf[o[:, None].astype(np.int64) + np.arange(8)]).view("<u8").reshape(-1) \
                if len(o) else np.zeros(0, np.uint64)
            exact_mask = (fl & SLOT_CONSERVATIVE) == 0
            tgt = np.where((fl & (SLOT_UNTYPED | SLOT_CONSERVATIVE)) != 0, -1, tg)
            words += len(o)
            # a range bigger than its type describes: the rest word by word (its tail)
            ts = int(tt.tail_start(np.array([ti]), np.array([r.size], np.uint64))[0])
            first = ts + (-(r.value + ts)) % 8
            if first + 8 <= r.size:
                n = (r.size - first) // 8
                to = first + 8 * np.arange(n, dtype=np.uint64)
                tv = np.frombuffer(raw, np.uint8)[first:first + 8 * n].copy().view("<u8")
                o, vals = np.concatenate([o.astype(np.uint64), to]), np.concatenate([vals, tv])
                fl = np.concatenate([fl, np.zeros(n, np.uint32)])
                exact_mask = np.concatenate([exact_mask, np.zeros(n, bool)])
                tgt = np.concatenate([tgt, np.full(n, -1, np.int64)])
        else:
            first = (-r.value) % 8
            n = max(0, (r.size - first) // 8)
            vals = np.frombuffer(raw, np.uint8)[first:first + 8 * n].copy().view("<u8")
            o = first + 8 * np.arange(n, dtype=np.uint64)
            fl = np.zeros(n, np.uint32)
            exact_mask = np.zeros(n, bool)
            tgt = np.full(n, -1, np.int64)
        nz = vals != 0
        vals, o, fl, exact_mask, tgt = vals[nz], o[nz], fl[nz], exact_mask[nz], tgt[nz]
        d = heap.find(vals)
        hit = d >= 0
        miss = ~hit & exact_mask
        a, b = heap.classify_missing(vals[miss])
        dangling += a
        static += b
        dh = d[hit]
        doff = vals[hit] - heap.starts[dh]
        ef = np.where(exact_mask[hit], EDGE_EXACT, 0) | np.where((fl[hit] & SLOT_WEAK) != 0, EDGE_WEAK, 0)
        if len(dh):
            re_k = np.zeros(len(dh), ROOT_EDGE_DTYPE)
            re_k["root"], re_k["dst"], re_k["root_off"] = ri, dh, o[hit]
            re_k["dst_off"], re_k["flags"] = doff, ef
            redges.append(re_k)
        follow = (fl[hit] & SLOT_WEAK) == 0
        nodes.append(dh[follow])
        tys.append(tgt[hit][follow])
        offs.append(doff[follow])
    re = np.concatenate(redges) if redges else np.zeros(0, ROOT_EDGE_DTYPE)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return _RootScan(cat(nodes, np.int64), cat(tys, np.int64), cat(offs, np.uint64), re,
                     dangling, static, words)


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------
@dataclass
class _MarkOut:
    state: np.ndarray
    type: np.ndarray
    scalar_type: np.ndarray
    edges: np.ndarray
    counters: list[int]
    edges_sorted: bool = False      # already in (src, src_off) order (the C kernel sorts them)
    #: the C kernel defers the edges: edge_maker(mask or None) makes those of the masked nodes;
    #: edge_counts = (typed exact, typed conservative, closure, leak scan) edges
    edge_maker: Any = None
    edge_counts: tuple[int, int, int, int] | None = None


#: one segment of its lookup index (``struct mt_seg``)
SEG_DTYPE = np.dtype([("lo", "<u8"), ("hi", "<u8"), ("first", "<i8"), ("last", "<i8"),
                      ("boff", "<i8"), ("nb", "<i8"), ("shift", "<u4"), ("pad", "<u4")])


def _segments(heap: _Heap) -> np.ndarray:
    """The segments of ``struct mt_heap``, each with at most one bucket per chunk
    (a power-of-two bucket size, the mean chunk span rounded up, at least 16
    bytes): 0.5 to 1 bucket of 4 bytes per chunk (rounded down it was 1 to 2,
    up to 8 bytes per object of the tracer's memory; a bucket then names one
    or two chunks more often, which the lookup's short scan absorbs)."""
    segs = np.zeros(len(heap.segs), SEG_DTYPE)
    off = 0
    for k, (first, last, lo, hi) in enumerate(heap.segs):
        span = max(1, hi - lo)
        shift = max(4, (max(1, span // max(1, last - first)) - 1).bit_length())
        nb = (span >> shift) + 1
        segs[k] = (lo, hi, first, last, off, nb, shift, 0)
        off += nb
    return segs


def _run_c(mod, heap: _Heap, tt: _Types, rs: _RootScan, conservative: bool,
           site_type: np.ndarray | None = None) -> _MarkOut:
    ffi, lib = mod.ffi, mod.lib
    keep: list[Any] = []

    def p(arr: np.ndarray, ctype: str):
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        return ffi.cast(ctype, ffi.from_buffer(arr)) if arr.nbytes else ffi.NULL

    n = heap.n
    if n >= 1 << 32:
        raise MarkError(f"{n} heap objects: the C kernel takes fewer than 2**32", hint="use kernel='numpy'")
    # per node: the graph's starts and sizes (shared, not copied), the marking's
    # state and type; a node's bytes are found from the pieces table
    state = np.zeros(n, np.uint8)
    typ = np.full(n, -1, np.int32)
    h = ffi.new("struct mt_heap *")
    h.n = n
    h.start = p(_as_u64(heap.starts), "uint64_t *")
    h.size = p(_as_u64(heap.sizes), "uint64_t *")
    h.state = p(state, "uint8_t *")
    h.type = p(typ, "int32_t *")
    pieces = heap.mem.table()
    h.npiece = len(pieces)
    h.piece = p(pieces.reshape(-1), "uint64_t *")
    if n:
        segs = _segments(heap)
        h.nseg = len(segs)
        h.segs = p(segs, "struct mt_seg *")
        h.hot = int(np.argmax(segs["last"] - segs["first"]))
        h.lo, h.hi = int(segs["lo"].min()), int(segs["hi"].max())
        bucket = new_buffer(4 * int(segs["nb"].sum())).view(np.uint32)
        h.bucket = p(bucket, "uint32_t *")
        lib.mt_index(h, h.bucket)
    h.nheapmaps = len(heap.heapmaps)
    h.heapmaps = p(heap.heapmaps.reshape(-1), "uint64_t *")
    h.nmaps = len(heap.maps)
    h.maps = p(heap.maps.reshape(-1), "uint64_t *")
    t = ffi.new("struct mt_types *")
    t.n = len(tt.ids)
    for name in ("size", "flags", "slot_lo", "slot_hi", "elem", "flex_off", "hasptr", "covered",
                 "s_off", "s_count", "s_stride", "s_target", "s_flags"):
        arr = getattr(tt, name)
        ctype = {np.dtype(np.uint64): "uint64_t *", np.dtype(np.int64): "int64_t *",
                 np.dtype(np.uint32): "uint32_t *", np.dtype(np.uint8): "uint8_t *"}[arr.dtype]
        setattr(t, name, p(arr, ctype))
    o = ffi.new("struct mt_out *")
    if site_type is not None and not conservative and n:
        o.site_type = p(site_type.astype(np.int64), "int64_t *")
    rc = lib.mt_mark(h, t, o, len(rs.init_node), p(rs.init_node, "int64_t *"),
                     p(rs.init_type, "int64_t *"), p(rs.init_off, "uint64_t *"), int(conservative))
    if rc != 0:
        raise MarkError("the marking kernel ran out of memory", hint="trace a smaller heap")
    ne = int(o.nedges)

    def make_edges(select: np.ndarray | None, _alive=(keep, h, t, o)) -> np.ndarray:
        """The second pass (mt_edges) over every node, or the nodes of a mask.
        ``_alive`` keeps the kernel's inputs (node columns, pieces, index, types) alive."""
        sel_arr = None if select is None else np.ascontiguousarray(select, dtype=np.uint8)
        sel = ffi.NULL if sel_arr is None or not n else ffi.cast("uint8_t *", ffi.from_buffer(sel_arr))
        cnt = ne if sel_arr is None else int(lib.mt_edges(h, t, o, sel, ffi.NULL, 0))
        if cnt < 0:
            raise MarkError("the marking kernel ran out of memory", hint="trace a smaller heap")
        edges = new_buffer(cnt * EDGE_DTYPE.itemsize).view(EDGE_DTYPE)
        if cnt:
            got = lib.mt_edges(h, t, o, sel, ffi.cast("struct mt_edge *", ffi.from_buffer(edges)), cnt)
            if got < 0:
                raise MarkError("the marking kernel ran out of memory", hint="trace a smaller heap")
            if got != cnt:       # the second pass must find what the marking counted
                raise MarkError(f"the marking kernel made {got} edges where it counted {cnt}")
        return edges

    # one type column: the typed type where ST_TYPED, else the pointer-free one (ST_SCALAR)
    return _MarkOut(state, typ, typ, None, [int(o.counters[i]) for i in range(8)], True, make_edges,
                    (int(o.nexact), int(o.ntcons), int(o.ncons), int(o.nunreached)))


class _NumpyMarker:
    """The fallback marker: the phases of ``_mark.c`` level by level, vectorised."""

    def __init__(self, heap: _Heap, tt: _Types, conservative: bool, site_type: np.ndarray | None = None):
        self.h, self.t, self.cons = heap, tt, conservative
        self.site = None if conservative else site_type
        n = heap.n
        self.state = np.zeros(n, np.uint8)
        self.type = np.full(n, -1, np.int64)
        self.scalar = np.full(n, -1, np.int64)
        self.edges: list[np.ndarray] = []
        self.counters = [0] * 8

    def _with_sites(self, d: np.ndarray, ti: np.ndarray, doff: np.ndarray):
        """The candidates with each first-reached node's site type (offset 0)
        put right before its first candidate (``visit`` in _mark.c)."""
        if self.site is None or not len(d):
            return d, ti, doff
        fresh = np.nonzero(((self.state[d] & ST_REACHED) == 0) & (self.site[d] >= 0))[0]
        if not len(fresh):
            return d, ti, doff
        _, first = np.unique(d[fresh], return_index=True)
        pos = np.sort(fresh[first])
        return (np.insert(d, pos, d[pos]), np.insert(ti, pos, self.site[d[pos]]),
                np.insert(doff, pos, np.zeros(len(pos), doff.dtype)))

    def _site_covers(self, d: np.ndarray, have: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Per candidate: node ``d`` has its site's type ``have``, which covers
        ``other`` (``covers`` in _mark.c)."""
        if self.site is None or not len(d):
            return np.zeros(len(d), bool)
        ok = (self.site[d] == have) & (have != other) & (have >= 0) & (other >= 0)
        for i in np.nonzero(ok)[0].tolist():
            ok[i] = self.t.covers(int(have[i]), int(other[i]))
        return ok

    # the visit rule, applied to candidates in order; returns newly typed nodes in order
    def _visit(self, d: np.ndarray, ti: np.ndarray, doff: np.ndarray) -> np.ndarray:
        d, ti, doff = self._with_sites(d, ti, doff)
        st, t = self.state, self.t
        st[d] |= ST_REACHED
        unknown = ti < 0
        tic = np.where(unknown, 0, ti)
        hp = np.zeros(len(d), bool)
        if len(t.ids):
            hp = ~unknown & (t.hasptr[tic] != 0)
        scal = ~unknown & ~hp
        st[d[scal & (doff != 0)]] |= ST_UNKNOWN
        sc_at0 = np.nonzero(scal & (doff == 0))[0]
        if len(sc_at0):
            sd = d[sc_at0]
            u, first = np.unique(sd, return_index=True)
            new = (st[u] & ST_SCALAR) == 0
            self.scalar[u[new]] = ti[sc_at0][first[new]]
            st[u] |= ST_SCALAR
        st[d[unknown]] |= ST_UNKNOWN
        hpi = np.nonzero(hp)[0]
        if len(hpi) == 0:
            return np.zeros(0, np.int64)
        dd, tt_, oo = d[hpi], ti[hpi], doff[hpi]
        aligned = oo == 0          # inside an object of unknown layout: no type from it
        st[dd[~aligned]] |= ST_UNKNOWN
        dd, tt_ = dd[aligned], tt_[aligned]
        if len(dd) == 0:
            return np.zeros(0, np.int64)
        pre_typed = (st[dd] & ST_TYPED) != 0
        # already typed before this batch: a different type makes it ambiguous
        # (unless the node has its site's type and that covers the other)
        conflict = pre_typed & (self.type[dd] != tt_) & ~self._site_covers(dd, self.type[dd], tt_)
        st[dd[conflict]] |= ST_AMBIG
        nd, nt = dd[~pre_typed], tt_[~pre_typed]
        if len(nd) == 0:
            return np.zeros(0, np.int64)
        u, first = np.unique(nd, return_index=True)
        ft = nt[first]
        self.type[u] = ft
        st[u] |= ST_TYPED
        # later candidates of a newly typed node with another type
        bad = (nt != self.type[nd]) & ~self._site_covers(nd, self.type[nd], nt)
        st[nd[bad]] |= ST_AMBIG
        return u[np.argsort(first, kind="stable")]

    def _emit(self, src, soff, dst, doff, flags) -> None:
        e = np.zeros(len(src), EDGE_DTYPE)
        e["src"], e["dst"], e["src_off"], e["dst_off"], e["flags"] = src, dst, soff, doff, flags
        self.edges.append(e)

    def _typed_candidates(self, frontier: np.ndarray):
        """Slot words of the frontier's typed nodes, in the kernel's scan order."""
        h, t = self.h, self.t
        srcs, offs, tgs, fls, keys = [], [], [], [], []
        types_f = self.type[frontier]
        for ti in np.unique(types_f):
            ti = int(ti)
            pos = np.nonzero(types_f == ti)[0]
            pos = pos[h.memoff[frontier[pos]] >= 0]
            if len(pos) == 0:
                continue
            if int(t.flags[ti]) & TYPE_FLEX:     # rare: one node at a time
                for p in pos:
                    d = int(frontier[p])
                    o, tg, fl = t.expand(ti, int(h.sizes[d]))
                    srcs.append(np.full(len(o), d, np.int64))
                    offs.append(o)
                    tgs.append(tg)
                    fls.append(fl)
                    keys.append(np.full(len(o), p, np.int64))
                continue
            toff, ttg, tfl = t.template(ti)
            m = len(toff)
            if m == 0:
                continue
            nodes = frontier[pos]
            tsz = int(t.size[ti])
            size = h.sizes[nodes]
            nel = t.typed_elems(np.full(len(nodes), ti, np.int64), size).astype(np.int64)
            cnt = nel * m
            rep = np.repeat(np.arange(len(nodes)), cnt)
            j = np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            k, mi = j // m, j % m
            off = np.uint64(tsz) * k.astype(np.uint64) + toff[mi]
            keep = off + np.uint64(8) <= size[rep]
            rep, off, mi = rep[keep], off[keep], mi[keep]
            srcs.append(nodes[rep])
            offs.append(off)
            tgs.append(ttg[mi])
            fls.append(tfl[mi])
            keys.append(pos[rep])
        if not srcs:
            return None
        key = np.concatenate(keys)
        order = np.argsort(key, kind="stable")
        return (np.concatenate(srcs)[order], np.concatenate(offs)[order],
                np.concatenate(tgs)[order], np.concatenate(fls)[order])

    def _handle(self, src, off, tg, fl) -> np.ndarray:
        h = self.h
        self.counters[2] += len(src)
        v = h.words(src, off)
        nz = v != 0
        src, off, tg, fl, v = src[nz], off[nz], tg[nz], fl[nz], v[nz]
        d = h.find(v)
        hit = d >= 0
        miss = ~hit & ((fl & SLOT_CONSERVATIVE) == 0)
        a, b = h.classify_missing(v[miss])
        self.counters[0] += a
        self.counters[1] += b
        src, off, tg, fl, v, d = src[hit], off[hit], tg[hit], fl[hit], v[hit], d[hit]
        doff = v - h.starts[d]
        flags = (EDGE_TYPEDSCAN | np.where((fl & SLOT_CONSERVATIVE) == 0, EDGE_EXACT, 0)
                 | np.where((fl & SLOT_WEAK) != 0, EDGE_WEAK, 0)).astype(np.uint32)
        self._emit(src, off, d, doff, flags)
        follow = (fl & SLOT_WEAK) == 0
        ti = np.where((fl & (SLOT_UNTYPED | SLOT_CONSERVATIVE)) != 0, -1, tg)
        return self._visit(d[follow], ti[follow], doff[follow])

    def _cons_from(self, nodes: np.ndarray) -> np.ndarray:
        """Where the conservative scan of each node starts (_mark.c cons_from):
        the tail of a typed or pointer-free node, else 0."""
        st = self.state[nodes]
        amb = (st & ST_AMBIG) != 0
        typed = ((st & ST_TYPED) != 0) & ~amb
        scal = ((st & ST_SCALAR) != 0) & ~typed & ~amb
        ti = np.where(typed, self.type[nodes], np.where(scal, self.scalar[nodes], -1))
        out = np.zeros(len(nodes), np.uint64)
        k = ti >= 0
        if k.any():
            out[k] = self.t.tail_start(ti[k], self.h.sizes[nodes[k]])
        return out

    def _cons_words(self, nodes: np.ndarray, start: np.ndarray | None = None):
        """(src, off) of every word of the readable nodes from ``start`` (0), in batches."""
        h = self.h
        ok = h.memoff[nodes] >= 0
        nodes = nodes[ok]
        start = np.zeros(len(nodes), np.uint64) if start is None else start[ok].astype(np.uint64)
        start = np.minimum(start, h.sizes[nodes])
        nw = ((h.sizes[nodes] - start) // np.uint64(8)).astype(np.int64)
        i = 0
        while i < len(nodes):
            j, acc = i, 0
            while j < len(nodes) and (acc == 0 or acc + nw[j] <= NP_BATCH):
                acc += int(nw[j])
                j += 1
            part, pw = nodes[i:j], nw[i:j]
            src = np.repeat(part, pw)
            starts = np.repeat(np.cumsum(pw) - pw, pw)
            off = ((np.arange(len(src)) - starts) * 8).astype(np.uint64) + np.repeat(start[i:j], pw)
            self.counters[3] += len(src)
            yield src, off
            i = j

    def _cons_scan(self, nodes: np.ndarray, flags: int, reach: bool,
                   start: np.ndarray | None = None) -> np.ndarray:
        h, st = self.h, self.state
        new_all = []
        for src, off in self._cons_words(nodes, start):
            v = h.words(src, off)
            d = h.find(v)
            hit = d >= 0
            src, off, d, v = src[hit], off[hit], d[hit], v[hit]
            self._emit(src, off, d, v - h.starts[d], np.full(len(d), flags, np.uint32))
            if reach and len(d):
                st[d] |= ST_REACHED | ST_UNKNOWN
                u = np.unique(d)
                u = u[(st[u] & (ST_TYPED | ST_SCALAR | ST_CQUEUED)) == 0]
                st[u] |= ST_CQUEUED
                new_all.append(u)
        return np.concatenate(new_all) if new_all else np.zeros(0, np.int64)

    def _visit1(self, c: int, ti: int, doff: int) -> bool:
        """The visit rule for one candidate (as ``visit`` in _mark.c); True if c is to be scanned."""
        st, t = self.state, self.t
        if self.site is not None and not st[c] & ST_REACHED and self.site[c] >= 0:
            st[c] |= ST_REACHED
            if self._visit1(c, int(self.site[c]), 0):
                self._visit1(c, ti, doff)
                return True
        st[c] |= ST_REACHED
        if ti < 0:
            st[c] |= ST_UNKNOWN
            return False
        if not t.hasptr[ti]:
            if doff != 0:
                st[c] |= ST_UNKNOWN
            elif not st[c] & ST_SCALAR:
                st[c] |= ST_SCALAR
                self.scalar[c] = ti
            return False
        if doff != 0:               # inside an object of unknown layout: no type from it
            st[c] |= ST_UNKNOWN
            return False
        if st[c] & ST_TYPED:
            if int(self.type[c]) != ti and not self._site_covers(np.array([c]), self.type[c:c + 1],
                                                                  np.array([ti]))[0]:
                st[c] |= ST_AMBIG
            return False
        st[c] |= ST_TYPED
        self.type[c] = ti
        return True

    def _small_level(self, frontier: np.ndarray) -> np.ndarray:
        """One typed level node by node: cheaper than the vectorised path for
        a handful of nodes (a long list is one node per level)."""
        h, t = self.h, self.t
        nxt: list[int] = []
        rows = []
        for d in frontier.tolist():
            if h.memoff[d] < 0:
                continue
            o, tg, fl = t.expand(int(self.type[d]), int(h.sizes[d]))
            if not len(o):
                continue
            self.counters[2] += len(o)
            vals = h.words(np.full(len(o), d, np.int64), o)
            found = h.find(vals).tolist()
            for k, v in enumerate(vals.tolist()):
                if not v:
                    continue
                f, c = int(fl[k]), found[k]
                if c < 0:
                    if not f & SLOT_CONSERVATIVE:
                        a, b = h.classify_missing(vals[k:k + 1])
                        self.counters[0] += a
                        self.counters[1] += b
                    continue
                doff = v - int(h.starts[c])
                rows.append((d, c, int(o[k]), doff, EDGE_TYPEDSCAN | (0 if f & SLOT_CONSERVATIVE else EDGE_EXACT)
                             | (EDGE_WEAK if f & SLOT_WEAK else 0), 0))
                if f & SLOT_WEAK:
                    continue
                ti = -1 if f & (SLOT_UNTYPED | SLOT_CONSERVATIVE) else int(tg[k])
                if self._visit1(c, ti, doff):
                    nxt.append(c)
        if rows:
            self.edges.append(np.array(rows, EDGE_DTYPE))
        return np.array(nxt, np.int64)

    def run(self, rs: _RootScan) -> _MarkOut:
        h, st = self.h, self.state
        ti0 = np.full(len(rs.init_type), -1, np.int64) if self.cons else rs.init_type
        frontier = self._visit(rs.init_node, ti0, rs.init_off)
        for _ in range(h.n + 1):           # at most one level per node
            if len(frontier) == 0:
                break
            if len(frontier) <= SMALL_LEVEL:
                frontier = self._small_level(frontier)
                continue
            nxt = []
            i = 0
            while i < len(frontier):       # batches keep the kernel's FIFO order
                part = frontier[i:i + 4096]
                i += len(part)
                c = self._typed_candidates(part)
                if c is not None:
                    nxt.append(self._handle(*c))
            frontier = np.concatenate(nxt) if nxt else np.zeros(0, np.int64)
        # ambiguous, reached untyped only, or typed with a tail its type does not describe
        start = self._cons_from(np.arange(h.n))
        q = np.nonzero(((st & ST_AMBIG) != 0)
                       | (((st & ST_UNKNOWN) != 0) & ((st & (ST_TYPED | ST_SCALAR)) == 0))
                       | (((st & (ST_TYPED | ST_SCALAR)) != 0) & (start + np.uint64(8) <= h.sizes)))[0]
        st[q] |= ST_CQUEUED
        q = self._cons_scan(q, 0, True, start[q])
        for _ in range(h.n + 1):
            if len(q) == 0:
                break
            q = self._cons_scan(q, 0, True)
        unreached = np.nonzero((st & ST_REACHED) == 0)[0]
        self._cons_scan(unreached, EDGE_UNREACHED, False)
        edges = np.concatenate(self.edges) if self.edges else np.zeros(0, EDGE_DTYPE)
        return _MarkOut(st, self.type, self.scalar, edges, self.counters)


# --------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------
def mark(target, chunks: Sequence[ChunkLike], roots: Sequence[Root], types: dict[int, Any] | None,
         *, mode: str = "precise", kernel: str = "auto",
         frames: tuple[int, int] = (0, 0), sites: "SiteTable | None" = None) -> HeapGraph:
    """Mark the heap from ``roots`` and build the object graph.

    :param target: a :class:`mappedtrace.target.base.Target` (only ``read``
        and ``mappings`` are used).
    :param chunks: heap chunks (``address``, ``size``, ``state``), or a
        :class:`~mappedtrace.heap.glibc.GlibcHeap` (its column arrays are
        used directly); only in-use chunks become nodes.
    :param roots: :class:`mappedtrace.roots.Root` records, in priority order.
    :param types: the decoded type table ``{type_id: TypeInfo}`` (may be empty).
    :param mode: ``"precise"`` (typed) or ``"conservative"`` (LeakSanitizer-like).
    :param kernel: ``"auto"`` (C if it builds, else numpy), ``"c"`` or ``"numpy"``.
    :param frames: (exact, conservative) frame counts of the unwound stacks, as
        :class:`mappedtrace.roots.RootStats` counts them (the one definition: every
        unwound frame, decoded with the maps or scanned); the roots alone cannot
        tell, since a frame with no live pointer yields no root.
    :param sites: a :class:`mappedtrace.heap.allocsites.SiteTable` (None: no
        allocation sites): each chunk's site is read from its site word.
    :returns: a :class:`mappedtrace.graph.HeapGraph`.
    :raises BadData: chunks overlap or are misaligned, a root has an unknown kind.
    """
    if mode not in ("precise", "conservative"):
        raise MappedTraceError(f"unknown marking mode {mode!r}", hint="use 'precise' or 'conservative'")
    if kernel not in ("auto", "c", "numpy"):
        raise MappedTraceError(f"unknown marking kernel {kernel!r}", hint="use 'auto', 'c' or 'numpy'")
    t0 = time.perf_counter()
    types = types or {}
    conservative = mode == "conservative"
    heap = _load_heap(target, chunks)
    t_read = time.perf_counter()
    node_site, node_tid, types, node_scan = _node_sites(heap, types, sites)
    tt = _compile_types(types)
    warnings = list(heap.warnings)
    rs = _scan_roots(target, heap, tt, list(roots), conservative, warnings)
    site_type = site_scan = None
    if node_tid is not None:
        u, inv = np.unique(node_tid, return_inverse=True)
        site_type = np.array([tt.idx(int(t)) for t in u.tolist()], np.int64)[inv.reshape(-1)]
        # the types a site may decide scanning by (an untrusted byte buffer only names)
        site_scan = np.where(node_scan, site_type, np.int64(-1))
    mod = None
    if kernel in ("auto", "c"):
        from . import _markkernel
        mod = _markkernel.load()
        if mod is None and kernel == "c":
            raise MappedTraceError("the C marking kernel is not available (no C compiler?)",
                                   hint="use kernel='numpy'")
    out = _run_c(mod, heap, tt, rs, conservative, site_scan) if mod is not None \
        else _NumpyMarker(heap, tt, conservative, site_scan).run(rs)
    t_mark = time.perf_counter()
    g = _build_graph(heap, tt, types, list(roots), rs, out, mode,
                     "c" if mod is not None else "numpy", warnings)
    if sites is not None and len(sites):
        _add_sites(g, tt, sites, node_site, node_tid, site_type, site_scan, out)
    g.precision.__dict__.update(frames_exact=frames[0], frames_conservative=frames[1],
                                read_s=round(t_read - t0, 6), mark_s=round(t_mark - t_read, 6),
                                total_s=round(time.perf_counter() - t0, 6))
    return g


#: synthetic type ids (an object at an offset in its chunk, an array proved by
#: its site) have bit 63 set; .mtmap ids never do (TypeIdMask)
_SYNTHETIC_BIT = 1 << 63
#: most slots of a synthetic array type (else the site types its first element only)
_MAX_SYNTH_SLOTS = 1 << 16


def _site_type(t: Any, d: int, k: int, tid: int) -> TypeInfo | None:
    """Type ``t`` at offset ``d`` of its chunk, ``k`` times (an array its site
    proved: the request was a multiple of ``t``'s size); ``d`` > 0 for a typed
    wrapper's object after the allocator's header (SQLite's ``chunk + 8``),
    whose words before the object are scanned conservatively (what the
    allocator keeps there is not described).  None when too many slots."""
    tsz = int(t.size)
    slots = [Slot(o, 0, 1, 0, SLOT_CONSERVATIVE) for o in range(0, d, 8)]
    for x in t.slots:
        c, st = int(x.count), int(x.stride)
        if k == 1:
            slots.append(Slot(int(x.offset) + d, int(x.target), c, st, int(x.flags)))
        elif c <= 1:
            slots.append(Slot(int(x.offset) + d, int(x.target), k, tsz, int(x.flags)))
        else:
            slots += [Slot(int(x.offset) + d + i * tsz, int(x.target), c, st, int(x.flags)) for i in range(k)]
        if len(slots) > _MAX_SYNTH_SLOTS:
            return None
    fields = [Field(int(f.offset) + d, int(f.type_id), f.name, int(f.flags))
              for f in (getattr(t, "fields", ()) or ()) if not f.template_arg]
    flex = int(getattr(t, "flex_offset", 0) or 0)
    name = t.name + (f"[{k}]" if k > 1 else "") + (f" [+{d}]" if d else "")
    return TypeInfo(tid, name, tsz * k + d, t.kind, int(t.flags), slots,
                    int(getattr(t, "elem_type", 0) or 0), flex + d if int(t.flags) & TYPE_FLEX else flex, fields)


def _bytes_type(k: int) -> TypeInfo:
    """The pointer-free type of a byte buffer of ``k`` bytes (a BYTES site)."""
    return TypeInfo(_SYNTHETIC_BIT | _BYTES_BIT | k, f"char[{k}]", k, "scalar")


#: synthetic byte-buffer type ids: bit 62 with the size in the low bits
_BYTES_BIT = 1 << 62


def _node_sites(heap: _Heap, types: dict[int, Any], sites: "SiteTable | None"
                ) -> tuple[np.ndarray | None, np.ndarray | None, dict[int, Any], np.ndarray | None]:
    """(site index per node or -1, the type id each node's site gives it or 0,
    the types with the synthetic ones added: objects at an offset in their
    chunk, arrays proved by their site, byte buffers; per node whether its
    site type may decide scanning); (None, None, types, None) without sites."""
    if sites is None or not len(sites):
        return None, None, types, None
    import hashlib
    from .heap.allocsites import find_sites
    from .formats.allocsites import SITE_ARRAY, SITE_BYTES
    node_site, node_off, word_at = find_sites(sites, heap.starts, heap.sizes, heap.memoff >= 0, heap.words,
                                              with_offsets=True)
    node_tid = np.append(sites.type_ids, np.uint64(0))[node_site]       # index -1 picks the trailing 0
    # (aligned_alloc's request is rounded up to its alignment: its word does not end the array)
    is_arr = np.array([bool(s.flags & SITE_ARRAY) and s.kind != "aligned_alloc" for s in sites.sites]
                      + [False], bool)[node_site]
    tsize = np.zeros(len(node_tid), np.uint64)
    cand = np.nonzero(node_tid != 0)[0]
    if len(cand):
        u, inv = np.unique(node_tid[cand], return_inverse=True)
        sz = np.array([int(getattr(types.get(int(t)), "size", 0) or 0)
                       if not int(getattr(types.get(int(t)), "flags", 0) or 0) & TYPE_FLEX else 0
                       for t in u.tolist()], np.uint64)
        tsize[cand] = sz[inv.reshape(-1)]
    count = np.ones(len(node_tid), np.uint64)
    arr = np.nonzero(is_arr & (tsize > 0) & (word_at > node_off))[0]
    count[arr] = np.maximum((word_at[arr] - node_off[arr]) // np.maximum(tsize[arr], np.uint64(1)), np.uint64(1))
    moved = np.nonzero((node_tid != 0) & ((node_off != 0) | (count > 1)))[0]
    if len(moved):
        types = dict(types)
        triples = np.unique(np.stack([node_tid[moved], node_off[moved], count[moved]], axis=1), axis=0)
        ids: dict[tuple[int, int, int], int] = {}
        for tid, d, k in triples.tolist():
            t = types.get(int(tid))
            if t is None or int(t.size) <= 0:
                continue
            h = hashlib.blake2b(f"{tid}:{d}:{k}".encode(), digest_size=8).digest()
            sid = _SYNTHETIC_BIT | (int.from_bytes(h, "little") & ((1 << 62) - 1))
            st = _site_type(t, int(d), int(k), sid)
            if st is None and d:
                st = _site_type(t, int(d), 1, sid)
            if st is not None:
                types[sid] = st
                ids[(int(tid), int(d), int(k))] = sid
            elif not d:
                ids[(int(tid), 0, int(k))] = int(tid)       # too big an array: its first element
        node_tid = node_tid.copy()
        node_tid[moved] = np.array([ids.get((int(t), int(d), int(k)), 0) for t, d, k in
                                    zip(node_tid[moved].tolist(), node_off[moved].tolist(), count[moved].tolist())],
                                   np.uint64)
    # byte buffers: char[k], k the bytes before the site word
    is_bytes = np.array([bool(s.flags & SITE_BYTES) and not s.type_id and s.kind != "aligned_alloc"
                         for s in sites.sites] + [False], bool)[node_site]
    node_scan = np.ones(len(node_tid), bool)
    byt = np.nonzero(is_bytes & (node_off == 0) & (word_at > 0) & (word_at < np.uint64(_BYTES_BIT)))[0]
    if len(byt):
        types = dict(types) if types is not None else {}
        node_tid = node_tid.copy()
        ks = word_at[byt]
        for k in np.unique(ks).tolist():
            t = _bytes_type(int(k))
            types[t.id] = t
        node_tid[byt] = np.uint64(_SYNTHETIC_BIT | _BYTES_BIT) | ks
        node_scan[byt] = sites.bytes_trusted
    return node_site, node_tid, types, node_scan


def _add_sites(g: HeapGraph, tt: _Types, sites: "SiteTable", node_site: np.ndarray, node_tid: np.ndarray,
               site_type: np.ndarray, site_scan: np.ndarray, out: _MarkOut) -> None:
    """The sites into the graph, site types as names where the marker gave
    none, and the precision figures of the sites (``site_type``: the type
    each node's site names it by; ``site_scan``: the one it may be scanned
    by, -1 where an untrusted byte-buffer site only names it)."""
    g.sites = list(sites.sites)
    g.node_site = node_site
    has = node_site >= 0
    sid = node_tid
    named = has & (g.type_ids == 0) & (site_type >= 0)
    g.type_ids = np.where(named, sid, g.type_ids).astype(np.uint64)
    typed = g.how == HOW_TYPED
    st = out.state
    # typed by the marker with the site's type (the site was visited first: its type won)
    mtype = np.where((st & ST_TYPED) != 0, out.type, out.scalar_type)
    by_site = typed & ~g.ambiguous & (site_scan >= 0) & (mtype == site_scan)
    p = g.precision
    p.untyped_pointer_writes = sites.untyped_writes
    # byte buffers: skipped as pointer-free (typed for scanning), or named only
    byt = np.nonzero(has & ((sid & np.uint64(_SYNTHETIC_BIT | _BYTES_BIT)) == np.uint64(_SYNTHETIC_BIT | _BYTES_BIT)))[0]
    if len(byt):
        p.objects_bytes_by_site = int(np.count_nonzero(by_site[byt]))
        p.heap_bytes_bytes_by_site = int(np.minimum(sid[byt] & np.uint64(_BYTES_BIT - 1), g.sizes[byt])
                                         [by_site[byt]].sum())
    # named by their site, not typed by the marker: typed for naming only
    nm = np.nonzero(has & ~typed & (site_type >= 0))[0]
    if len(nm):
        p.objects_named_by_site = len(nm)
        p.heap_bytes_named_by_site = int(np.minimum(tt.tail_start(site_type[nm], g.sizes[nm]), g.sizes[nm]).sum())
    p.objects_with_site = int(np.count_nonzero(has))
    p.objects_with_site_type = int(np.count_nonzero(has & (sid != 0)))
    p.objects_typed_by_site = int(np.count_nonzero(by_site))
    if by_site.any():
        idx = np.nonzero(by_site)[0]
        ts = tt.tail_start(site_scan[idx], g.sizes[idx])
        p.heap_bytes_typed_by_site = int(np.minimum(ts, g.sizes[idx]).sum())


def _edges_sorted(e: np.ndarray) -> bool:
    src, off = e["src"], e["src_off"]
    ds = np.diff(src)
    return bool(np.all((ds > 0) | ((ds == 0) & (off[1:] > off[:-1]))))


def _edge_order(e: np.ndarray) -> np.ndarray:
    """Order of edges by (src, src_off): one argsort of a packed u64 key when it fits."""
    src, off = e["src"].astype(np.uint64), e["src_off"]
    kbits = int(off.max()).bit_length()
    if int(src.max()).bit_length() + kbits <= 64:
        return np.argsort((src << np.uint64(kbits)) | off, kind="stable")
    return np.lexsort((off, src))


def _build_graph(heap: _Heap, tt: _Types, types, roots: list[Root], rs: _RootScan, out: _MarkOut,
                 mode: str, kernel: str, warnings: list[str]) -> HeapGraph:
    st = out.state
    n = heap.n
    how = np.empty(n, np.uint8)
    # the graph's types are the marker's type indices (HeapGraph.type_ids makes the
    # ids on first use): the C kernel's one column as it is, the numpy marker's two merged
    one_col = out.type is out.scalar_type
    tcol = out.type if one_col else np.empty(n, np.int32)
    ids = np.array(tt.ids + [0], dtype=np.uint64)      # index -1 → 0
    # in slices: the masks and type indices of the whole heap at once were
    # about 10 bytes per object of temporaries at the analysis's peak (issue #13)
    for lo in range(0, n, _SLICE):
        s = st[lo:lo + _SLICE]
        typed = ((s & ST_TYPED) != 0) & ((s & ST_AMBIG) == 0)
        scalar_only = ((s & ST_SCALAR) != 0) & ((s & ST_TYPED) == 0)
        reached = (s & ST_REACHED) != 0
        h = np.where(reached, np.uint8(HOW_CONSERVATIVE), np.uint8(HOW_UNREACHED))
        h[typed | scalar_only] = HOW_TYPED
        how[lo:lo + _SLICE] = h
        if one_col:
            tcol[lo:lo + _SLICE][~reached] = -1     # (never set on an unreached node: kept as is)
        else:
            tix = np.where((s & ST_TYPED) != 0, out.type[lo:lo + _SLICE], out.scalar_type[lo:lo + _SLICE])
            tix[~reached] = -1
            tcol[lo:lo + _SLICE] = tix
    ambiguous = (st & ST_AMBIG) != 0
    e = out.edges
    if e is None:
        # deferred edges (C kernel): counted by kind; an ambiguous node's typed-scan edges are dropped
        nexact, ntcons, ncons, _ = out.edge_counts
        if ambiguous.any():
            ea = out.edge_maker(ambiguous)
            ts = (ea["flags"] & EDGE_TYPEDSCAN) != 0
            ex_a = (ea["flags"] & EDGE_EXACT) != 0
            nexact -= int(np.count_nonzero(ts & ex_a))
            ntcons -= int(np.count_nonzero(ts & ~ex_a))
        n_exact, n_cons = nexact, ntcons + ncons

        def maker(select, make=out.edge_maker, amb=ambiguous):
            m = make(select)
            if len(m) and amb.any():
                m = m[~(amb[m["src"]] & ((m["flags"] & EDGE_TYPEDSCAN) != 0))]
            return m
    else:
        maker = None
        if len(e):
            if ambiguous.any():
                drop = ambiguous[e["src"]] & ((e["flags"] & EDGE_TYPEDSCAN) != 0)
                e = e[~drop]
            if len(e) > 1 and not out.edges_sorted and not _edges_sorted(e):
                e = e[_edge_order(e)]
        live = (e["flags"] & EDGE_UNREACHED) == 0
        ex = (e["flags"] & EDGE_EXACT) != 0
        n_exact, n_cons = int(np.count_nonzero(live & ex)), int(np.count_nonzero(live & ~ex))
    re = rs.root_edges
    rex = (re["flags"] & EDGE_EXACT) != 0
    sizes = heap.sizes
    # a typed node's tail (bytes its type does not describe) is scanned conservatively
    # (in slices: tail_start's temporaries are a dozen arrays as long as its input)
    typed_bytes = tail = 0
    for lo in range(0, n, _SLICE):
        tnodes = np.nonzero(how[lo:lo + _SLICE] == HOW_TYPED)[0] + lo
        if not len(tnodes):
            continue
        ts = st[tnodes]
        typed_t = ((ts & ST_TYPED) != 0) & ((ts & ST_AMBIG) == 0)
        tti = np.where(typed_t, out.type[tnodes], out.scalar_type[tnodes]).astype(np.int64)
        tsz = sizes[tnodes]
        tstart = np.minimum(tt.tail_start(tti, tsz), tsz)
        typed_bytes += int(tstart.sum())
        tail += int((tsz - tstart).sum())
    prec = Precision(
        mode=mode, kernel=kernel,
        roots_exact=sum(1 for r in roots if r.exact and mode == "precise"),
        roots_conservative=sum(1 for r in roots if not r.exact or mode != "precise"),
        objects=n, objects_reached=int(np.count_nonzero(how != HOW_UNREACHED)),
        objects_typed=int(np.count_nonzero(how == HOW_TYPED)),
        objects_conservative=int(np.count_nonzero(how == HOW_CONSERVATIVE)),
        objects_ambiguous=int(ambiguous.sum()),
        heap_bytes=int(sizes.sum()) if n else 0,
        heap_bytes_typed=typed_bytes,
        # (sum with a mask: ``sizes[mask]`` copied 8 bytes per conservative object)
        heap_bytes_conservative=(int(sizes.sum(where=how == HOW_CONSERVATIVE)) if n else 0) + tail,
        heap_bytes_tail=tail,
        edges_exact=n_exact,
        edges_conservative=n_cons,
        root_edges_exact=int(rex.sum()), root_edges_conservative=int((~rex).sum()),
        dangling_pointers=out.counters[0] + rs.dangling,
        pointers_to_static=out.counters[1] + rs.static,
        typed_words_read=out.counters[2] + rs.words,
        unreadable_objects=heap.unreadable,
        mark_queue_bytes=int(out.counters[6]) if kernel == "c" else 0,
    )
    return HeapGraph(heap.starts, heap.sizes, tcol, how, ambiguous, e, re, roots, types, prec,
                     warnings, mem=heap.mem, mapped=heap.maps, _edge_maker=maker, _type_table=ids)
