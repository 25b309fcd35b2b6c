"""Compaction: empty the sparsely used pages of a fragmented glibc heap so that
``malloc_trim`` can give them back to the system (``mappedtrace compact``).

glibc's ``malloc_trim(0)`` returns only the pages that lie wholly inside a free
chunk (``mtrim`` in malloc/malloc.c: the pages from ``chunk + sizeof(struct
malloc_chunk)`` rounded up to the chunk's end, for every chunk of the unsorted
and large bins after ``malloc_consolidate``; plus the top of the main heap).
After a program frees most of its objects at random, nearly every page still
holds a survivor or two, and the trim gives back almost nothing.

A compaction pass is a relocation pass (:mod:`.mover`, all its kill safety)
with a :class:`CompactPolicy` that:

1. **chooses the pages to empty** from the heap's chunk layout: a page of an
   arena is a *source* when every in-use chunk on it can move (no pin, no
   chunk held in a thread's tcache, not the top chunk nor the arena's own
   bookkeeping) and its in-use bytes are at most ``max_occupancy`` of the page;
   every object that touches a source page moves;
2. **turns the tcache off for the pass** (``mp_.tcache_bins = 0``, journaled,
   restored after the pass or by a recovery), so that the borrowed thread's
   ``free`` of an old chunk goes to the bins, where the trim can see it, and its
   ``malloc`` does not take a cached chunk from a source page;
3. **calls the program's ``malloc_trim(0)``** first: it consolidates the fastbins
   (so every free chunk is in a bin) and gives back what it can already;
4. **plugs** every free chunk that touches a source page in the arena the borrowed
   thread allocates from (its ``thread_arena``; the other arenas never serve it):
   allocates it (a request of exactly its size, which glibc serves from an exact
   fit) and holds it until the end, so that the destinations come from the holes of the pages that stay
   (or the top chunk), not from the pages being emptied;
5. allocates each destination with the program's ``posix_memalign`` and refuses
   (holds, and asks again, :attr:`CompactPolicy.max_tries` times) one that
   touches a source page; an object never placed stays where it is;
6. after the pointers are rewritten and the old chunks freed, frees the plugs,
   restores the tcache, and calls ``malloc_trim(0)`` again.

Measured, not assumed: the process's ``VmRSS``/``RssAnon`` (``/proc/PID/status``)
and the heap's resident pages (``/proc/PID/pagemap`` over the arenas' segments)
before and after, and the heap's own count of *free whole pages* (pages a trim
can give back, by the rule above) from a walk of the heap before and after.

Known imprecision: a chunk held in another thread's tcache keeps its page (the
pass cannot empty another thread's cache); mmapped chunks are left alone (each
is its own mapping, unmapped by ``free``); the first page of a thread arena's
segment (``heap_info``, ``malloc_state``) never empties; the top chunk of a
thread arena is not trimmed by glibc's ``malloc_trim``.
"""
from __future__ import annotations

import struct

import numpy as np

from ..errors import MappedTraceError
from ..heap.glibc import (CHUNK_HDR_SZ, IN_USE, LISTS, MALLOC_PAR, MP_SBRK_BASE, TCACHE_MAX_BINS, GlibcHeap)
from .mover import Calls, MovePolicy, PassResult, relocate

PAGE = 4096
#: sizeof(struct malloc_chunk): mtrim leaves this much of a free chunk before its first page
MALLOC_CHUNK = 48
#: byte offset of ``mp_.tcache_bins`` in ``struct malloc_par`` (glibc 2.35–2.37 x86-64:
#: after ``sbrk_base``; see MALLOC_PAR in heap/glibc.py)
MP_TCACHE_BINS = MP_SBRK_BASE + 8
assert MALLOC_PAR.size >= MP_TCACHE_BINS + 8
_TCACHE, _TOP = LISTS.index("tcache"), LISTS.index("top")
#: rounds of plugging the free chunks of the source pages (see CompactPolicy.prepare)
PLUG_ROUNDS = 3
#: bound on the pages looked at (the arenas' segments), and on pagemap bytes read
MAX_PAGES = 1 << 24


def proc_rss(pid: int) -> dict:
    """``VmRSS`` and ``RssAnon`` of ``pid`` in bytes (``/proc/PID/status``)."""
    out = {"vm_rss": 0, "rss_anon": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    out["vm_rss" if key == "VmRSS" else "rss_anon"] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


#: pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
_PM_PRESENT = np.uint64(1 << 63)
_PM_PFN = np.uint64((1 << 55) - 1)
#: /proc/kpageflags bit of the zero page (and the huge zero page)
_KPF_ZERO_PAGE = 24
#: PFNs further apart than this are read from /proc/kpageflags in separate reads
_KPF_GAP = 256


def _zero_pfns(pfns: np.ndarray) -> np.ndarray:
    """Which of the (sorted, unique) ``pfns`` are the kernel's zero page: the tracer's
    own reads of never-touched or trimmed heap pages map it (present, but no memory).
    By ``/proc/kpageflags``; without it (no CAP_SYS_ADMIN), by the PFN a read of a
    fresh page of our own maps."""
    import mmap
    import os
    out = np.zeros(len(pfns), bool)
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            i = 0
            while i < len(pfns):
                j = i + 1
                while j < len(pfns) and pfns[j] - pfns[j - 1] <= _KPF_GAP and pfns[j] - pfns[i] < 1 << 16:
                    j += 1
                lo = int(pfns[i])
                raw = os.pread(fd, (int(pfns[j - 1]) - lo + 1) * 8, lo * 8)
                flags = np.frombuffer(raw[:len(raw) // 8 * 8], dtype="<u8")
                k = (pfns[i:j] - lo).astype(np.int64)
                k = k[k < len(flags)]
                out[i:i + len(k)] = (flags[k] >> np.uint64(_KPF_ZERO_PAGE)) & np.uint64(1) != 0
                i = j
            return out
        except OSError:
            pass
        finally:
            os.close(fd)
    m = mmap.mmap(-1, PAGE)
    try:
        _ = m[0]
        import ctypes
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        pfd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            e = int.from_bytes(os.pread(pfd, 8, addr // PAGE * 8), "little")
        finally:
            os.close(pfd)
        del addr
    finally:
        try:
            m.close()
        except BufferError:
            pass
    zero = e & int(_PM_PFN) if e >> 63 else 0
    return pfns == zero if zero else out


def resident_pages(pid: int, ranges: list[tuple[int, int]]) -> int:
    """Pages of ``ranges`` backed by memory: present in ``/proc/PID/pagemap``, and
    not the zero page (which reading a free page maps).  Without PFNs (no
    CAP_SYS_ADMIN: pagemap shows them as 0) every present page counts."""
    import os
    left = MAX_PAGES
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise MappedTraceError(f"cannot read /proc/{pid}/pagemap: {e.strerror}") from None
    entries = []
    try:
        for lo, hi in ranges:
            first, last = lo // PAGE, (hi + PAGE - 1) // PAGE
            n = min(last - first, left)
            if n <= 0:
                continue
            left -= n
            raw = os.pread(fd, n * 8, first * 8)
            entries.append(np.frombuffer(raw[:len(raw) // 8 * 8], dtype="<u8"))
    finally:
        os.close(fd)
    if not entries:
        return 0
    e = np.concatenate(entries)
    present = e[(e & _PM_PRESENT) != 0]
    pfn = present & _PM_PFN
    if not len(pfn) or not pfn.any():
        return int(len(present))
    uniq, inv = np.unique(pfn, return_inverse=True)
    zero = _zero_pfns(uniq)
    return int(np.count_nonzero(~zero[inv]))


def _segments(heap: GlibcHeap) -> list[tuple[int, int, int]]:
    """``(start, end, first chunk header)`` of every arena segment, sorted."""
    return sorted((sg.start, sg.end, sg.first_chunk) for a in heap.arenas for sg in a.segments)


def free_whole_pages(heap: GlibcHeap) -> list[tuple[int, int]]:
    """Runs of whole pages inside free chunks that ``malloc_trim`` may give back
    (not a thread's tcache; the top chunk too): ``[(start, end)]``, page-aligned."""
    m = (heap.state != IN_USE) & (heap.list_code != _TCACHE) & (heap.arena_index >= 0)
    hdr = heap.headers[m].astype(np.int64)
    cs = heap.chunk_sizes[m].astype(np.int64)
    lo = (hdr + MALLOC_CHUNK + PAGE - 1) // PAGE * PAGE
    hi = (hdr + cs) // PAGE * PAGE
    ok = hi > lo
    return list(zip(lo[ok].tolist(), hi[ok].tolist()))


def heap_figures(pid: int, heap: GlibcHeap) -> dict:
    """What the heap holds and what is resident: the figures before and after a pass."""
    segs = [(s, e) for s, e, _ in _segments(heap)]
    free = free_whole_pages(heap)
    inuse = heap.state == IN_USE
    return {**proc_rss(pid),
            "heap_pages": sum((e - s) // PAGE for s, e in segs),
            "heap_resident_pages": resident_pages(pid, segs),
            "free_whole_pages": sum((e - s) // PAGE for s, e in free),
            "free_whole_pages_resident": resident_pages(pid, free),
            "in_use_chunks": int(np.count_nonzero(inuse & (heap.arena_index >= 0))),
            "in_use_bytes": int(heap.chunk_sizes[inuse & (heap.arena_index >= 0)].sum())}


def _mark_pages(pages: np.ndarray, base: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """Add 1 to ``pages[p - base]`` for every page ``p`` that ``[lo, hi)`` touches (a difference array)."""
    if not len(lo):
        return
    f = lo // PAGE - base
    la = (hi - 1) // PAGE - base + 1
    n = len(pages)
    f, la = np.clip(f, 0, n), np.clip(la, 0, n)
    d = np.zeros(n + 1, np.int64)
    np.add.at(d, f, 1)
    np.add.at(d, la, -1)
    pages += np.cumsum(d[:-1]).astype(pages.dtype)


def _bytes_per_page(base: int, n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bytes of the disjoint, sorted intervals ``[lo, hi)`` on each of ``n`` pages from page ``base``."""
    if not len(lo):
        return np.zeros(n, np.int64)
    bounds = (np.arange(n + 1, dtype=np.int64) + base) * PAGE
    cum = np.concatenate([[0], np.cumsum(hi - lo)])
    i = np.searchsorted(lo, bounds, "right") - 1
    inside = np.where(i >= 0, np.minimum(np.maximum(bounds - lo[np.maximum(i, 0)], 0),
                                         (hi - lo)[np.maximum(i, 0)]), 0)
    f = np.where(i >= 0, cum[np.maximum(i, 0)], 0) + inside
    return np.diff(f)


class CompactPolicy(MovePolicy):
    """Choose sparse pages, move what is on them into the holes of the others
    (see the module's docstring).  :attr:`report` holds the figures."""

    #: destinations refused per object before it is left where it is.  A refused chunk
    #: is held to the end, so the refusals of a whole pass are bounded by the free
    #: chunks that are wrong for it (on a source page, or a size whose split would leave
    #: too little: malloc then hands out the whole chunk, a different usable size),
    #: not by this times the objects.  8 left 2 % of the objects on their pages.
    max_tries = 64

    def __init__(self, pid: int, max_occupancy: float = 0.5, trim_only: bool = False):
        if not 0 < max_occupancy <= 1:
            raise MappedTraceError(f"--max-occupancy must be in (0, 1], not {max_occupancy}")
        self.pid = pid
        self.max_occupancy = max_occupancy
        self.trim_only = trim_only
        self.always = True          # the trim runs even when nothing moves
        self.sources: set[int] = set()
        self.report: dict = {"mode": "trim-only" if trim_only else "compact", "max_occupancy": max_occupancy}
        self._heap_free = 0
        self._tcache_addr = 0
        self._plug_calls = 0

    # --- choosing ----------------------------------------------------------------
    def select(self, analysis, graph, pinned) -> list[int]:
        if self.trim_only:
            return []
        heap = analysis.heap
        inuse = np.flatnonzero(heap.state == IN_USE)
        if len(inuse) != len(graph) or not np.array_equal(heap.addresses[inuse], graph.addresses):
            raise MappedTraceError("the heap graph's objects are not the heap's in-use chunks",
                                   hint="report it: compaction needs the chunk of every object")
        pin = np.zeros(len(graph), bool)
        if pinned:
            pin[np.fromiter(pinned.keys(), np.int64, len(pinned))] = True
        arena = heap.arena_index[inuse] >= 0
        hdr_all = heap.headers.astype(np.int64)
        end_all = hdr_all + heap.chunk_sizes.astype(np.int64)
        chosen: list[np.ndarray] = []
        counts = {"pages": 0, "pages_in_use": 0, "source_pages": 0, "blocked_pages": 0,
                  "source_bytes": 0}
        for start, end, first in _segments(heap):
            base, n = start // PAGE, (end - start + PAGE - 1) // PAGE
            if n <= 0 or n > MAX_PAGES:
                continue
            counts["pages"] += n
            sel = (hdr_all >= start) & (hdr_all < end) & (heap.arena_index >= 0)
            idx = np.flatnonzero(sel)
            st = heap.state[idx]
            lc = heap.list_code[idx]
            # an in-use chunk's bytes: its size field to the next chunk's prev_size (its user data's end)
            lo = hdr_all[idx] + 8
            hi = end_all[idx] + 8
            used = st == IN_USE
            held = (st != IN_USE) & (lc == _TCACHE)
            gi = np.searchsorted(graph.addresses, heap.addresses[idx[used]])
            blocked = np.zeros(n, np.int32)
            bl = np.zeros(len(idx), bool)
            bl[np.flatnonzero(used)] = pin[gi]
            bl |= held
            bl |= (st != IN_USE) & (lc == _TOP)
            _mark_pages(blocked, base, lo[bl], hi[bl])
            _mark_pages(blocked, base, np.array([start], np.int64), np.array([first + 2 * CHUNK_HDR_SZ], np.int64))
            busy = used | held
            occ = _bytes_per_page(base, n, lo[busy], np.minimum(hi[busy], end))
            src = (blocked == 0) & (occ > 0) & (occ <= self.max_occupancy * PAGE)
            counts["pages_in_use"] += int(np.count_nonzero(occ > 0))
            counts["blocked_pages"] += int(np.count_nonzero((blocked > 0) & (occ > 0)))
            counts["source_pages"] += int(np.count_nonzero(src))
            counts["source_bytes"] += int(occ[src].sum())
            pages = np.flatnonzero(src) + base
            self.sources.update(pages.tolist())
            # every movable object touching a source page
            mv = np.flatnonzero(used)
            mlo, mhi = lo[mv] // PAGE, (hi[mv] - 1) // PAGE
            srcset = np.zeros(n + 2, bool)
            srcset[np.flatnonzero(src)] = True
            touch = np.zeros(len(mv), bool)
            span = (mhi - mlo).max() if len(mv) else 0
            for d_ in range(int(min(span, MAX_PAGES)) + 1):
                p = np.clip(mlo + d_ - base, 0, n + 1)
                touch |= srcset[p] & (mlo + d_ <= mhi)
            chosen.append(gi[touch])
        self.report.update(counts)
        out = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        return [int(i) for i in out if not pin[i] and arena[i]]

    # --- measuring -----------------------------------------------------------------
    def before(self, live, analysis, result: PassResult) -> None:
        heap = analysis.heap
        self._heap_free = int(np.count_nonzero(heap.state != IN_USE))
        self.report["before"] = heap_figures(self.pid, heap)
        g = result.plan.graph
        moving = np.asarray(result.plan.moves, dtype=np.int64)
        nbytes = int(g.sizes[moving].sum()) if len(moving) else 0
        src = self.report.get("source_pages", 0)
        self.report["plan"] = {"objects": int(len(moving)), "bytes": nbytes, "source_pages": src,
                               # if the moved bytes took new pages, packed: what a dry run can promise
                               "estimated_pages_freed": max(0, src - (nbytes + PAGE - 1) // PAGE)}
        result.compaction = self.report

    def after(self, live, analysis, result: PassResult) -> None:
        live.refresh()
        heap = GlibcHeap(live, analysis.modules)
        self.report["after"] = heap_figures(self.pid, heap)
        b, a = self.report["before"], self.report["after"]
        self.report["released"] = {
            "heap_resident_pages": b["heap_resident_pages"] - a["heap_resident_pages"],
            "rss_anon_bytes": b["rss_anon"] - a["rss_anon"],
            "vm_rss_bytes": b["vm_rss"] - a["vm_rss"],
            "free_whole_pages_gained": a["free_whole_pages"] - b["free_whole_pages"]}
        self.report["skipped"] = len(result.skipped)

    # --- placing ---------------------------------------------------------------------
    def _trim_stops(self, extra: int) -> int:
        # two stops per system call; one madvise per free chunk of a page or more, brk
        return 4 * (self._heap_free + extra) + 4096

    def prepare(self, calls: Calls, analysis) -> None:
        if self.trim_only:
            return
        heap = analysis.heap
        self._tcache_off(calls, heap)
        calls.trim(self._trim_stops(0))
        # the trim consolidated the fastbins: walk the heap again for the free chunks now
        calls.release()
        calls.live.refresh()
        heap2 = GlibcHeap(calls.live, analysis.modules)
        calls.borrow()
        # only the arena the borrowed thread allocates from can hand out these chunks
        th = next((t for t in calls.live.threads if t.tid == calls.tid), None)
        own = heap2.thread_arena(th) if th is not None else None
        m = (heap2.state != IN_USE) & (heap2.arena_index >= 0)
        if own is not None:
            m &= heap2.arena_index == own       # -1 (none yet): a new arena, nothing to plug
        m &= (heap2.list_code != _TCACHE) & (heap2.list_code != _TOP)
        idx = np.flatnonzero(m)
        hdr = heap2.headers[idx].astype(np.int64)
        cs = heap2.chunk_sizes[idx].astype(np.int64)
        wanted = [(int(h), int(c)) for h, c in zip(hdr, cs) if self._wants_plug(int(h), int(c))]
        # glibc serves a request of a free chunk's exact size from an exact fit, but not
        # always that one (a small bin is FIFO): the sizes still wanted are asked again
        left = {h + CHUNK_HDR_SZ: c for h, c in wanted}
        calls_made = 0
        for _round in range(PLUG_ROUNDS):
            if not left:
                break
            sizes = [c for _addr, c in sorted(left.items(), key=lambda x: -x[1])]
            got = calls.plug_many([c - 8 for c in sizes])        # request2size(c - 8) == c
            calls_made += len(sizes)
            for r in got:
                left.pop(r, None)
        self._plug_calls = calls_made
        self.report["plugs"] = {"arena": ("unknown: all arenas" if own is None else "a new one" if own < 0
                                          else heap2.arenas[own].label),
                                "free_chunks_on_source_pages": len(wanted), "calls": calls_made,
                                "left_free": len(left),
                                "tcache": "off for the pass" if self._tcache_addr else "left on (mp_ not found)"}

    def _wants_plug(self, hdr: int, size: int) -> bool:
        """Plug the free chunk at ``hdr`` of ``size`` bytes for the pass (one on a source page)."""
        return any(p in self.sources for p in range(hdr // PAGE, (hdr + size - 1) // PAGE + 1))

    def _tcache_off(self, calls: Calls, heap: GlibcHeap) -> None:
        self._tcache_addr = 0
        if not heap.mp_addr or heap.mp is None:
            return
        addr = heap.mp_addr + MP_TCACHE_BINS
        cur = struct.unpack("<Q", calls.live.read(addr, 8))[0]
        if cur != heap.mp["tcache_bins"] or cur > TCACHE_MAX_BINS:
            return          # not the layout we know: leave it
        calls.poke(addr, 0)
        self._tcache_addr = addr

    def accept(self, new: int, size: int) -> bool:
        lo, hi = new - CHUNK_HDR_SZ, new + size + 8
        return not any(p in self.sources for p in range(lo // PAGE, (hi - 1) // PAGE + 1))

    def finish(self, calls: Calls, analysis) -> None:
        if "plugs" in self.report:
            self.report["plugs"]["refused_destinations"] = calls.holds
        # free chunks now: at most those before, plus one per object moved or chunk held
        # (a source page holds at most PAGE / 32 objects)
        calls.trim(self._trim_stops(calls.holds + self._plug_calls + len(self.sources) * (PAGE // 32)))


def compact(pid: int, *, dry_run: bool = False, max_occupancy: float = 0.5, trim_only: bool = False,
            keep_analysis: bool = False) -> PassResult:
    """One compaction pass over process ``pid`` (see the module's docstring);
    ``trim_only``: only the program's ``malloc_trim(0)``, measured the same way
    (the baseline).  The figures are in ``result.compaction``."""
    policy = CompactPolicy(pid, max_occupancy, trim_only)
    return relocate(pid, policy=policy, dry_run=dry_run, keep_analysis=keep_analysis)
