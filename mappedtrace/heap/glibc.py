"""The glibc malloc heap of a target: every chunk, in use or free.

Walks glibc 2.36 ptmalloc (Debian 12) from outside the process, read-only:

* the **main arena** (``main_arena``, one contiguous ``brk`` heap from
  ``mp_.sbrk_base`` up to the end of the top chunk);
* **thread arenas** (``main_arena.next`` ring): each a list of ``heap_info``
  segments, mmapped and aligned to ``HEAP_MAX_SIZE`` (64 MiB), found from the
  arena's top chunk (``heap_for_ptr``) and the ``prev`` links;
* **mmapped chunks** (requests above the mmap threshold): chunk headers whose
  flags are exactly ``IS_MMAPPED`` at the start of anonymous memory, walked
  while they chain (the kernel merges adjacent mappings), a page-by-page search
  when the count disagrees with ``mp_.n_mmaps``, and memalign's offset chunks;
* the free lists: the ``tcache`` of **every thread** and the fastbins (both
  safe-linked: a stored next pointer is ``(slot_address >> 12) ^ next``,
  glibc's ``PROTECT_PTR``), the unsorted, small and large bins (doubly linked,
  not mangled).

A chunk is free iff it is on a free list or is a top chunk: fastbin and
tcache chunks keep ``PREV_INUSE`` set in the next chunk, so the flag bits
alone cannot tell.

Where the structures are: with libc6-dbg, libc's separate debug file (found by
build-id) names ``main_arena``, ``mp_`` and the TLS variable ``tcache``
(:attr:`GlibcHeap.exact` is True).  A thread's ``tcache`` lives in libc's
static TLS block, found through the thread's DTV: ``fs_base`` points at the
TCB whose second word is the DTV; ``dtv[modid].pointer.val`` is the start of
module ``modid``'s block.  libc's module id is the ``l_tls_modid`` of its
record in the dynamic linker's link-map chain (:mod:`mappedtrace.tls`); the
``thread_arena`` TLS variable next to ``tcache`` must then hold a known arena
(or 0), which checks the whole derivation.

Without debug symbols (``use_debug_symbols=False`` or no debug file) the
walker uses heuristics, documented where they are made: the ``[heap]``
mapping is the main heap and its last chunk the top; ``main_arena`` is the
place in libc's writable data whose ``top`` field points at that chunk and
whose ``system_mem`` equals the heap's length; ``mp_`` is found by its
``sbrk_base``; tcaches are the in-use 0x290-byte chunks whose contents check
out as a non-empty ``tcache_perthread_struct`` (counts within
``mp_.tcache_count``, an entry exactly where a count is non-zero, entries
that are chunks of the right size).  Imprecision: an application block of
0x280 bytes that happens to look like that would have the chunks it points
at reported free; empty tcaches are not listed (they free nothing).  A
program that moved the brk itself before malloc started, or a non-contiguous
main arena, defeats the ``[heap]`` assumption (the walk then fails with a
typed error, or warns).

Assumed layouts (checked against the debug symbols' sizes when present):
``struct malloc_state`` 2200 bytes, ``struct malloc_par`` 136 bytes,
``heap_info`` 48 bytes, ``tcache_perthread_struct`` 64 u16 counts + 64
pointers, ``HEAP_MAX_SIZE`` 64 MiB — glibc 2.35–2.37 on x86-64.

Everything is read in big blocks (one read per heap segment) and parsed from
the bytes; every loop is bounded by the segment's size or the number of
chunks found.  A damaged chunk header, top size or free list becomes a
:class:`CorruptRegion` in :attr:`corrupted` (and a warning naming the chunk);
the walk goes on past it where glibc's state lets it (the chunks after it that
chain to the top chunk, the other segments and arenas, the mmapped chunks).
Damaged arena state (``malloc_state``, ``heap_info``, the arena ring) raises
:class:`HeapCorrupted` naming the structure; inconsistencies that leave the
answer true become :attr:`warnings`.
"""
from __future__ import annotations

import bisect
import functools
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadData, MappedTraceError, TargetFault, UnsupportedVersion
from ..formats import elf
from ..modules import Module, ModuleMap
from ..target.base import Target, new_buffer

# --- glibc 2.36 x86-64 constants (malloc/malloc.c, malloc/arena.c) --------
SIZE_SZ = 8
CHUNK_HDR_SZ = 2 * SIZE_SZ
MALLOC_ALIGNMENT = 16
MINSIZE = 32
PREV_INUSE, IS_MMAPPED, NON_MAIN_ARENA = 1, 2, 4
SIZE_BITS = 7
NFASTBINS = 10
NBINS = 128
TCACHE_MAX_BINS = 64
HEAP_MAX_SIZE = 64 << 20            # 2 * DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
NONCONTIGUOUS_BIT = 2
PAGE = 0x1000

#: bounds on the walks (a count read from the target is a bound to check)
MAX_ARENAS = 1024
MAX_HEAPS_PER_ARENA = 1 << 16
MAX_DEEP_SCAN = 1 << 30            # bytes of anonymous memory searched for mmapped chunks
TLS_SCAN = 64 << 10                 # bytes below fs_base searched for libc's tcache pointer (heuristics)
MAX_MEMALIGN_LEAD = 1 << 16
MAX_GAPS = 64                       # foreign-sbrk gaps crossed in the main heap
MAX_BRIDGE = 256 << 20              # bytes searched for the segment after a gap         # how far into an mmapped region a memalign'd chunk is looked for

# struct malloc_state (2200 bytes): mutex, flags, have_fastchunks, pad,
# fastbinsY[10], top, last_remainder, bins[254], binmap[4], next, next_free,
# attached_threads, system_mem, max_system_mem
MSTATE = struct.Struct("<iii4x10QQQ254Q4IQQQQQ")
MS_TOP, MS_BINS, MS_NEXT = 96, 112, 2160          # byte offsets
#: indexes of fields in MSTATE.unpack(...)
F_MUTEX, F_FLAGS, F_FASTBINS, F_TOP, F_BINS = 0, 1, 3, 13, 15
F_NEXT, F_SYSTEM_MEM = 273, 276
# struct malloc_par (136 bytes)
MALLOC_PAR = struct.Struct("<7Q5i4x7Q")
MP_SBRK_BASE = 96                                  # byte offset
#: indexes of fields in MALLOC_PAR.unpack(...)
P_N_MMAPS, P_TCACHE_BINS, P_TCACHE_COUNT = 8, 15, 17
# heap_info (48 bytes): ar_ptr, prev, size, mprotect_size, pagesize, pad
HEAP_INFO = struct.Struct("<5Q8x")
# tcache_perthread_struct (640 bytes): u16 counts[64], tcache_entry *entries[64]
TCACHE = struct.Struct("<64H64Q")
TCACHE_CHUNK = 0x290
#: the chunk fields fd, bk at user-pointer offsets 0, 8
FD, BK = 16, 24
#: free-list links decoded one by one before every chunk's links are decoded at once
LAZY_LINKS = 1 << 16

#: state codes in the arrays
IN_USE, FREE = 0, 1
#: elements per slice where a pass over every chunk is done in slices (temporaries
#: of a few MiB, reused, instead of fresh whole-heap arrays)
_SLICE = 1 << 20
#: free-list names
LISTS = ("tcache", "fastbin", "unsorted", "smallbin", "largebin", "top")


class HeapError(MappedTraceError):
    """The glibc heap cannot be walked in this target (no glibc, unknown layout)."""


class HeapCorrupted(BadData):
    """A heap structure is inconsistent; ``chunk`` is the bad chunk's address
    (its header, as glibc's ``mchunkptr``)."""

    def __init__(self, where: str, chunk: int, message: str):
        super().__init__(f"glibc heap, {where}", None, f"chunk at {chunk:#x}: {message}",
                         hint="the heap is corrupted (a buffer overflow or a use after free in the program?)")
        self.chunk = chunk


@dataclass(frozen=True)
class Chunk:
    """One malloc chunk.

    ``size`` is what ``malloc_usable_size`` reports for an in-use chunk
    (``chunk_size - 8`` in an arena, ``chunk_size - 16`` when mmapped); a free
    chunk reports the same formula.  ``where`` is ``"main"``,
    ``"arena@0x…"`` or ``"mmapped"``; for a free chunk the list follows after
    a slash: ``"main/tcache"``, ``"arena@0x7f…/fastbin"``, ``"main/top"``.
    """

    address: int
    size: int
    chunk_size: int
    state: str
    where: str

    @property
    def header(self) -> int:
        """Address of the chunk header (glibc's ``mchunkptr``)."""
        return self.address - CHUNK_HDR_SZ

    @property
    def arena(self) -> str:
        return self.where.split("/", 1)[0]

    @property
    def free_list(self) -> str | None:
        parts = self.where.split("/", 1)
        return parts[1] if len(parts) > 1 else None


@dataclass(frozen=True)
class CorruptRegion:
    """Heap bytes the walk could not read as chunks: ``[start, end)`` from a
    bad chunk header (``chunk``) to where the walk found chunks again (or the
    end of the segment).  ``reason`` says what was wrong with the header."""

    start: int
    end: int
    where: str          # the arena's label
    chunk: int          # header address of the bad chunk
    reason: str

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class HeapSegment:
    """One contiguous run of chunks: the brk heap, or one ``heap_info``."""

    start: int          # first byte of the segment (heap_info or sbrk_base)
    end: int            # end of the segment
    first_chunk: int    # header address of the first chunk
    heap_info: int | None = None


@dataclass
class Arena:
    """One malloc arena (``struct malloc_state``)."""

    address: int
    label: str                      # "main" or "arena@0x…"
    top: int                        # top chunk header address
    top_size: int
    system_mem: int
    flags: int
    segments: list[HeapSegment] = field(default_factory=list)
    raw: tuple = ()                 # the decoded malloc_state fields

    @property
    def is_main(self) -> bool:
        return self.label == "main"


class _Memory:
    """Blocks of target memory read once; u64 reads served from them."""

    def __init__(self, target: Target):
        self.t = target
        self.starts: list[int] = []
        self.blocks: list[tuple[int, int, memoryview]] = []

    def add(self, start: int, data: bytes) -> memoryview:
        words = memoryview(data).cast("Q") if len(data) % 8 == 0 else memoryview(data[: len(data) & ~7]).cast("Q")
        i = bisect.bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.blocks.insert(i, (start, start + len(data), words))
        return words

    def u64(self, addr: int) -> int:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0:
            s, e, w = self.blocks[i]
            if addr + 8 <= e and not (addr - s) & 7:
                return w[(addr - s) >> 3]
        return self.t.read_u64(addr)

    def cached(self, addr: int) -> bool:
        i = bisect.bisect_right(self.starts, addr) - 1
        return i >= 0 and addr + 8 <= self.blocks[i][1]


#: Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size
_ELF64_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                       ("value", "<u8"), ("size", "<u8")])


class _Sym:
    """A symbol found by :func:`_find_symbols` (``addr`` is ``st_value``)."""

    __slots__ = ("name", "addr", "size", "type")

    def __init__(self, name: str, addr: int, size: int, type_: int):
        self.name, self.addr, self.size, self.type = name, addr, size, type_


def _find_symbols(path: str, names: tuple[str, ...]) -> dict[str, _Sym | None]:
    """Look up a few names in ``.symtab`` (else ``.dynsym``); cached per file version."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        mtime = 0
    return dict(_find_symbols_cached(path, mtime, names))


@functools.lru_cache(maxsize=16)
def _find_symbols_cached(path: str, _mtime: int, names: tuple[str, ...]) -> dict[str, _Sym | None]:
    """Look up a few names in ``.symtab`` (else ``.dynsym``) straight from the raw bytes.

    pyelftools decodes libc's 10 000 debug symbols in about 2 s; matching the
    string-table offsets of the wanted names with numpy takes milliseconds.
    """
    out: dict[str, _Sym | None] = {n: None for n in names}
    for tab, strtab in ((".symtab", ".strtab"), (".dynsym", ".dynstr")):
        raw, strs = elf.section_bytes(path, tab), elf.section_bytes(path, strtab)
        if not raw or not strs:
            continue
        syms = np.frombuffer(raw[: len(raw) - len(raw) % _ELF64_SYM.itemsize], dtype=_ELF64_SYM)
        defined = syms["shndx"] != 0
        for n in names:
            key = b"\0" + n.encode() + b"\0"
            pos, offs = 0, []
            for _ in range(64):         # the name may occur several times in the string table
                pos = strs.find(key, pos)
                if pos < 0:
                    break
                offs.append(pos + 1)
                pos += 1
            hit = np.flatnonzero(np.isin(syms["name"], offs) & defined)
            if len(hit):
                r = syms[hit[0]]
                out[n] = _Sym(n, int(r["value"]), int(r["size"]), int(r["info"]) & 0xF)
        if out.get(names[0]) is not None:
            return out
    return out


#: glibc versions whose malloc layouts this walker reads (2.35 added malloc_par's
#: hugepage fields and heap_info.pagesize)
SUPPORTED = ((2, 35), (2, 37))
_VERSION_RE = re.compile(rb"release version (\d+)\.(\d+)")


def _glibc_version(path: str) -> tuple[int, int] | None:
    """(major, minor) from libc's banner string ("… stable release version 2.36."), or None."""
    try:
        return _glibc_version_cached(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=8)
def _glibc_version_cached(path: str, _mtime: int) -> tuple[int, int] | None:
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return None
    m = _VERSION_RE.search(data)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _first_bad_header(idx: np.ndarray, raw: np.ndarray, stop: int) -> int:
    """Index of the first chunk whose size field is bad (below MINSIZE, not
    aligned, IS_MMAPPED in an arena, or running past word ``stop``), -1 if none.
    Checked in slices: the temporaries stay a few MiB however big the heap."""
    for lo in range(0, len(idx), _SLICE):
        r = raw[lo:lo + _SLICE]
        sz = (r & np.uint64(0xFFFFFFFFFFFFFFF8)).view(np.int64)
        with np.errstate(over="ignore"):
            bad = (idx[lo:lo + _SLICE] + (sz >> 3) > stop) | (sz < MINSIZE)
        bad |= (sz & (MALLOC_ALIGNMENT - 1)) != 0
        bad |= (r & np.uint64(IS_MMAPPED)) != 0
        if bad.any():
            return lo + int(np.flatnonzero(bad)[0])
    return -1


def _chain(w: memoryview, nw: np.ndarray, o: int, lim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Word offsets of the chunk headers from word ``o`` while below ``lim``,
    following size fields; stops after a size below MINSIZE (corrupt, or a
    fence post).  Returns them, their raw size fields and where the walk
    stopped.  The per-chunk loop runs in the compiled kernel (``mt_chain`` in
    ``_mark.c``) when there is one: 4 M chunks take 0.17 s there and 2.5 s here."""
    from .. import _markkernel
    mod = _markkernel.load()
    if mod is not None and o < lim and nw.flags.c_contiguous:
        ffi = mod.ffi
        cap = (lim - o) // 4 + 2
        out = np.empty(cap, np.int64)
        raw = np.empty(cap, np.uint64)
        pos = ffi.new("int64_t *", o)
        k = mod.lib.mt_chain(ffi.cast("uint64_t *", ffi.from_buffer(nw)), len(nw), pos, lim,
                             ffi.cast("int64_t *", ffi.from_buffer(out)),
                             ffi.cast("uint64_t *", ffi.from_buffer(raw)), cap)
        return out[:k], raw[:k], int(pos[0])     # views: the untouched rest is never paged in
    offs: list[int] = []
    app = offs.append
    while o < lim:
        app(o)
        s = w[o + 1] >> 3       # size in words, flag bits shifted out
        if s < 4:               # below MINSIZE: corrupt, or a fence post
            break
        o += s
    idx = np.asarray(offs, dtype=np.int64)
    return idx, (nw[idx + 1] if len(idx) else np.zeros(0, np.uint64)), o


def _join(parts: list[np.ndarray], dtype) -> np.ndarray:
    """The parts end to end.  When the first is a view at the start of a bigger
    buffer (``_chain``'s, sized for the most chunks a segment can hold and mostly
    never paged in) with room for the rest, they are written after it there:
    no copy of a column of the whole heap (16 bytes per chunk at the walk's peak)."""
    parts = [p for p in parts if len(p)] or [np.zeros(0, dtype)]
    if len(parts) == 1:
        return parts[0]
    first, total = parts[0], sum(len(p) for p in parts)
    buf = first.base
    if (isinstance(buf, np.ndarray) and buf.ndim == 1 and buf.dtype == first.dtype and first.flags.c_contiguous
            and buf.flags.c_contiguous and buf.flags.writeable and len(buf) >= total
            and first.ctypes.data == buf.ctypes.data):
        pos = len(first)
        for p in parts[1:]:
            buf[pos:pos + len(p)] = p
            pos += len(p)
        return buf[:total]
    return np.concatenate(parts).astype(dtype, copy=False)


class ChunkList(Sequence):
    """A read-only, list-like view of some of a heap's chunks (made on access)."""

    def __init__(self, heap: "GlibcHeap", index: np.ndarray | None):
        self._heap = heap
        self._index = None if index is None else index.tolist()

    def __len__(self) -> int:
        return len(self._heap.headers) if self._index is None else len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._heap._chunk(i if self._index is None else self._index[i])

    def __iter__(self):
        mk = self._heap._chunk
        return (mk(i) for i in (range(len(self)) if self._index is None else self._index))

    def __repr__(self) -> str:
        return f"<{len(self)} chunks>"


def _bin_kind(i: int) -> str:
    return "unsorted" if i == 1 else "smallbin" if i < 64 else "largebin"


def locked_arenas(target: Target, modules: ModuleMap) -> list[str]:
    """Labels of the arenas whose mutex is held — a thread was inside malloc or
    free when the process was stopped, so their lists may be mid-update —
    found without walking the heap (main_arena, mp_ and the arena ring only).

    :raises HeapError: no glibc heap found (the full walk would say the same)
    """
    heap = GlibcHeap(target, modules, walk=False)
    return [a.label for a in heap.arenas if a.raw and a.raw[F_MUTEX]]


class GlibcHeap:
    """The glibc heap of ``target``.

    :param target: a stopped process or a snapshot
    :param modules: the target's :class:`~mappedtrace.modules.ModuleMap`
    :param use_debug_symbols: look for libc's debug file (libc6-dbg); False
        forces the heuristics
    :raises HeapError: no glibc in the target, or the heap cannot be located
    :raises HeapCorrupted: arena state (malloc_state, heap_info) is inconsistent;
        damaged chunks and free lists become :attr:`corrupted` regions instead

    Attributes: ``arenas`` (main first, then the ``next`` ring), ``stats``
    (mallinfo2's fields ``arena ordblks smblks hblks hblkhd uordblks
    fordblks keepcost fsmblks`` computed from the walk — tcache chunks count
    as in use there, as in glibc — plus ``tcache_blks/bytes``,
    ``in_use_blks/bytes`` and ``per_arena``: label → the same per arena with
    ``system_mem``, ``top``, ``overhead`` and ``unsorted/smallbin/largebin_
    blks/bytes``), ``tcaches`` (owner, user address of each thread's
    tcache_perthread_struct), ``mmapped_lead`` (header → memalign offset),
    ``main_gaps`` (foreign-sbrk gaps), ``corrupted`` (:class:`CorruptRegion`
    list, empty for a sound heap), ``warnings``, ``exact``, ``mp``
    (``mp_`` decoded, or None), ``mp_addr``, ``main_arena_addr``.  Column-wise numpy arrays, one row per chunk in
    address order: ``headers``, ``addresses`` (user pointers), ``usable``,
    ``chunk_sizes``, ``state`` (0 in use, 1 free), ``list_code`` (index into
    :data:`LISTS`, -1 in use), ``arena_index`` (-1 mmapped).
    ``memory_blocks``: ``(address, uint8 array)`` of the heap segments as the
    walk read them, sorted; :func:`mappedtrace.trace.mark` marks from these
    bytes instead of reading the heap a second time (1 GiB read twice cost
    about 1.5 s more).  :meth:`release_memory` drops them.
    """

    def __init__(self, target: Target, modules: ModuleMap, *, use_debug_symbols: bool = True,
                 walk: bool = True):
        self.target = target
        self.modules = modules
        self.warnings: list[str] = []
        self.exact = False
        self.arenas: list[Arena] = []
        self.mp: dict[str, int] | None = None
        self._mem = _Memory(target)
        self._shared: tuple | None = None        # share_in_use
        self._escaped = False                    # headers/chunk_sizes handed out
        self._headers = self._chunk_sizes = np.zeros(0, np.int64)
        self._blocks: list[tuple[int, np.ndarray]] = []
        #: (start, end) of gaps in the brk heap that are not malloc's (foreign sbrk), fence posts included
        self.main_gaps: list[tuple[int, int]] = []
        self._lists: tuple | None = None
        #: regions of damaged heap (a bad chunk header, a bad top size, a broken free list)
        self.corrupted: list[CorruptRegion] = []
        #: (start, end) of the brk heap as the heuristics saw it (the run of [heap] mappings)
        self._heap_hint: tuple[int, int] | None = None
        libc = modules.find("libc.so") or modules.find("libc-")
        if libc is None:
            raise HeapError("no glibc (libc.so.6) is mapped in the target",
                            hint="a statically linked or non-glibc program has no heap this walker reads")
        self.libc = libc
        self.glibc_version = _glibc_version(libc.path)
        if self.glibc_version is not None and not SUPPORTED[0] <= self.glibc_version <= SUPPORTED[1]:
            raise UnsupportedVersion(libc.path, None, f"glibc {self.glibc_version[0]}.{self.glibc_version[1]} is not "
                                     f"supported; this walker reads glibc {SUPPORTED[0][0]}.{SUPPORTED[0][1]}–"
                                     f"{SUPPORTED[1][0]}.{SUPPORTED[1][1]} (the malloc layouts differ)")
        if self.glibc_version is None:
            self.warnings.append(f"{libc.path}: glibc version not found; assuming 2.36 layouts")
        syms = self._debug_symbols(libc) if use_debug_symbols else None
        if syms is not None:
            self._locate_exact(syms)
        else:
            self._locate_heuristic()
        if not walk:            # the arenas only (their locks): :func:`locked_arenas`
            self._mem = None
            self.memory_blocks = []
            return
        try:
            self._walk_all()
        except (HeapCorrupted, HeapError) as e:
            locked = [a.label for a in self.arenas if a.raw and a.raw[F_MUTEX]]
            if locked:
                e.hint = (f"arena {', '.join(locked)} was locked: a thread was inside malloc or free when the "
                          "process was stopped; stop it again")
            raise
        locked = [a.label for a in self.arenas if a.raw and a.raw[F_MUTEX]]
        if self.corrupted and locked:
            self.warnings.append(f"arena {', '.join(locked)} was locked when the process was stopped: the "
                                 "corrupted regions may be a malloc or free in progress, not damage")
        self._mem = None
        self.memory_blocks: list[tuple[int, np.ndarray]] = sorted(self._blocks, key=lambda b: b[0])
        self._blocks = []
        self.warnings = [w.replace("main (heuristic):", "main:") for w in self.warnings]
        self.warnings = list(dict.fromkeys(self.warnings))      # the heuristics walk the brk heap twice

    # ------------------------------------------------------------------
    # locating main_arena, mp_ and the arenas

    def _debug_symbols(self, libc: Module) -> dict | None:
        """main_arena, mp_, tcache, thread_arena from libc's (debug) symbol table, or None."""
        try:
            cands = [libc.path]
            dbg = elf.debug_file_for(libc.path)
            if dbg:
                cands.insert(0, dbg)
            for path in cands:
                got = _find_symbols(path, ("main_arena", "mp_", "tcache", "thread_arena"))
                if got["main_arena"] is not None and got["mp_"] is not None:
                    got["_path"] = path
                    return got
        except MappedTraceError as e:
            self.warnings.append(f"libc debug symbols unusable ({e.message}); using heuristics")
            return None
        self.warnings.append(f"no debug symbols for {libc.path} (install libc6-dbg); using heuristics")
        return None

    def _locate_exact(self, syms: dict) -> None:
        ma, mp = syms["main_arena"], syms["mp_"]
        if ma.size != MSTATE.size or mp.size != MALLOC_PAR.size:
            raise UnsupportedVersion(syms["_path"], None,
                                     f"main_arena is {ma.size} bytes and mp_ {mp.size} bytes; this walker reads "
                                     f"glibc 2.35–2.37 ({MSTATE.size} and {MALLOC_PAR.size} bytes)")
        self.main_arena_addr = self.libc.to_run(ma.addr)
        self.mp_addr = self.libc.to_run(mp.addr)
        self._read_mp()
        self._read_arenas()
        self._tls = (syms.get("tcache"), syms.get("thread_arena"))
        self.exact = True

    def _read_mp(self) -> None:
        v = MALLOC_PAR.unpack(self._read(self.mp_addr, MALLOC_PAR.size, "mp_", "malloc_par"))
        names = ("trim_threshold", "top_pad", "mmap_threshold", "arena_test", "arena_max", "thp_pagesize",
                 "hp_pagesize", "hp_flags", "n_mmaps", "n_mmaps_max", "max_n_mmaps", "no_dyn_threshold",
                 "mmapped_mem", "max_mmapped_mem", "sbrk_base", "tcache_bins", "tcache_max_bytes",
                 "tcache_count", "tcache_unsorted_limit")
        self.mp = dict(zip(names, v))

    def _corrupt(self, where: str, chunk: int, start: int, end: int, reason: str) -> None:
        """Mark ``[start, end)`` as damaged heap (the walk goes on around it) and warn."""
        self.corrupted.append(CorruptRegion(start, end, where, chunk, reason))
        self.warnings.append(f"{where}: corrupted chunk at {chunk:#x}: {reason}; [{start:#x}, {end:#x}) "
                             f"({end - start} bytes) skipped: objects there are not reported as leaks")

    def _read_mstate(self, addr: int) -> tuple:
        return MSTATE.unpack(self._read(addr, MSTATE.size, f"arena@{addr:#x}", "malloc_state"))

    def _read(self, addr: int, size: int, label: str, what: str) -> bytes:
        """``target.read``, a fault becoming a HeapCorrupted naming the structure."""
        try:
            return self.target.read(addr, size)
        except TargetFault:
            raise HeapCorrupted(label, addr, f"{what} is not readable memory") from None

    def _read_block(self, addr: int, size: int) -> np.ndarray:
        """A big block of target memory: in place where the target holds it (a
        captured copy, an mmapped snapshot: no second copy of the heap), else
        read straight into a (huge-page) buffer."""
        view = self.target.view(addr, size) if hasattr(self.target, "view") else None
        if view is not None:
            buf = np.frombuffer(view, np.uint8)
        else:
            buf = new_buffer(size)
            self.target.read_into(addr, buf)
        self._blocks.append((addr, buf))
        return buf

    def _read_arenas(self) -> None:
        """main_arena and the ``next`` ring, with each arena's heap segments."""
        addr = self.main_arena_addr
        seen: set[int] = set()
        for _ in range(MAX_ARENAS):
            if addr in seen:
                break
            seen.add(addr)
            ms = self._read_mstate(addr)
            label = "main" if addr == self.main_arena_addr else f"arena@{addr:#x}"
            top = ms[F_TOP]
            arena = Arena(addr, label, top, 0, ms[F_SYSTEM_MEM], ms[F_FLAGS], raw=ms)
            if ms[F_MUTEX]:
                self.warnings.append(f"{label} is locked (a thread was inside malloc or free when stopped): "
                                     "its lists may be mid-update")
            if top:
                arena.top_size = int.from_bytes(self._read(top + SIZE_SZ, 8, label, "top chunk"), "little") & ~SIZE_BITS
            self.arenas.append(arena)
            nxt = ms[F_NEXT]
            if nxt == 0 or nxt & 7:
                raise HeapCorrupted(f"arena {addr:#x}", addr, f"arena.next {nxt:#x} is not an arena address")
            addr = nxt
        else:
            raise HeapCorrupted("main_arena", self.main_arena_addr, f"arena ring longer than {MAX_ARENAS}")
        if addr != self.main_arena_addr:
            raise HeapCorrupted(f"arena {addr:#x}", addr, "the arena ring does not return to main_arena")
        for a in self.arenas:
            if a.is_main:
                self._main_segments(a)
            else:
                self._thread_segments(a)

    def _mapped_run(self, addr: int) -> tuple[int, int] | None:
        """``(start, end)`` of the run of adjacent readable mappings holding ``addr``.

        The kernel shows one range of memory as several ``/proc/PID/maps``
        lines when parts of it differ (a heap grown after ``fork`` has another
        ``anon_vma``; ``mprotect``, ``madvise`` and transparent huge pages
        split a mapping): glibc sees one heap, so it is read as one."""
        maps = sorted(self.target.mappings, key=lambda m: m.start)
        i = bisect.bisect_right([m.start for m in maps], addr) - 1
        if i < 0 or not maps[i].contains(addr) or not maps[i].readable:
            return None
        lo = hi = i
        while lo > 0 and maps[lo - 1].end == maps[lo].start and maps[lo - 1].readable:
            lo -= 1
        while hi + 1 < len(maps) and maps[hi + 1].start == maps[hi].end and maps[hi + 1].readable:
            hi += 1
        return maps[lo].start, maps[hi].end

    def _main_segments(self, a: Arena) -> None:
        """The brk heap as glibc delimits it: from ``mp_.sbrk_base`` to the end
        of the main arena's top chunk (``system_mem`` bytes when no one else
        moved the brk), however many mappings the kernel shows there."""
        if a.top == 0 or a.top == a.address + MS_BINS - 2 * SIZE_SZ:
            return              # malloc never initialised the main arena (top is the unsorted bin)
        run = self._mapped_run(a.top)
        if run is None:
            raise HeapCorrupted(a.label, a.top, "the top chunk is not in readable memory")
        contiguous = not a.flags & NONCONTIGUOUS_BIT
        base = self.mp["sbrk_base"] if self.mp else 0
        if not contiguous:
            self.warnings.append("main arena is non-contiguous (brk failed or was used by someone else); "
                                 "only the segment holding the top chunk is walked")
            m = self.target.mapping_at(a.top)
            if not (base and m.start <= base <= a.top):
                base = m.start      # imprecise when the kernel merged it with other anonymous memory
        elif not base or not run[0] <= base <= a.top:
            # Heuristics without mp_: the start of the [heap] run (assumed: malloc made the brk heap,
            # nothing moved the brk before its first sbrk); else the start of the top's run.
            if base:
                self.warnings.append(f"main: mp_.sbrk_base {base:#x} is not below the top chunk {a.top:#x} "
                                     "in its memory; the heap is walked from the start of that memory")
            hint = self._heap_hint
            base = hint[0] if hint and run[0] <= hint[0] <= a.top else run[0]
        end = a.top + a.top_size
        state_end = base + a.system_mem
        # The top chunk ends the brk heap: at sbrk_base + system_mem, or, when someone else
        # moved the brk (gaps that system_mem does not count), further on at a page boundary.
        bad_top = a.top_size < MINSIZE or a.top_size & (MALLOC_ALIGNMENT - 1) or end > run[1] or (
            contiguous and end != state_end and (end < state_end or end % PAGE))
        if bad_top:
            # A bad top size (a heap overflow into the top chunk): the heap still ends where
            # glibc's accounting says, sbrk_base + system_mem (else at the end of the mapped
            # run).  The walk (_walk_words) marks the top's header as corrupted.
            end = state_end if a.top + MINSIZE <= state_end <= run[1] else run[1]
        first = base + ((-(base + CHUNK_HDR_SZ)) & (MALLOC_ALIGNMENT - 1))
        a.segments.append(HeapSegment(base, end, first))

    def _thread_segments(self, a: Arena) -> None:
        # heap_max_size(): HEAP_MAX_SIZE, or 4 huge pages with the glibc.malloc.hugetlb tunable
        hmax = 4 * self.mp["hp_pagesize"] if self.mp and self.mp["hp_pagesize"] else HEAP_MAX_SIZE
        if hmax & (hmax - 1):
            raise HeapCorrupted("mp_", self.mp_addr, f"mp_.hp_pagesize {self.mp['hp_pagesize']:#x} is not a power of 2")
        h = a.top & ~(hmax - 1)
        segs = []
        for _ in range(MAX_HEAPS_PER_ARENA):
            ar_ptr, prev, size, _mprot, _pagesize = HEAP_INFO.unpack(self._read(h, HEAP_INFO.size, a.label, "heap_info"))
            if ar_ptr != a.address:
                raise HeapCorrupted(a.label, h, f"heap_info.ar_ptr {ar_ptr:#x} is not its arena {a.address:#x}")
            if size < HEAP_INFO.size or size > hmax:
                raise HeapCorrupted(a.label, h, f"heap_info.size {size:#x} is out of range")
            if h <= a.address < h + size:       # the arena's first heap holds the malloc_state
                first = a.address + MSTATE.size
                first += (-(first + CHUNK_HDR_SZ)) & (MALLOC_ALIGNMENT - 1)
            else:
                first = h + HEAP_INFO.size
            segs.append(HeapSegment(h, h + size, first, h))
            if prev == 0:
                break
            if prev & (hmax - 1):
                raise HeapCorrupted(a.label, h, f"heap_info.prev {prev:#x} is not {hmax:#x}-aligned")
            h = prev
        else:
            raise HeapCorrupted(a.label, h, f"more than {MAX_HEAPS_PER_ARENA} heaps in the arena")
        a.segments = segs[::-1]

    # --- heuristics -----------------------------------------------------
    def _libc_data_ranges(self) -> list[tuple[int, int]]:
        """libc's writable mappings plus the anonymous one right after them (.bss)."""
        out = []
        maps = sorted(self.target.mappings, key=lambda m: m.start)
        for i, m in enumerate(maps):
            if m.path == self.libc.path and m.writable and m.readable:
                out.append((m.start, m.end))
                if i + 1 < len(maps) and not maps[i + 1].path and maps[i + 1].start == m.end \
                        and maps[i + 1].readable:
                    out.append((maps[i + 1].start, maps[i + 1].end))
        return out

    def _locate_heuristic(self) -> None:
        self.exact = False
        self._tls = (None, None)
        maps = sorted(self.target.mappings, key=lambda m: m.start)
        k = next((i for i, m in enumerate(maps) if m.path == "[heap]"), None)
        data = [(s, self.target.read(s, e - s)) for s, e in self._libc_data_ranges()]
        if k is None:
            self._locate_heuristic_no_heap(data)
            return
        # Assumed: the brk heap is the run of adjacent mappings labelled [heap] (the kernel
        # labels every mapping between start_brk and brk so; fork, mprotect, madvise and THP
        # split it into several) and malloc made it (nothing moved the brk before its first
        # sbrk).  Only locating main_arena and mp_ uses this; the walk itself then follows
        # glibc's state (mp_.sbrk_base, the top chunk).
        lo, j = maps[k].start, k
        while j + 1 < len(maps) and maps[j + 1].path == "[heap]" and maps[j + 1].start == maps[j].end:
            j += 1
        hi = maps[j].end
        self._heap_hint = (lo, hi)
        length = hi - lo
        # main_arena: a malloc_state in libc's data whose top chunk lies in the brk heap, whose
        # system_mem fits in it (less when someone else took part of the brk heap), and whose
        # fastbins and bins are each empty (0, or a bin header pointing at itself) or point into
        # the brk heap.  A damaged chunk does not disturb this (no walk needed to find it).
        cands = []
        for start, blob in data:
            w = np.frombuffer(blob[: len(blob) & ~7], dtype="<u8")
            for idx in np.flatnonzero((w >= lo) & (w < hi) & ((w & np.uint64(MALLOC_ALIGNMENT - 1)) == 0)):
                a = start + int(idx) * 8 - MS_TOP
                if a < start or a + MSTATE.size > start + len(blob):
                    continue
                ms = MSTATE.unpack_from(blob, a - start)
                if 0 < ms[F_SYSTEM_MEM] <= length and ms[F_NEXT] and not ms[F_NEXT] & 7 \
                        and self._lists_in(a, ms, lo, hi):
                    cands.append(a)
        if len(cands) != 1:
            raise HeapError(f"cannot locate main_arena in libc's data ({len(cands)} candidates)",
                            hint="install libc6-dbg for exact heap walking")
        self.main_arena_addr = cands[0]
        self.warnings.append(f"heuristic: main_arena at {self.main_arena_addr:#x} (no debug symbols)")
        # mp_: sbrk_base == heap start, tcache_bins == 64, a sane tcache_count
        mps = []
        for start, blob in data:
            w = np.frombuffer(blob[: len(blob) & ~7], dtype="<u8")
            for idx in np.flatnonzero(w == lo):
                a = start + int(idx) * 8 - MP_SBRK_BASE
                if a < start or a + MALLOC_PAR.size > start + len(blob):
                    continue
                v = MALLOC_PAR.unpack_from(blob, a - start)
                if v[P_TCACHE_BINS] == TCACHE_MAX_BINS and v[P_TCACHE_COUNT] <= 0xFFFF and v[P_N_MMAPS] >= 0:
                    mps.append(a)
        if len(mps) == 1:
            self.mp_addr = mps[0]
            self._read_mp()
        else:
            self.mp_addr = 0
            self.warnings.append(f"heuristic: mp_ not found ({len(mps)} candidates); "
                                 "mmapped chunks are not cross-checked")
        self._read_arenas()

    @staticmethod
    def _lists_in(a: int, ms: tuple, lo: int, hi: int) -> bool:
        """Every fastbin of the malloc_state ``ms`` at ``a`` is 0 or in [lo, hi), every bin
        is empty (its header points at itself) or points into [lo, hi) both ways."""
        for v in ms[F_FASTBINS:F_FASTBINS + NFASTBINS]:
            if v and not lo <= v < hi:
                return False
        for b in range(1, NBINS):
            fd, bk = ms[F_BINS + 2 * (b - 1)], ms[F_BINS + 2 * (b - 1) + 1]
            head = a + MS_BINS + (b - 1) * 16 - FD
            if not ((fd == head and bk == head) or (lo <= fd < hi and lo <= bk < hi)):
                return False
        return True

    def _locate_heuristic_no_heap(self, data: list[tuple[int, bytes]]) -> None:
        """No brk heap: main_arena still holds its initial top, ``unsorted_chunks(av)``
        (the address of its own ``top`` field), and its bin headers point at themselves."""
        cands = []
        for start, blob in data:
            w = np.frombuffer(blob[: len(blob) & ~7], dtype="<u8")
            own = np.uint64(start) + np.arange(len(w), dtype=np.uint64) * np.uint64(8)
            # initialised: top == &top; never initialised (no malloc yet): next == &main_arena
            hits = [(int(i) * 8 - MS_TOP, True) for i in np.flatnonzero(w == own)] + \
                [(int(i) * 8 - MS_NEXT, False) for i in np.flatnonzero(w == own - np.uint64(MS_NEXT))]
            for off, initialised in hits:
                a = start + off
                if off < 0 or off + MSTATE.size > len(blob):
                    continue
                ms = MSTATE.unpack_from(blob, off)
                bin2 = a + MS_BINS + 16 - FD          # bin_at(2): an empty small bin points at itself
                if initialised and ms[F_BINS + 2] == bin2 and ms[F_BINS + 3] == bin2 and ms[F_NEXT] and not ms[F_NEXT] & 7:
                    cands.append(a)
                elif not initialised and ms[F_NEXT] == a and not any(ms[F_FASTBINS:F_BINS + 254]) and ms[F_SYSTEM_MEM] == 0:
                    cands.append(a)
        if len(cands) != 1:
            raise HeapError(f"no [heap] mapping and main_arena not found in libc's data ({len(cands)} candidates)",
                            hint="install libc6-dbg for exact heap walking")
        self.main_arena_addr = cands[0]
        self.mp_addr = 0
        self.warnings.append(f"heuristic: main_arena at {self.main_arena_addr:#x} (no debug symbols, no brk heap); "
                             "mp_ not located, mmapped chunks are not cross-checked")
        self._read_arenas()

    # ------------------------------------------------------------------
    # walking

    def _walk_words(self, words: memoryview, base: int, first: int, end: int, top: int | None,
                    label: str, gaps: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Chunk header offsets (from ``base``) and raw size fields from ``first`` to ``top`` (or ``end``).

        Stops at the top chunk (included), or at the fence posts that close a
        non-last thread heap.  The hot loop only follows size fields (at
        least 32 bytes per step, so it is bounded by the segment's size);
        the headers are checked afterwards with numpy and the first bad one
        is named.  With ``gaps`` (the main arena), a double fence post (two
        0x10 chunks: sysmalloc closing a segment when someone else moved the
        brk) is crossed with :meth:`_bridge`.

        A bad header (a heap overflow, a use after free) does not stop the
        walk: the bytes from it to the next position whose chunks chain to
        the top chunk (:meth:`_resync`; else to the end of the segment) become
        a :class:`CorruptRegion`, and a top chunk whose size does not reach
        the segment's end (which glibc's state gives: ``system_mem``,
        ``heap_info.size``) keeps its place with the size that does.
        """
        o = (first - base) >> 3
        end_w = (end - base) >> 3
        if top is not None:
            lim = (top - base) >> 3
            if not o <= lim <= end_w - 2:
                raise HeapCorrupted(label, top, f"top chunk lies outside its heap [{base:#x}, {end:#x})")
        else:
            lim = end_w - 1             # a header needs two words
        stop = end_w if top is None else lim
        w = words
        nw = np.frombuffer(words, dtype="<u8")
        parts_i: list[np.ndarray] = []
        parts_r: list[np.ndarray] = []
        for _ in range(MAX_GAPS + 1):
            idx, raw, o = _chain(w, nw, o, lim)
            i = _first_bad_header(idx, raw, stop)
            if i < 0:
                parts_i.append(idx)
                parts_r.append(raw)
                break
            off, size, r = int(idx[i]) * 8, int(raw[i]) & ~SIZE_BITS, int(raw[i])
            end_off = end - base
            nxt_size = int(nw[(off >> 3) + 3]) & ~SIZE_BITS if (off >> 3) + 3 < len(nw) else -1
            if gaps and i == len(idx) - 1 and size == CHUNK_HDR_SZ and nxt_size == CHUNK_HDR_SZ \
                    and off + 2 * CHUNK_HDR_SZ < stop * 8:
                parts_i.append(idx[:-1])
                parts_r.append(raw[:-1])
                o = self._bridge(nw, base, off + 2 * CHUNK_HDR_SZ, stop * 8, label)
                continue
            fence = i == len(idx) - 1 and top is None and (
                (size == 0 and off + CHUNK_HDR_SZ == end_off) or
                (size == CHUNK_HDR_SZ and off + 2 * CHUNK_HDR_SZ == end_off and nxt_size == 0))
            if fence:
                parts_i.append(idx[:-1])
                parts_r.append(raw[:-1])
                o = end_w
                break
            why = ("size field is 0" if size == 0 else
                   f"size {size:#x} is below the minimum {MINSIZE:#x}" if size < MINSIZE else
                   f"size {size:#x} is not {MALLOC_ALIGNMENT}-aligned" if size & (MALLOC_ALIGNMENT - 1) else
                   f"IS_MMAPPED set in an arena chunk (size field {r:#x})" if r & IS_MMAPPED else
                   f"size {size:#x} runs past the heap end {end:#x}" if top is None else
                   f"size {size:#x} runs over the top chunk at {top:#x}")
            parts_i.append(idx[:i])
            parts_r.append(raw[:i])
            resume = self._resync(nw, base, off + MALLOC_ALIGNMENT, stop * 8, fences=gaps)
            if resume is None:          # nothing after it chains to the top: the rest of the segment
                resume = stop * 8
            self._corrupt(label, base + off, base + off, base + resume, why)
            o = resume >> 3
            if resume >= stop * 8:
                o = lim if top is not None else end_w
                break
        else:
            raise HeapCorrupted(label, base + o * 8, f"more than {MAX_GAPS} gaps or damaged chunks in the heap")
        if top is None and o != end_w:
            self._corrupt(label, base + o * 8, base + o * 8, end, f"chunk header runs past the heap end {end:#x}")
        if top is not None:
            traw = int(nw[lim + 1])
            tsize = traw & ~SIZE_BITS
            if lim + (tsize >> 3) != end_w or tsize & (MALLOC_ALIGNMENT - 1):
                self._corrupt(label, top, top, top + CHUNK_HDR_SZ,
                              f"top chunk size {tsize:#x} does not reach the heap end {end:#x}")
                traw = (end - top) | (traw & SIZE_BITS & ~IS_MMAPPED)
            parts_i.append(np.array([lim], np.int64))
            parts_r.append(np.array([traw], np.uint64))
        idx = _join(parts_i, np.int64)      # in _chain's (mostly untouched) buffers when they have room
        raw = _join(parts_r, np.uint64)
        idx *= 8
        return idx, raw

    def _resync(self, nw: np.ndarray, base: int, start: int, target: int, *, fences: bool = False,
                prev_inuse: bool = False) -> int | None:
        """The first 16-aligned offset in ``[start, target)`` (from ``base``) from which
        the chunks chain exactly to ``target`` (the top chunk or the heap end), or, with
        ``fences``, to a double fence post (the end of a main-heap segment); None if none.

        Every position is tried at once by pointer doubling over "next chunk"
        links (log2 n numpy gathers).  Imprecision: a word of foreign or
        damaged data that looks like a size field leading onto a real chunk
        starts the chain early (those bytes then show as a chunk).  Bounded by
        MAX_BRIDGE bytes (the caller names what lies beyond).
        """
        start += (-(base + start)) & (MALLOC_ALIGNMENT - 1)
        if target - start > MAX_BRIDGE:
            return None
        pos = np.arange(start, target, MALLOC_ALIGNMENT, dtype=np.int64)
        n = len(pos)
        if n == 0:
            return None
        raw = nw[(pos >> 3) + 1]
        size = (raw & np.uint64(0xFFFFFFFFFFFFFFF8))
        ok = (size >= MINSIZE) & (size % MALLOC_ALIGNMENT == 0) & ((raw & np.uint64(IS_MMAPPED)) == 0) \
            & (size <= np.uint64(target)) & (pos + np.minimum(size, np.uint64(target)).astype(np.int64) <= target)
        sz = np.where(ok, size, 0).astype(np.int64)
        nxt = np.where(ok, (pos + sz - start) // MALLOC_ALIGNMENT, n + 1)
        if fences:
            fence = (size == CHUNK_HDR_SZ) & np.append((size[1:] == CHUNK_HDR_SZ), False)
            nxt = np.where(fence, n, nxt)                   # a following segment's end counts as arrival
        nxt = np.append(nxt, [n, n + 1])                    # n: arrived, n + 1: dead end
        for _ in range(max(1, int(n).bit_length())):
            nxt = nxt[nxt]
        sel = (nxt[:n] == n) & ok
        if prev_inuse:
            sel &= (raw & np.uint64(PREV_INUSE)) != 0
        good = np.flatnonzero(sel)
        return int(pos[good[0]]) if len(good) else None

    def _bridge(self, nw: np.ndarray, base: int, start: int, target: int, label: str) -> int:
        """Where the main heap goes on after a gap (memory someone else took with sbrk).

        The next segment starts somewhere in ``[start, target)`` (offsets from
        ``base``); its chunks chain to ``target`` (the top chunk, or the heap
        end) or to the next double fence post; the first such position that
        has PREV_INUSE set (a segment's first chunk does) is taken
        (:meth:`_resync`).  Imprecision: foreign data in the gap that happens
        to chain onto the real chunks would be reported as chunks.
        :returns: the word index where the walk resumes
        """
        start += (-(base + start)) & (MALLOC_ALIGNMENT - 1)
        if target - start > MAX_BRIDGE:
            raise HeapCorrupted(label, base + start - 2 * CHUNK_HDR_SZ, f"fence posts followed by a gap of "
                                f"{target - start:#x} bytes: too far to search for the next segment")
        if start >= target:
            return target >> 3
        resume = self._resync(nw, base, start, target, fences=True, prev_inuse=True)
        if resume is None:
            raise HeapCorrupted(label, base + start - 2 * CHUNK_HDR_SZ, "fence posts, and no chunk after them "
                                "leads to the top chunk")
        self.warnings.append(f"{label}: gap [{base + start:#x}, {base + resume:#x}) in the brk heap "
                             "(someone else moved the brk); walk resumed after it")
        self.main_gaps.append((base + start - 2 * CHUNK_HDR_SZ, base + resume))
        return resume >> 3

    def _walk_all(self) -> None:
        self.main_gaps = []
        hdrs, raws, arena_idx = [], [], []
        # arena numbers in the narrowest type that holds them (2 bytes per chunk, not 4)
        adt = np.int16 if len(self.arenas) < 1 << 15 else np.int32
        #: per arena: bytes of its segments outside chunks (heap_info, malloc_state, alignment, fence posts)
        self.overhead: dict[str, int] = {}
        for ai, a in enumerate(self.arenas):
            over = 0
            for seg in a.segments:
                last = seg is a.segments[-1]
                if self._mem.cached(seg.start) and self._mem.cached(seg.end - 8):
                    i = bisect.bisect_right(self._mem.starts, seg.start) - 1
                    words, base = self._mem.blocks[i][2], self._mem.starts[i]
                else:
                    try:
                        words = self._mem.add(seg.start, self._read_block(seg.start, seg.end - seg.start))
                    except TargetFault as e:
                        raise HeapError(f"{a.label}: heap segment [{seg.start:#x}, {seg.end:#x}) is unreadable: "
                                        f"{e.message}") from None
                    base = seg.start
                offs, r = self._walk_words(words, base, seg.first_chunk, seg.end, a.top if last else None, a.label,
                                           gaps=a.is_main)
                offs += base
                hdrs.append(offs)
                raws.append(r)
                arena_idx.append(np.full(len(offs), ai, dtype=adt))
                walked = int((r & np.uint64(~SIZE_BITS & 0xFFFFFFFFFFFFFFFF)).sum()) if len(r) else 0
                over += (seg.end - seg.start) - walked
            self.overhead[a.label] = over
        mm_h, mm_r = self._aligned_mmapped(*self._find_mmapped())
        hdrs.append(np.asarray(mm_h, dtype=np.int64))
        raws.append(np.asarray(mm_r, dtype=np.uint64))
        arena_idx.append(np.full(len(mm_h), -1, dtype=adt))
        # (a single part is taken as it is, the others written after the first where
        # its buffer has room: no copy of a column of the whole heap)
        keep = [i for i in range(len(hdrs)) if len(hdrs[i])] or [0]
        hdr = _join([hdrs[i] for i in keep], np.int64)
        raw = _join([raws[i] for i in keep], np.uint64)
        aidx = np.concatenate([arena_idx[i] for i in keep]).astype(adt, copy=False)
        del hdrs, raws, arena_idx
        if len(hdr) > 1 and not bool(np.all(hdr[1:] > hdr[:-1])):      # else: in order already
            order = np.argsort(hdr, kind="stable")
            hdr, raw, aidx = hdr[order], raw[order], aidx[order]
            if (np.diff(hdr) <= 0).any():
                i = int(np.flatnonzero(np.diff(hdr) <= 0)[0])
                raise HeapCorrupted("heap", int(hdr[i + 1]), "chunk found twice (overlapping heaps)")
        self._headers = hdr
        raw &= np.uint64(0xFFFFFFFFFFFFFFF8)
        self._chunk_sizes = raw.view(np.int64)       # in place: the raw fields are not needed again
        del raw
        self.arena_index = aidx
        self.state = np.zeros(len(self._h), dtype=np.uint8)
        self.list_code = np.full(len(self._h), -1, dtype=np.int8)
        self._classify()
        self._make_stats()

    # --- mmapped chunks ---------------------------------------------------
    def _anon_ranges(self) -> list[tuple[int, int]]:
        """Readable anonymous memory outside the arenas' heap segments, adjacent
        mappings joined into one range (an mmapped chunk split by mprotect, madvise
        or THP is one chunk); runs without a writable part are left out."""
        heaps = sorted((sg.start, sg.end) for a in self.arenas for sg in a.segments)
        runs: list[list] = []           # [start, end, any writable]
        for m in sorted(self.target.mappings, key=lambda m: m.start):
            if (m.path and not m.path.startswith("[anon")) or not m.readable:
                continue
            if runs and runs[-1][1] == m.start:
                runs[-1][1] = m.end
                runs[-1][2] |= m.writable
            else:
                runs.append([m.start, m.end, m.writable])
        out = []
        for start, end, writable in runs:
            if not writable:
                continue
            lo = start
            for hs, he in heaps:
                if he <= lo or hs >= end:
                    continue
                if hs > lo:
                    out.append((lo, hs))
                lo = max(lo, he)
            if lo < end:
                out.append((lo, end))
        return out

    @staticmethod
    def _mmapped_header_ok(prev_size: int, size: int, pos: int, end: int) -> bool:
        sz = size & ~SIZE_BITS
        return prev_size == 0 and size & SIZE_BITS == IS_MMAPPED and sz != 0 and not sz % PAGE and pos + sz <= end

    def _find_mmapped(self) -> tuple[list[int], list[int]]:
        """Chunks with exactly IS_MMAPPED set in anonymous memory.

        glibc mmaps page-aligned, so ``prev_size`` (the alignment correction)
        is 0 on x86-64.  The kernel merges adjacent anonymous mappings, so
        each mapping is walked chunk by chunk from its start while the headers
        stay valid.  When that finds fewer than ``mp_.n_mmaps`` chunks (a
        chunk merged behind other anonymous memory), the page starts of the
        rest of each mapping are checked, smallest rest first, until the count
        and bytes agree with ``mp_`` (bounded by MAX_DEEP_SCAN bytes); without
        ``mp_`` (heuristics) only the first pass is made.
        """
        hdrs, raws = [], []
        rests: list[tuple[int, int]] = []       # what the chains did not cover
        for lo, hi in self._anon_ranges():
            pos = lo
            for _ in range((hi - lo) // PAGE):
                if pos + CHUNK_HDR_SZ > hi:
                    break
                try:
                    prev_size, size = struct.unpack("<QQ", self.target.read(pos, CHUNK_HDR_SZ))
                except TargetFault:
                    break
                if not self._mmapped_header_ok(prev_size, size, pos, hi):
                    break
                hdrs.append(pos)
                raws.append(size)
                pos += size & ~SIZE_BITS
            if hi - pos >= PAGE:
                rests.append((pos, hi))
        if self.mp is None:
            return hdrs, raws
        want = (self.mp["n_mmaps"], self.mp["mmapped_mem"])
        got = [len(hdrs), sum(r & ~SIZE_BITS for r in raws)]
        budget = MAX_DEEP_SCAN
        for lo, hi in sorted(rests, key=lambda r: r[1] - r[0]):
            if tuple(got) == want or got[0] > want[0]:
                break
            if hi - lo > budget:
                self.warnings.append(f"mmapped-chunk search stopped at {lo:#x}: more than {MAX_DEEP_SCAN} bytes")
                break
            budget -= hi - lo
            for p, sz in self._page_scan(lo, hi):
                hdrs.append(p)
                raws.append(sz)
                got[0] += 1
                got[1] += sz & ~SIZE_BITS
        if tuple(got) != want:
            self.warnings.append(f"found {got[0]} mmapped chunks of {got[1]} bytes; mp_ says {want[0]} of "
                                 f"{want[1]} bytes")
        order = sorted(range(len(hdrs)), key=hdrs.__getitem__)
        return [hdrs[i] for i in order], [raws[i] for i in order]

    def _page_scan(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Non-overlapping (header, size field) of mmapped chunks at page starts in [lo, hi)."""
        try:
            w = np.frombuffer(self.target.read(lo, hi - lo), dtype="<u8")
        except TargetFault:
            return []
        idx = np.arange(0, len(w) - 1, PAGE // 8)
        prev, size = w[idx], w[idx + 1]
        pos = (lo + idx * 8).astype(np.uint64)
        csize = size & np.uint64(~SIZE_BITS & 0xFFFFFFFFFFFFFFFF)
        ok = (prev == 0) & ((size & np.uint64(SIZE_BITS)) == IS_MMAPPED) & (csize >= PAGE) \
            & ((csize & np.uint64(PAGE - 1)) == 0) & (pos + csize <= np.uint64(hi))
        out = []
        cursor = lo
        for k in np.flatnonzero(ok).tolist():
            p, sz = int(pos[k]), int(size[k])
            if p < cursor:
                continue            # inside the chunk accepted before
            out.append((p, sz))
            cursor = p + (sz & ~SIZE_BITS)
        return out

    def _aligned_mmapped(self, hdrs: list[int], raws: list[int]) -> tuple[list[int], list[int]]:
        """Move each mmapped region's chunk to where memalign put it.

        ``_int_memalign`` on an mmapped chunk leaves the region's original
        header in place and writes a new one ``L`` bytes further, with
        ``prev_size = L`` (the lead) and size ``S - L``; the bytes between are
        never handed out, so they are still zero.  The first non-zero word
        after the original header is therefore either user data or that new
        header.  Searched up to MAX_MEMALIGN_LEAD bytes: a larger alignment
        of an mmapped chunk is not recognised (its user pointer would be
        reported at the region start).
        """
        self.mmapped_lead: dict[int, int] = {}
        out_h, out_r = [], []
        for pos, raw in zip(hdrs, raws):
            size = raw & ~SIZE_BITS
            lead = 0
            span = min(size, MAX_MEMALIGN_LEAD)
            step = PAGE
            lo = CHUNK_HDR_SZ
            while lo < span:
                hi = min(span, lo + step)
                try:
                    w = np.frombuffer(self.target.read(pos + lo, hi - lo), dtype="<u8")
                except TargetFault:
                    break
                nz = np.flatnonzero(w)
                if len(nz):
                    k = int(nz[0])
                    L = lo + 8 * k
                    if k + 1 < len(w) and int(w[k]) == L and not L % MALLOC_ALIGNMENT \
                            and int(w[k + 1]) == (size - L) | IS_MMAPPED:
                        lead = L
                    break
                lo, step = hi, step * 4
            if lead:
                self.mmapped_lead[pos + lead] = lead
            out_h.append(pos + lead)
            out_r.append((size - lead) | IS_MMAPPED)
        return out_h, out_r

    # --- free lists -------------------------------------------------------
    def _chunk_index(self, hdr: int) -> int:
        """Index of the chunk whose header is at ``hdr``, or -1."""
        if not 0 <= hdr < 1 << 63:
            return -1
        i = int(self._h.searchsorted(hdr))
        return i if i < len(self._h) and self._h.item(i) == hdr else -1

    def _link_arrays(self) -> None:
        """For every arena chunk, its fd/bk words and the chunk index each link points at.

        Read once from the cached segments with numpy, so following the free
        lists is a walk over integer arrays.  Three decodings of the word at
        ``fd`` (user offset 0): plain (small/large/unsorted bins), revealed
        chunk pointer (fastbins) and revealed user pointer (tcache); glibc
        mangles both of the latter with the slot's own address, ``hdr + 16``.
        """
        hdr = self._h.astype(np.uint64)
        n = len(hdr)
        fd = np.zeros(n, np.uint64)
        bk = np.zeros(n, np.uint64)
        in_arena = self.arena_index >= 0
        for bstart, bend, words in self._mem.blocks:
            nw = np.frombuffer(words, dtype="<u8")
            sel = np.flatnonzero(in_arena & (hdr >= np.uint64(bstart)) & (hdr + np.uint64(32) <= np.uint64(bend)))
            o = ((hdr[sel] - np.uint64(bstart)) >> np.uint64(3)).astype(np.int64)
            fd[sel] = nw[o + 2]
            bk[sel] = nw[o + 3]
        revealed = ((hdr + np.uint64(FD)) >> np.uint64(12)) ^ fd

        def index_of(vals: np.ndarray) -> np.ndarray:
            j = np.minimum(np.searchsorted(hdr, vals), max(n - 1, 0))
            ok = (hdr[j] == vals) & in_arena[j] if n else np.zeros(0, bool)
            return np.where(ok, j, -1).astype(np.int64)

        self._fd, self._bk, self._revealed = fd, bk, revealed
        self._next = {"plain": index_of(fd), "fast": index_of(revealed),
                      "tcache": index_of(revealed - np.uint64(CHUNK_HDR_SZ))}

    def _link(self, how: str, i: int) -> tuple[int, int]:
        """(index of the chunk that chunk ``i``'s list link points at or -1, the
        link value: fd, or the revealed pointer of a safe-linked list).

        The first LAZY_LINKS steps decode one chunk at a time: most heaps have
        few free chunks, and decoding every chunk's links (:meth:`_link_arrays`)
        costs about 1 s for 4 M chunks.  Past that the arrays are made."""
        if self._next is None:
            self._lazy_steps += 1
            if self._lazy_steps > LAZY_LINKS:
                self._link_arrays()
        if self._next is not None:
            raw = self._fd if how == "plain" else self._revealed
            return int(self._next[how][i]), int(raw[i])
        hdr = self._h.item(i)
        fd = self._mem.u64(hdr + FD)
        v = fd if how == "plain" else ((hdr + FD) >> 12) ^ fd
        j = self._chunk_index(v - CHUNK_HDR_SZ if how == "tcache" else v)
        if j >= 0 and self.arena_index[j] < 0:
            j = -1
        return j, v

    def _bk_of(self, seq: list[int]) -> np.ndarray:
        """The bk words of the chunks ``seq``."""
        if self._next is not None:
            return self._bk[seq]
        return np.array([self._mem.u64(h + BK) for h in self._h[seq].tolist()], np.uint64)

    def _follow(self, first: int, how: str, code: int, label: str, end: int,
                expect_size: int | None = None) -> list[int]:
        """Follow one free list from the chunk header ``first`` until the link value ``end``.

        :returns: the chunk indexes in list order (each also marked free)

        A damaged list (an entry that is not a heap chunk, is on a list
        already — a cycle or a double free —, has the wrong size for its list,
        or whose link points outside the heap) is followed up to the bad chunk,
        which becomes a :class:`CorruptRegion`.  Imprecision: the chunks
        behind it on that list are not known to be free; they count as in use
        (the warning says so).
        """
        seq: list[int] = []
        if first == end:
            return seq
        i = self._chunk_index(first)
        if first & (MALLOC_ALIGNMENT - 1) or i < 0 or self.arena_index[i] < 0:
            self._list_broken(label, first, -1, f"{LISTS[code]} entry {first:#x} is not a chunk of the heap")
            return seq
        free = self._free
        for _ in range(len(self._h) + 1):
            if free[i]:
                self._list_broken(label, int(self._h[i]), i, f"{LISTS[code]} entry is already on the "
                                  f"{LISTS[free[i] - 1]} list (a cycle or a double free)")
                break
            free[i] = code + 1
            seq.append(i)
            j, v = self._link(how, i)
            if j < 0:
                if v != end:
                    self._list_broken(label, int(self._h[i]), i, f"{LISTS[code]} link {v:#x} is not a "
                                      "chunk of the heap")
                break
            i = j
        else:
            self._list_broken(label, int(self._h[i]), i, "list longer than the heap (a cycle)")
        if expect_size is not None:
            cs = self._cs[seq]
            bad = np.flatnonzero(cs != expect_size)
            if len(bad):
                k = seq[int(bad[0])]
                self._list_broken(label, int(self._h[k]), k, f"{LISTS[code]} entry of size "
                                  f"{int(self._cs[k]):#x} in the list of size {expect_size:#x}")
        return seq

    def _follow_back(self, head: int, code: int, label: str) -> None:
        """A bin whose fd chain broke: its other end, from the bin header's bk back
        through each chunk's bk, until the break; those chunks are free too."""
        n = 0
        try:
            v = self._mem.u64(head + BK)
            for _ in range(len(self._h)):
                i = self._chunk_index(v)
                if v == head or i < 0 or self.arena_index[i] < 0 or self._free[i]:
                    break
                self._free[i] = code + 1
                n += 1
                v = self._mem.u64(v + BK)
        except TargetFault:
            pass
        if n:
            self.warnings.append(f"{label}: {n} chunks of the broken list found from its other end (bk links)")

    def _recover_tcache(self, b: int, missing: int, key: int | None, code: int, label: str) -> None:
        """A tcache list that broke: its other chunks are the in-use-looking chunks of its
        size whose second word is glibc's ``tcache_key`` (``tcache_put`` writes it there,
        ``tcache_get`` clears it), at most ``missing`` of them.  Imprecision: a program that
        copied the key into a block of that size would have that block counted free."""
        if key is None or missing <= 0:
            return
        size = MINSIZE + b * MALLOC_ALIGNMENT
        cand = np.flatnonzero((self._cs == size) & (self.arena_index >= 0))
        n = 0
        for i in cand.tolist():
            if n >= missing:
                break
            if not self._free[i] and self._mem.u64(self._h.item(i) + CHUNK_HDR_SZ + 8) == key:
                self._free[i] = code + 1
                n += 1
        if n:
            self.warnings.append(f"{label}: {n} chunks of the broken list found by glibc's tcache key")

    def _list_broken(self, label: str, chunk: int, i: int, reason: str) -> None:
        """A damaged free list: the chunk ``chunk`` (index ``i``, -1 when it is no chunk)
        becomes a corrupted region of its own size (none when it is no chunk)."""
        end = chunk + int(self._cs[i]) if i >= 0 else chunk
        self._corrupt(label, chunk, chunk, end, f"{reason}; the rest of that list is unknown (its chunks "
                      "count as in use)")

    def _flush_marks(self) -> None:
        f = np.frombuffer(bytes(self._free), dtype=np.uint8)
        self.state[:] = (f != 0).astype(np.uint8)
        self.list_code[:] = f.astype(np.int8) - 1

    def _classify(self) -> None:
        self._free = bytearray(len(self._h))       # chunk index → list code + 1, 0 in use
        self._next = None            # links decoded lazily (_link)
        self._lazy_steps = 0
        fast, top = LISTS.index("fastbin"), LISTS.index("top")
        for a in self.arenas:
            if not a.segments:
                continue
            ms = a.raw
            i = self._chunk_index(a.top)
            if i < 0:
                raise HeapCorrupted(a.label, a.top, "the top chunk is not a chunk of the heap")
            if self._free[i]:
                self._list_broken(a.label, a.top, i, f"the top chunk is also on the {LISTS[self._free[i] - 1]} list")
            self._free[i] = top + 1
            # fastbins: safe-linked, NULL-terminated
            for b in range(NFASTBINS):
                self._follow(ms[F_FASTBINS + b], "fast", fast, f"{a.label} fastbin[{b}]", 0, (b + 2) * MALLOC_ALIGNMENT)
            # bins[1..127]: doubly linked circular lists through the bin headers
            for b in range(1, NBINS):
                head = a.address + MS_BINS + (b - 1) * 16 - FD
                broken = len(self.corrupted)
                seq = self._follow(ms[F_BINS + (b - 1) * 2], "plain", LISTS.index(_bin_kind(b)),
                                   f"{a.label} bin[{b}]", head)
                if len(self.corrupted) > broken:
                    self._follow_back(head, LISTS.index(_bin_kind(b)), f"{a.label} bin[{b}]")
                elif seq:
                    want = np.concatenate(([head], self._h[seq[:-1]])).astype(np.uint64)
                    bks = self._bk_of(seq)
                    bad = np.flatnonzero(bks != want)
                    if len(bad):
                        k = seq[int(bad[0])]
                        self.warnings.append(f"{a.label} bin[{b}]: chunk at {int(self._h[k]):#x} has bk "
                                             f"{int(bks[bad[0]]):#x}, expected {int(want[bad[0]]):#x}")
        self._flush_marks()
        self._classify_tcaches()
        self._flush_marks()
        self._free = self._next = None
        for k in ("_fd", "_bk", "_revealed"):
            self.__dict__.pop(k, None)

    def thread_arena(self, thread) -> int | None:
        """Index in :attr:`arenas` of the arena ``thread`` allocates from (libc's
        ``thread_arena`` TLS variable); -1 when it has not allocated yet (its first
        ``malloc`` chooses one); None when that variable cannot be read (no debug
        symbols, TLS not located)."""
        _tc, ta_sym = self._tls
        modid = self._libc_tls_modid() if ta_sym is not None else None
        if modid is None:
            return None
        try:
            block = self.target.tls_block(thread, modid)
            ta = self.target.read_u64(block + ta_sym.addr) if block is not None else None
        except TargetFault:
            return None
        if ta is None:
            return None
        if ta == 0:
            return -1
        return next((k for k, a in enumerate(self.arenas) if a.address == ta), None)

    def _tcache_addresses(self) -> list[tuple[str, int]]:
        """(owner, tcache_perthread_struct address) of every thread, exact when the TLS is known."""
        tc_sym, ta_sym = self._tls
        out: list[tuple[str, int]] = []
        if tc_sym is not None and ta_sym is not None:
            modid = self._libc_tls_modid()
            arenas = {a.address for a in self.arenas}
            ok = modid is not None
            for th in self.target.threads if ok else []:
                try:
                    block = self.target.tls_block(th, modid)
                    if block is None:
                        ok = False
                        break
                    ta = self.target.read_u64(block + ta_sym.addr)
                    tc = self.target.read_u64(block + tc_sym.addr)
                except TargetFault:
                    ok = False
                    break
                if ta != 0 and ta not in arenas:
                    ok = False
                    break
                if tc not in (0, 0xFFFFFFFFFFFFFFFF):
                    out.append((f"thread {th.tid}", tc))
            if ok:
                return out
            self.exact = False
            self.warnings.append("could not locate libc's TLS block through the DTV; tcaches found by heuristics")
        # heuristic: in-use 0x290 chunks whose contents are a consistent
        # tcache_perthread_struct and that are either non-empty or pointed at from
        # a thread's static TLS (libc's ``tcache`` variable sits below fs_base)
        cand = np.flatnonzero((self._cs == TCACHE_CHUNK) & (self.state == IN_USE) & (self.arena_index >= 0))
        cand_addrs = self._h[cand] + CHUNK_HDR_SZ
        tls_refs = self._tls_references(cand_addrs)
        maxc = self.mp["tcache_count"] if self.mp else 0xFFFF
        lane = np.arange(TCACHE.size // 8)
        found: list[int] = []
        for bstart, bend, words in self._mem.blocks:
            nw = np.frombuffer(words, dtype="<u8")
            addrs = cand_addrs
            sel = cand[(addrs >= bstart) & (addrs + TCACHE.size <= bend)]
            for j in range(0, len(sel), 1 << 16):          # batches bound the (n, 80) gather
                part = sel[j:j + (1 << 16)]
                paddr = self._h[part] + CHUNK_HDR_SZ
                rows = nw[((paddr - bstart) >> 3)[:, None] + lane]
                counts = np.ascontiguousarray(rows[:, :TCACHE_MAX_BINS // 4]).view("<u2")
                entries = rows[:, TCACHE_MAX_BINS // 4:]
                ok = (counts <= maxc).all(1) & ((counts == 0) == (entries == 0)).all(1) \
                    & ((entries & np.uint64(MALLOC_ALIGNMENT - 1)) == 0).all(1) \
                    & ((entries != 0).any(1) | np.isin(paddr, list(tls_refs)))
                found += paddr[ok].tolist()
        for addr in sorted(found):
            if self._looks_like_tcache(addr):
                owner = f"thread {tls_refs[addr]}" if addr in tls_refs else f"tcache@{addr:#x}"
                out.append((owner, addr))
        return out

    def _tls_references(self, addrs: np.ndarray) -> dict[int, int]:
        """{address: tid} of the ``addrs`` found as words in a thread's libc TLS
        block (from the link maps), or, when that is unknown, in the TLS_SCAN
        bytes below its fs_base (within the mapping; imprecision: other modules'
        thread-locals lie there too)."""
        out: dict[int, int] = {}
        if not len(addrs):
            return out
        tm = self.modules.tls.for_module(self.libc)
        for th in self.target.threads:
            fs = th.regs.get("fs_base", 0)
            m = self.target.mapping_at(fs - 8) if fs >= 8 else None
            if m is None:
                continue
            lo, hi = max(m.start, (fs - TLS_SCAN) & ~7), fs
            try:
                block = self.modules.tls.block(self.target, th, tm) if tm is not None else None
                if block is not None:
                    lo, hi = block & ~7, block + tm.blocksize
                w = np.frombuffer(self.target.read(lo, (hi - lo) & ~7), dtype="<u8")
            except TargetFault:
                continue
            for v in np.intersect1d(w, addrs.astype(np.uint64)).tolist():
                out.setdefault(int(v), th.tid)
        return out

    def _looks_like_tcache(self, addr: int) -> bool:
        v = [self._mem.u64(addr + 8 * k) for k in range(TCACHE.size // 8)]
        entries = v[TCACHE_MAX_BINS // 4:]
        return all(self._chunk_index(e - CHUNK_HDR_SZ) >= 0 for e in entries if e)

    def _libc_tls_modid(self) -> int | None:
        """libc's TLS module id, as the dynamic linker recorded it (``l_tls_modid``
        of libc's link map, matched by address: see mappedtrace/tls.py)."""
        tm = self.modules.tls.for_module(self.libc)
        return tm.modid if tm is not None else None

    def _classify_tcaches(self) -> None:
        code = LISTS.index("tcache")
        self.tcaches: list[tuple[str, int]] = []
        for owner, addr in self._tcache_addresses():
            i = self._chunk_index(addr - CHUNK_HDR_SZ)
            if i < 0 or self.arena_index[i] < 0 or self._cs[i] < TCACHE_CHUNK:
                self._list_broken(f"{owner} tcache", addr - CHUNK_HDR_SZ, -1, "tcache struct is not a heap chunk")
                continue
            self.tcaches.append((owner, addr))
            raw = struct.pack(f"<{TCACHE.size // 8}Q", *(self._mem.u64(addr + 8 * k) for k in range(TCACHE.size // 8)))
            f = TCACHE.unpack(raw)
            for b in range(TCACHE_MAX_BINS):
                broken = len(self.corrupted)
                count, e = f[b], f[TCACHE_MAX_BINS + b]
                if e == 0:
                    n = 0
                elif e & (MALLOC_ALIGNMENT - 1):
                    self._list_broken(f"{owner} tcache[{b}]", e - CHUNK_HDR_SZ, -1, "tcache entry is misaligned")
                    n = 0
                else:
                    n = len(self._follow(e - CHUNK_HDR_SZ, "tcache", code, f"{owner} tcache[{b}]", 0,
                                         MINSIZE + b * MALLOC_ALIGNMENT))
                if n != count:
                    self.warnings.append(f"{owner} tcache[{b}]: count {count} but {n} chunks on the list")
                if len(self.corrupted) > broken:
                    self._recover_tcache(b, count - n, self._tcache_key(), code, f"{owner} tcache[{b}]")

    def _tcache_key(self) -> int | None:
        """glibc's random ``tcache_key`` (2.34+): the second word of every tcache entry,
        taken as the value most of the lists' first entries hold (None if none does)."""
        if not hasattr(self, "_key"):
            votes: dict[int, int] = {}
            for _owner, addr in self.tcaches:
                for k in range(TCACHE_MAX_BINS):
                    e = self._mem.u64(addr + TCACHE_MAX_BINS * 2 + 8 * k)
                    if e and not e & (MALLOC_ALIGNMENT - 1) and self._chunk_index(e - CHUNK_HDR_SZ) >= 0:
                        v = self._mem.u64(e + 8)
                        votes[v] = votes.get(v, 0) + 1
            self._key = max(votes, key=votes.get) if votes else None
            if self._key == 0:
                self._key = None
        return self._key

    # --- stats --------------------------------------------------------------
    def _make_stats(self) -> None:
        cs, lc, ai = self._cs, self.list_code, self.arena_index
        per: dict[str, dict] = {}
        tot = dict(arena=0, ordblks=0, smblks=0, hblks=0, hblkhd=0, uordblks=0, fordblks=0, keepcost=0,
                   fsmblks=0, tcache_blks=0, tcache_bytes=0, in_use_blks=0, in_use_bytes=0)
        # one pass: chunks and bytes per (arena, list) cell (list -1: in use; arena -1: mmapped),
        # counted in slices (bounded temporaries) rather than a mask per figure over the whole heap
        nl = len(LISTS) + 1
        ncell = (len(self.arenas) + 1) * nl
        blks = np.zeros(ncell, np.int64)
        byts = np.zeros(ncell, np.int64)
        for lo in range(0, len(cs), _SLICE):
            cell = (ai[lo:lo + _SLICE].astype(np.int64) + 1) * nl + lc[lo:lo + _SLICE] + 1
            blks += np.bincount(cell, minlength=ncell)
            # (float sums of a slice's sizes are exact: every partial sum stays below 2**53)
            byts += np.bincount(cell, weights=cs[lo:lo + _SLICE], minlength=ncell).astype(np.int64)
        cells = lambda k, name: (k + 1) * nl + (LISTS.index(name) + 1 if name else 0)
        count = lambda k, *names: int(sum(blks[cells(k, n)] for n in names))
        size = lambda k, *names: int(sum(byts[cells(k, n)] for n in names))
        for k, a in enumerate(self.arenas):
            binned = ("unsorted", "smallbin", "largebin")
            avail = size(k, "fastbin", *binned, "top")
            d = dict(system_mem=a.system_mem, ordblks=count(k, *binned) + 1, smblks=count(k, "fastbin"),
                     fsmblks=size(k, "fastbin"), fordblks=avail, uordblks=a.system_mem - avail,
                     tcache_blks=count(k, "tcache"), tcache_bytes=size(k, "tcache"),
                     in_use_blks=count(k, None), in_use_bytes=size(k, None),
                     top=size(k, "top"), overhead=self.overhead.get(a.label, 0),
                     **{f"{n}_{w}": (count if w == "blks" else size)(k, n)
                        for n in binned for w in ("blks", "bytes")})
            seg_total = sum(s.end - s.start for s in a.segments)
            if a.segments and seg_total != a.system_mem and not (a.is_main and a.flags & NONCONTIGUOUS_BIT):
                self.warnings.append(f"{a.label}: heap segments cover {seg_total} bytes, system_mem is {a.system_mem}")
            per[a.label] = d
            tot["arena"] += a.system_mem
            tot["ordblks"] += d["ordblks"]
            for key in ("smblks", "fsmblks", "fordblks", "uordblks", "tcache_blks", "tcache_bytes",
                        "in_use_blks", "in_use_bytes"):
                tot[key] += d[key]
            if a.is_main:
                tot["keepcost"] = d["top"]
        tot["hblks"] = int(blks[:nl].sum())
        tot["hblkhd"] = int(byts[:nl].sum()) + sum(self.mmapped_lead.values())
        tot["in_use_blks"] += tot["hblks"]
        tot["in_use_bytes"] += tot["hblkhd"]
        tot["per_arena"] = per
        self.stats = tot

    # ------------------------------------------------------------------
    # public view

    def _where_table(self) -> tuple[np.ndarray, list[str]]:
        """Per chunk a code into a small table of ``where`` strings."""
        if self._lists is None:
            names = [a.label for a in self.arenas] + ["mmapped"]
            # row -1 (mmapped) takes names[-1]
            table = [f"{names[ai]}/{LISTS[lc]}" if lc >= 0 else names[ai]
                     for ai in range(-1, len(self.arenas)) for lc in range(-1, len(LISTS))]
            code = (self.arena_index.astype(np.int32) + 1) * (len(LISTS) + 1) + self.list_code.astype(np.int32) + 1
            self._lists = (code, table)
        return self._lists

    # ``addresses`` and ``usable`` are computed when asked for, not kept: two
    # columns of 8 bytes per chunk less for the whole analysis (issue #13)
    @property
    def addresses(self) -> np.ndarray:
        """User pointers (int64), one per chunk: ``headers + 16``; a new array at each access."""
        return self._h + CHUNK_HDR_SZ

    @property
    def usable(self) -> np.ndarray:
        """Usable sizes (int64), one per chunk, as ``malloc_usable_size``; a new array at each access."""
        u = self._cs - SIZE_SZ
        u[self.arena_index < 0] -= CHUNK_HDR_SZ - SIZE_SZ
        return u

    # ``headers`` and ``chunk_sizes`` are kept as arrays until :meth:`share_in_use`;
    # from then on the in-use rows live in the marker's node columns (the graph's
    # ``addresses`` and ``sizes``) and the columns are made again on first use.
    # Inside, ``_h``/``_cs``; ``headers``/``chunk_sizes`` hand the arrays out,
    # after which share_in_use no longer reuses their memory in place.
    @property
    def _h(self) -> np.ndarray:
        if self._headers is None:
            self._unshare()
        return self._headers

    @property
    def _cs(self) -> np.ndarray:
        if self._chunk_sizes is None:
            self._unshare()
        return self._chunk_sizes

    @property
    def headers(self) -> np.ndarray:
        """Chunk header addresses (int64), one per chunk, sorted."""
        self._escaped = True
        return self._h

    @property
    def chunk_sizes(self) -> np.ndarray:
        """Chunk sizes (int64, flag bits cleared), one per chunk."""
        self._escaped = True
        return self._cs

    def __len__(self) -> int:
        if self._headers is not None:
            return len(self._headers)
        return len(self.state)

    def share_in_use(self) -> tuple[np.ndarray, np.ndarray]:
        """(user pointers, usable sizes), u64, of the in-use chunks in address
        order: the marker's nodes (:func:`mappedtrace.trace.mark`).

        The heap then keeps its in-use rows through these two arrays only, and
        its own columns of free chunks: ``headers`` and ``chunk_sizes`` are made
        again, once, when next asked for.  A leak check never asks, and holds 16
        bytes per chunk less at its peak (issue #13).  When the columns were
        never handed out (``headers``/``chunk_sizes`` not read yet), the two
        arrays are made in their memory (the in-use rows moved to the front,
        in slices); else in new arrays, in slices.  The caller must not change
        the arrays.
        """
        if self._shared is not None:
            return self._shared[0], self._shared[1]
        n = len(self.state)
        hdr, cs = self._headers, self._chunk_sizes
        used = self.state == IN_USE
        free = np.flatnonzero(~used)
        fhdr, fcs = hdr[free], cs[free]
        k = n - len(free)
        del free
        if self._escaped:
            addr, usable = np.empty(k, np.uint64), np.empty(k, np.uint64)
        else:       # written from the front, behind the rows still to be read: never over them
            addr, usable = hdr.view(np.uint64)[:k], cs.view(np.uint64)[:k]
        pos, step = 0, 1 << 20
        for lo in range(0, n, step):
            m = used[lo:lo + step]
            j = int(np.count_nonzero(m))
            if not j:
                continue
            a = hdr[lo:lo + step][m].view(np.uint64)      # (copies of the slice's rows)
            u = cs[lo:lo + step][m] - SIZE_SZ
            u[self.arena_index[lo:lo + step][m] < 0] -= CHUNK_HDR_SZ - SIZE_SZ
            np.add(a, np.uint64(CHUNK_HDR_SZ), out=addr[pos:pos + j])
            usable[pos:pos + j] = u.view(np.uint64)
            pos += j
        del hdr, cs
        self._shared = (addr, usable, fhdr, fcs)     # (which rows are free: ``state``)
        self._headers = self._chunk_sizes = None
        return addr, usable

    def _unshare(self) -> None:
        """Make ``headers`` and ``chunk_sizes`` again from the shared in-use
        columns and the free chunks' own (kept from then on)."""
        addr, usable, fhdr, fcs = self._shared
        n = len(self.state)
        hdr, cs = np.empty(n, np.int64), np.empty(n, np.int64)
        used = np.flatnonzero(self.state == IN_USE)
        free = np.flatnonzero(self.state != IN_USE)
        hdr[used] = addr.view(np.int64) - CHUNK_HDR_SZ
        c = usable.view(np.int64) + SIZE_SZ
        c[self.arena_index[used] < 0] += CHUNK_HDR_SZ - SIZE_SZ
        cs[used] = c
        hdr[free], cs[free] = fhdr, fcs
        self._headers, self._chunk_sizes = hdr, cs

    def _usable_of(self, i: int) -> int:
        extra = CHUNK_HDR_SZ - SIZE_SZ if self.arena_index.item(i) < 0 else 0
        return self._cs.item(i) - SIZE_SZ - extra

    def _chunk(self, i: int) -> Chunk:
        code, table = self._where_table()
        w = table[code.item(i)]
        return Chunk(self._h.item(i) + CHUNK_HDR_SZ, self._usable_of(i), self._cs.item(i),
                     "free" if self.state.item(i) else "in-use", w)

    def chunks(self) -> "ChunkList":
        """Every chunk of every arena and every mmapped chunk, sorted by address, classified.

        :returns: a read-only list-like sequence that makes the :class:`Chunk`
            objects as they are accessed (a 4 M-chunk heap would spend seconds
            making them all); ``list(heap.chunks())`` gives a real list.  The
            numpy arrays :attr:`addresses`, :attr:`usable`, :attr:`chunk_sizes`,
            :attr:`state` hold the same data column-wise.
        """
        return ChunkList(self, None)

    def in_use(self) -> "ChunkList":
        """The chunks the program holds (state ``"in-use"``), sorted by address (list-like, as :meth:`chunks`)."""
        return ChunkList(self, np.flatnonzero(self.state == IN_USE))

    def find(self, addr: int) -> Chunk | None:
        """The chunk whose user memory ``[address, address + size)`` contains ``addr``, or None.

        Interior pointers find their chunk.  The user memory of an arena chunk
        ends 8 bytes into the next chunk (its ``prev_size`` field, usable while
        the chunk is in use), so only the 8-byte size fields of headers belong
        to no chunk.
        """
        if not 0 <= addr < 1 << 63:
            return None
        i = int(self._h.searchsorted(addr - CHUNK_HDR_SZ, "right")) - 1
        if i >= 0 and addr < self._h.item(i) + CHUNK_HDR_SZ + self._usable_of(i):
            return self._chunk(i)
        return None

    def release_memory(self) -> None:
        """Drop :attr:`memory_blocks` (the marker then reads the heap itself)."""
        self.memory_blocks = []

    def state_ranges(self) -> list[tuple[int, int]]:
        """``(start, end)`` of malloc's own bookkeeping in libc's data: every
        arena's ``malloc_state`` and ``mp_``.  Its bins and top point at chunk
        headers, which look like interior pointers into the neighbouring chunk,
        so a conservative root scan must leave these ranges out."""
        out = [(a.address, a.address + MSTATE.size) for a in self.arenas]
        if self.mp_addr:
            out.append((self.mp_addr, self.mp_addr + MALLOC_PAR.size))
        return out

    def ranges(self) -> list[tuple[int, int, str]]:
        """``(start, end, label)`` of the memory malloc manages: every heap segment
        (label: the arena) and every mmapped chunk (label ``"mmapped"``), sorted."""
        out = [(sg.start, sg.end, a.label) for a in self.arenas for sg in a.segments]
        mm = np.flatnonzero(self.arena_index < 0)
        lead = self.mmapped_lead
        out += [(int(self._h[i]) - lead.get(int(self._h[i]), 0), int(self._h[i] + self._cs[i]),
                 "mmapped") for i in mm]
        return sorted(out)


