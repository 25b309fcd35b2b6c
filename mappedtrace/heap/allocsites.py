"""Allocation sites of heap chunks (``mappedtrace cc --alloc-sites``).

A ``--alloc-sites`` build asks malloc for 8 more bytes at every direct
``malloc``/``calloc``/``realloc``/``aligned_alloc`` call and writes a *site
word* into the last word of its request (llvm_pass/AllocSites.cpp,
FORMAT.md §4)::

    word = (p * SITE_MIX) ^ record      (mod 2**64)

``p`` the user pointer, ``record`` the run-time address of the site's
record in ``.mtsites``.  :func:`find_sites` reads it back from each in-use
chunk.  A word is accepted only when

* ``word ^ p * SITE_MIX`` is the address of a known record (a foreign or
  random word passes with odds of about ``sites / 2**64``; a word written
  for another address gives ``record ^ (p - p') * SITE_MIX``-like values far
  from any record);
* its offset ``o`` agrees with the chunk: glibc's chunk for a request of
  ``o + 8`` bytes is exactly this chunk's size (``request2size``; for an
  mmapped chunk, the page-rounded size; for an ``aligned_alloc`` site up to
  ``MINSIZE`` more, the remainder glibc leaves unsplit).  A word left by an
  earlier, smaller or bigger allocation at the same address sits elsewhere
  and is rejected.  Known imprecision: malloc hands out a chunk 16 bytes
  bigger than asked when the rest of a free chunk would be smaller than
  ``MINSIZE``; such an object's site is not found (it counts as without one).

An allocation wrapper named by ``--alloc-fn`` whose own ``malloc`` is a
site too leaves two words: its caller's (the last of the wrapper's request)
right before its own (the last of malloc's).  A word right before the word of
a site whose result its function returns (flag ``SITE_RETURNED``) is taken
instead when it names a call to a named wrapper (``SITE_WRAPPER_CALL``):
the caller knows the type.

A call to a typed wrapper (``--alloc-fn=NAME:wrapper``, kind ``wrapper``)
overwrites the word of the site inside the wrapper (same place) with its
own, keyed to the pointer the wrapper returned, which may lie up to 56
bytes into the chunk (SQLite's ``chunk + 8``): such records are also tried
with the keys ``c + 8i``, and :func:`find_sites` (``with_offsets``) gives the
object's offset in its chunk.

Known imprecision (documented in FORMAT.md §4): a chunk freed and then
allocated again *at the same address for the same size* by code without the
maps (a library's ``malloc``) keeps the earlier site word where the new
owner did not overwrite it, and is given that site.  Its type then counts as
one typed pointer to the chunk's start (the marker's own rule for such
pointers: another pointer-bearing type makes it ambiguous, its tail is
scanned conservatively).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..formats.allocsites import SITE_MIX, SITE_RETURNED, SITE_WRAPPER_CALL, AllocSite

#: glibc x86-64: SIZE_SZ, MALLOC_ALIGNMENT, MINSIZE, page size (mmapped chunks)
_SIZE_SZ = 8
_ALIGN = 16
_MINSIZE = 32
_PAGE = 4096
#: words searched at the end of an arena chunk (the word is one of the last three,
#: or of the last seven after aligned_alloc)
_ARENA_WORDS = 7
#: most mmapped chunks searched (each over its last page)
MAX_MMAPPED = 4096
#: most nested allocation wrappers followed outward (a word before a wrapper's own word)
MAX_WRAPPERS = 4
#: a typed wrapper's object starts less than this far into its chunk (AllocSites.cpp MaxWrapperOffset)
WRAPPER_OFFSET = 64


@dataclass
class SiteTable:
    """Every allocation site of the modules of one target, by run-time id.

    :ivar ids: sorted run-time record addresses (u64)
    :ivar sites: the :class:`AllocSite` of each id, same order
    :ivar untyped_writes: the untyped pointer writes of every module with
        maps (llvm_pass/PointerStores.cpp), -1 when some module with maps did
        not count them (built without ``--alloc-sites``, or by an older pass)
    """

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    sites: list[AllocSite] = field(default_factory=list)
    untyped_writes: int = -1

    @property
    def bytes_trusted(self) -> bool:
        """Byte-buffer sites (``SITE_BYTES``) may decide scanning: every module
        with maps counted its untyped pointer writes, and they are 0 (no
        instrumented code writes a pointer into memory of unknown or byte
        type).  Otherwise such sites only name their objects.  Known
        imprecision: code without the maps (libraries) is not checked."""
        return self.untyped_writes == 0

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def type_ids(self) -> np.ndarray:
        return np.array([s.type_id for s in self.sites], np.uint64)

    @classmethod
    def of(cls, modules, maps: dict) -> "SiteTable":
        """The sites of every module with maps, at their run-time addresses
        (link-time address plus the module's load bias)."""
        pairs = []
        untyped = 0
        for m in modules:
            bm = maps.get(m.path)
            for s in getattr(bm, "sites", None) or []:
                pairs.append(((s.address + m.bias) & (2**64 - 1), s))
            chunks = len(getattr(bm, "chunks", None) or [])
            counted = [b for b in getattr(bm, "site_blocks", None) or [] if b.counted]
            if untyped >= 0 and chunks:
                # one block per module (chunk) of the binary, each counted
                untyped = untyped + sum(b.untyped_writes for b in counted) if len(counted) >= chunks else -1
        pairs.sort(key=lambda p: p[0])
        return cls(np.array([a for a, _ in pairs], np.uint64), [s for _, s in pairs], untyped)


def _request2size(m: np.ndarray) -> np.ndarray:
    """glibc's chunk size for a request of ``m`` bytes (malloc.c request2size)."""
    return np.maximum(np.uint64(_MINSIZE), (m + np.uint64(_SIZE_SZ + _ALIGN - 1)) & ~np.uint64(_ALIGN - 1))


def _check(table: SiteTable, starts: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Index of the site each word names for a chunk at ``starts``, -1 none."""
    with np.errstate(over="ignore"):
        rec = words ^ (starts * np.uint64(SITE_MIX))
    i = np.searchsorted(table.ids, rec)
    ic = np.minimum(i, len(table.ids) - 1)
    ok = (i < len(table.ids)) & (table.ids[ic] == rec)
    return np.where(ok, ic, -1)


def find_sites(table: SiteTable, starts: np.ndarray, sizes: np.ndarray, readable: np.ndarray,
               words: Callable[[np.ndarray, np.ndarray], np.ndarray],
               with_offsets: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The allocation site of each chunk (index into ``table.sites``, -1 none).

    :param starts: user pointers (u64), :param sizes: usable sizes (u64)
    :param readable: per chunk, whether its bytes were read
    :param words: ``words(nodes, offsets)`` gives the u64 at each (node, offset)
    :param with_offsets: also return, per chunk, the offset of the object the
        site names (0, or the ``c + 8i`` key of a typed wrapper's word) and
        the offset of the word found (the request ends there, rounded up to 8)
    """
    n = len(starts)
    out = np.full(n, -1, np.int64)
    at = np.zeros(n, np.uint64)          # offset of the word found
    obj = np.zeros(n, np.uint64)         # offset of the object the word is keyed to
    if not len(table) or not n:
        return (out, obj, at) if with_offsets else out
    starts = starts.astype(np.uint64)
    sizes = sizes.astype(np.uint64)
    # arena chunks: the word ends the request, the request fills the chunk
    # (aligned_alloc: glibc keeps a remainder of up to MINSIZE unsplit)
    aligned = np.array([s.kind == "aligned_alloc" for s in table.sites] + [False], bool)
    # a typed wrapper's call (KIND wrapper) may key its word to an object
    # inside the chunk: c + 8i (FORMAT.md §4 "Typed wrappers")
    inner = np.array([s.kind == "wrapper" for s in table.sites] + [False], bool)
    keys = range(0, WRAPPER_OFFSET, 8) if inner.any() else range(0, 8, 8)
    # the last three words hold every word a malloc/calloc/realloc site can
    # leave (three for a minimum chunk); further ones only aligned_alloc's
    for k in range(1, (_ARENA_WORDS if aligned.any() else 3) + 1):
        off = sizes - np.uint64(8 * k)
        slack = (sizes + np.uint64(_SIZE_SZ)) - _request2size(off + np.uint64(8))
        for d in keys:
            cand = np.nonzero((out < 0) & readable & (sizes >= np.uint64(8 * k))
                              & (slack <= np.uint64(_MINSIZE)) & (off >= np.uint64(d)))[0]
            if not len(cand):
                continue
            hit = _check(table, starts[cand] + np.uint64(d), words(cand, off[cand]))
            ok = (hit >= 0) & ((slack[cand] == 0) | aligned[hit]) & ((d == 0) | inner[hit])
            out[cand[ok]] = hit[ok]
            at[cand[ok]] = off[cand[ok]]
            obj[cand[ok]] = d
    # mmapped chunks (usable = page multiple - 16): the request ends in the last page
    mm = np.nonzero((out < 0) & readable & (sizes >= np.uint64(_PAGE - 2 * _SIZE_SZ))
                    & ((sizes + np.uint64(2 * _SIZE_SZ)) % np.uint64(_PAGE) == 0))[0][:MAX_MMAPPED]
    for c in mm.tolist():
        u = int(sizes[c])
        offs = np.arange(u - 8, max(-1, u - _PAGE - 64), -8, dtype=np.int64).astype(np.uint64)
        req = _request2size(offs + np.uint64(8)) + np.uint64(_SIZE_SZ)
        offs = offs[((req + np.uint64(_PAGE - 1)) & ~np.uint64(_PAGE - 1)) == np.uint64(u + 2 * _SIZE_SZ)]
        if not len(offs):
            continue
        w = words(np.full(len(offs), c, np.int64), offs)
        for d in keys:
            hit = _check(table, np.full(len(offs), starts[c] + np.uint64(d), np.uint64), w)
            ok = np.nonzero((hit >= 0) & ((d == 0) | inner[hit]))[0]
            if len(ok):
                out[c] = hit[ok[0]]
                at[c] = offs[ok[0]]
                obj[c] = d
                break
    # an allocation wrapper's caller (--alloc-fn): its request, 8 bytes less than
    # the wrapper's own, ends in a word right before the wrapper's word
    returned = np.array([bool(s.flags & SITE_RETURNED) for s in table.sites] + [False], bool)
    wcall = np.array([bool(s.flags & SITE_WRAPPER_CALL) for s in table.sites] + [False], bool)
    for _ in range(MAX_WRAPPERS):
        cand = np.nonzero((out >= 0) & returned[out] & (at >= np.uint64(8)) & (obj == 0))[0]
        if not len(cand):
            break
        hit = _check(table, starts[cand], words(cand, at[cand] - np.uint64(8)))
        ok = (hit >= 0) & wcall[hit]
        if not ok.any():
            break
        out[cand[ok]] = hit[ok]
        at[cand[ok]] -= np.uint64(8)
    return (out, obj, at) if with_offsets else out
