"""Graph guidance for the pager: leaked pages first, prefetch along exact edges.

A thread of the pager refreshes the heap graph of the paged process every
``period`` seconds from a fork snapshot (:func:`mappedtrace.session.capture_live`:
the program is paused only for the fork) and turns it into two things:

* **leaked pages**: pages that overlap unreachable objects and no reachable
  one nor a free chunk (a chunk's header counts as its object's; malloc hands
  a free chunk out again, the top chunk included, and the program then writes
  that page: a leaking server's newest leak shares its page with the top
  chunk, which would be evicted as leaked and fetched back).  The evictor takes them before
  any cold page (:meth:`Pager._pick`): a correct program never touches them again.
* **prefetch lists** (default, :func:`path_edges`): for every page P, the
  pages of the objects reached from the objects on P along exact pointers (a
  typed slot of a typed object, :data:`~mappedtrace.graph.EDGE_EXACT`), object
  by object, breadth first, nearest first, at most half the prefetch cache
  (and 256 pages, the loop's bound a round trip); the fault loop
  (``_serve.c``) fetches, with a faulting page, the pages of its list that
  are remote, into its prefetch cache (it is given the lists as edges of
  depth 1).  The first version (``$MTFARMEM_GRAPH_PREFETCH=pages``, kept to
  measure against) gave the loop page-to-page edges (A → B for a pointer
  from an object on A to one on B) and let it go breadth first 2 steps: after
  one step that follows every pointer of every object of the next page, and
  on the pointer chase of ``benchmarks/farmem`` it cut demand faults per
  operation 1.4-3.6× against ``--no-graph`` where object paths cut them
  3.4-9.1× (RESULTS.md).  Conservative edges are not
  used (a hint's cost is a wasted fetch, but exact edges are what the maps
  give us for free).

Nothing waits for this thread: the fault loop is compiled and holds no GIL, the
evictor reads :attr:`Pager.leaked_pages` as it is (an array replaced whole).

Why the first attempt hung, and what is different: that pager served faults
in Python, so the graph thread (Python, holding the GIL through the marker's
numpy work) starved the fault thread; the target's threads then sat in
userfaultfd waits, and the helper sat in ``madvise`` waiting (killably, not
interruptibly) for its REMOVE event to be read, so ptrace could not stop it
and the capture waited for ever.  Now the fault loop runs without the GIL,
and the maps are decoded before the fork.

Known imprecision, policy only (a wrong guess costs a fetch or an eviction,
never a wrong byte): the child of the pager's own fork gets no pages put back
(the program's forks do: ``_serve.c``, ``on_fork``), so its pages that were in
the store read as zeros; every page of the copy that reads all zeros and has a store copy is
patched from the store (see :meth:`Guide._patch`).  The first version patched
only the pages still remote after the copy: pages brought back meanwhile read
as zeros, broke lists in the graph's view, and live pages were taken for
leaked ones (seen on the checksum workload: thousands of "leaked" evictions in
a program without leaks).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from ..errors import MappedTraceError

PAGE = 4096
CHUNK_HDR = 16          # glibc: a chunk's size field sits just before the user pointer
MAX_EDGES = 1 << 22     # page edges handed to the fault loop at most (64 MiB here, 32 MiB in the loop)
PATH_PAGES = 256        # prefetch list of a page along object paths: the loop's MAXPF


def _pages_of(a: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Pages (sorted, unique) that chunks at user addresses ``a`` of ``sizes`` bytes overlap,
    their headers included."""
    a = a.astype(np.uint64)
    lo = (a - np.uint64(CHUNK_HDR)) // np.uint64(PAGE)
    hi = (a + np.maximum(sizes.astype(np.uint64), np.uint64(1)) - np.uint64(1)) // np.uint64(PAGE)
    if not len(lo):
        return np.zeros(0, np.uint64)
    n = (hi - lo + np.uint64(1)).astype(np.int64)
    idx = np.repeat(lo, n) + (np.arange(int(n.sum()), dtype=np.int64) -
                              np.repeat(np.cumsum(n) - n, n)).astype(np.uint64)
    return np.unique(idx) * np.uint64(PAGE)


def leaked_pages(addresses: np.ndarray, sizes: np.ndarray, reached: np.ndarray,
                 free: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(leaked, live)``: pages (sorted) that overlap an unreached object and no reached one
    (nor, with ``free`` = ``(user addresses, sizes)`` of the free chunks, a free chunk: malloc
    hands those out again and the program writes them, so such a page is not dead), and pages
    that overlap a reached one."""
    dead = _pages_of(addresses[~reached], sizes[~reached])
    live = _pages_of(addresses[reached], sizes[reached])
    keep = ~np.isin(dead, live)
    if free is not None and len(free[0]):
        keep &= ~_in_chunks(dead, *free)
    return dead[keep], live


def _in_chunks(pages: np.ndarray, addrs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Which ``pages`` overlap one of the chunks (user address, size; headers included).
    A free chunk may be large (the top chunk): compared by intervals, not page by page."""
    lo = addrs.astype(np.uint64) - np.uint64(CHUNK_HDR)
    hi = addrs.astype(np.uint64) + np.maximum(sizes.astype(np.uint64), np.uint64(1))
    order = np.argsort(lo)
    lo, hi = lo[order], hi[order]
    hi = np.maximum.accumulate(hi)          # chunks do not overlap; this keeps it safe if they did
    # the last chunk starting before the page's end: overlaps if it ends after the page's start
    i = np.searchsorted(lo, pages + np.uint64(PAGE), side="left") - 1
    ok = i >= 0
    out = np.zeros(len(pages), bool)
    out[ok] = hi[i[ok]] > pages[ok]
    return out


def page_edges(graph, exact_flag: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(src page, dst page)`` pairs of the exact edges, src page != dst page."""
    e = graph.edges
    if not len(e):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    e = e[(e["flags"] & exact_flag) != 0]
    src = (graph.addresses[e["src"]].astype(np.uint64) + e["src_off"].astype(np.uint64)) // np.uint64(PAGE)
    dst = (graph.addresses[e["dst"]].astype(np.uint64) + e["dst_off"].astype(np.uint64)) // np.uint64(PAGE)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], axis=1), axis=0) if keep.any() else np.zeros((0, 2), np.uint64)
    pairs = pairs[:1 << 20]             # (the first version's bound, kept)
    return pairs[:, 0] * np.uint64(PAGE), pairs[:, 1] * np.uint64(PAGE)


def _uniq(a: np.ndarray) -> np.ndarray:
    """Sorted unique values (by a sort: numpy 2's hash-based ``np.unique`` was 40x slower
    here on int64 keys)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _group_starts(a: np.ndarray) -> np.ndarray:
    """For a sorted array: the index of the first element equal to each element."""
    if not len(a):
        return np.zeros(0, np.int64)
    b = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
    return np.repeat(b, np.diff(np.append(b, len(a))))


def path_edges(graph, exact_flag: int, *, per_page: int, max_depth: int = 64,
               max_pairs: int = MAX_EDGES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefetch lists along object paths: ``(src page, dst page, depth)``, grouped by source
    page (ascending) and, within a group, nearest first.

    For every page P, the objects on P are followed along exact edges breadth first,
    object by object (not page by page), and the pages of the objects reached are
    listed in the order they are first met, at most ``per_page`` of them, at most
    ``max_depth`` steps.  Why objects and not pages: a fault says which page, not which
    object on it, so every object on P is a start; but a step from page to page
    follows *every* pointer out of every object on the next page too, and after two
    steps the list is mostly pages no path of the program leads to (a linked list in a
    random order, 16 records a page: page BFS at depth 2 is 16 + 256 pages of which
    about 2 are on the path the program walks; object paths reach ``per_page`` / 16
    steps along each of the 16 paths).

    Cost: a frontier of (source page, object) pairs, at most ``per_page`` objects per
    source page, one vectorised step per depth; the output is bounded by ``max_pairs``
    (``per_page`` is lowered to fit)."""
    e = graph.edges
    n = len(graph.addresses)
    empty = np.zeros(0, np.uint64)
    if not len(e) or not n:
        return empty, empty, np.zeros(0, np.int32)
    e = e[(e["flags"] & exact_flag) != 0]
    if not len(e):
        return empty, empty, np.zeros(0, np.int32)
    addr = np.asarray(graph.addresses, np.uint64)
    size = np.asarray(graph.sizes, np.uint64)
    order = np.argsort(e["src"], kind="stable")
    esrc, edst = e["src"][order].astype(np.int64), e["dst"][order].astype(np.int64)
    eptr = np.searchsorted(esrc, np.arange(n + 1, dtype=np.int64))
    # the pages an object is read from: its first and, for one that straddles, its second
    first = (addr - np.uint64(CHUNK_HDR)) // np.uint64(PAGE)
    last = (addr + np.maximum(size, np.uint64(1)) - np.uint64(1)) // np.uint64(PAGE)
    second = np.where(last > first, first + np.uint64(1), first)
    # starts: every page an object with exact out-edges overlaps (a straddling record: both)
    has_out = np.flatnonzero(eptr[1:] > eptr[:-1])
    sp = np.concatenate([first[has_out], second[has_out][second[has_out] != first[has_out]]])
    so = np.concatenate([has_out, has_out[second[has_out] != first[has_out]]])
    pages = _uniq(sp)
    sidx = np.searchsorted(pages, sp)
    per_page = int(max(4, min(per_page, max_pairs // max(1, len(pages)))))
    got = np.zeros(len(pages), np.int64)
    out_s, out_d, out_k = [], [], []
    fs, fo = sidx.astype(np.int64), so.astype(np.int64)
    for depth in range(1, max_depth + 1):
        live = got[fs] < per_page
        fs, fo = fs[live], fo[live]
        if not len(fs):
            break
        deg = eptr[fo + 1] - eptr[fo]
        tot = int(deg.sum())
        if not tot:
            break
        base = np.repeat(eptr[fo] - np.cumsum(deg) + deg, deg)
        child = edst[base + np.arange(tot, dtype=np.int64)]
        cs = np.repeat(fs, deg)
        key = _uniq(cs * np.int64(n) + child)               # one visit per (source page, object)
        cs, child = key // n, key % n
        # at most per_page objects of one source page go on (the first in object order)
        rank = np.arange(len(cs)) - _group_starts(cs)
        keep = rank < per_page
        cs, child = cs[keep], child[keep]
        d1, d2 = first[child], second[child]
        two = d2 != d1
        out_s += [cs, cs[two]]
        out_d += [d1, d2[two]]
        out_k += [np.full(len(cs), depth, np.int32), np.full(int(two.sum()), depth, np.int32)]
        got += np.bincount(cs, minlength=len(pages)) + np.bincount(cs[two], minlength=len(pages))
        fs, fo = cs, child
    if not out_s:
        return empty, empty, np.zeros(0, np.int32)
    s_idx = np.concatenate(out_s)
    d = np.concatenate(out_d)
    k = np.concatenate(out_k)
    src = pages[s_idx]
    keep = d != src
    src, d, k = src[keep], d[keep], k[keep]
    # one entry per (source, destination), at its least depth; then nearest first per source.
    # One int64 key per sort (lexsort was the slowest step): dense source and destination
    # indices (< 2^21 each, checked) and the depth (< 2^7)
    s_idx = s_idx[keep]
    dpages = _uniq(d)
    d_idx = np.searchsorted(dpages, d).astype(np.int64)
    if len(pages) >= 1 << 21 or len(dpages) >= 1 << 21:
        raise ValueError("path_edges: more than 2^21 pages")      # MAX_EDGES keeps it far below
    o = np.argsort((s_idx << 28 | d_idx << 7 | k.astype(np.int64)), kind="stable")
    src, d, k, s_idx = src[o], d[o], k[o], s_idx[o]
    u = np.ones(len(src), bool)
    u[1:] = (src[1:] != src[:-1]) | (d[1:] != d[:-1])
    src, d, k, s_idx = src[u], d[u], k[u], s_idx[u]
    o = np.argsort(s_idx << 7 | k.astype(np.int64), kind="stable")
    src, d, k = src[o], d[o], k[o]
    keep = (np.arange(len(src)) - _group_starts(src)) < per_page
    return src[keep] * np.uint64(PAGE), d[keep] * np.uint64(PAGE), k[keep]


class Guide:
    """The graph thread of one :class:`~mappedtrace.farmem.pager.Pager`.

    :param period: seconds between graph refreshes (measured from the end of one)
    :param depth: prefetch steps along exact edges from a faulting page
    """

    def __init__(self, pager, *, period: float = 5.0, depth: int = 2, prefetch: str | None = None):
        self.pager = pager
        self.period, self.depth = period, depth
        #: "paths" (object paths, :func:`path_edges`) or "pages" (page-to-page edges, breadth
        #: first in the fault loop: the first version, kept to measure against;
        #: $MTFARMEM_GRAPH_PREFETCH chooses it for the benchmark)
        self.prefetch = prefetch or os.environ.get("MTFARMEM_GRAPH_PREFETCH", "paths")
        #: the byte budget of one fault's prefetch along paths, in pages (at most 256, the loop's
        #: bound; $MTFARMEM_GRAPH_PREFETCH_PAGES sets it for the benchmark's trade-off rows)
        self.path_pages = int(os.environ.get("MTFARMEM_GRAPH_PREFETCH_PAGES", PATH_PAGES))
        if self.prefetch not in ("paths", "pages"):
            raise MappedTraceError(f"graph prefetch {self.prefetch!r}: 'paths' or 'pages'")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mtfm-graph", daemon=True)
        self.state = "waiting for the first graph"
        self.refreshes = 0
        self.last: dict = {}
        self.error: str | None = None
        self._maps = None
        self.last_seconds = 0.0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=30)

    def describe(self) -> dict:
        """What the status shows about the graph."""
        return {"state": self.state, "refreshes": self.refreshes, "error": self.error, **self.last}

    def _loop(self) -> None:
        # the first graph after the program has had a moment to build its heap
        if self._stop.wait(min(1.0, self.period)):
            return
        while not self._stop.is_set():
            try:
                self.refresh()
                self.error = None
            except MappedTraceError as e:
                self.error = e.message
                self.state = "graph failed; paging without it until the next try"
            except Exception as e:     # policy only: never take the pager down
                self.error = f"{type(e).__name__}: {e}"
                self.state = "graph failed; paging without it until the next try"
            # at most a fifth of the time on graphs: a 2-core machine shares them with the program
            if self._stop.wait(max(self.period, 4 * self.last_seconds)):
                return

    def refresh(self) -> None:
        """Take a fork snapshot, patch the pages that were in the store, build the graph,
        and hand its leaked pages to the evictor and its page edges to the fault loop."""
        from ..graph import EDGE_EXACT
        from ..session import analyse, preload_maps
        from ..target.capture import snapshot_process
        p = self.pager
        t0 = time.perf_counter()
        self.state = "capturing"
        # the maps decoded before the pause (session.capture_live's order), kept between refreshes
        self._maps = preload_maps(p.pid, self._maps)
        # The evictor goes on meanwhile: a DROP sent to the helper while the capture has its
        # thread stopped waits for the resume (the fork's pause), and the helper's madvise
        # cannot hold the stop up (its REMOVE events are read by the compiled loop).  Holding
        # the evictor for the capture starved the budget for seconds on a loaded machine.
        # With every thread stopped, the loop is told that the next fork is ours: its child gets
        # no pages put back (patched below instead); the program's own forks get them (_serve.c)
        try:
            with p.ptrace_lock:         # a relocation pass has the program stopped: wait for it
                target = snapshot_process(p.pid, "fork", before_fork=lambda: p.server.own_fork(True))
        finally:
            p.server.own_fork(False)
        stored = p.server.stored()
        try:
            patched = self._patch(target, stored)
            self.state = "building the graph"
            t1 = time.perf_counter()
            a = analyse(target, leaks=False, maps_cache=self._maps)
            g = a.graph
            reached = np.asarray(g.reached, dtype=bool)
            h = a.heap
            fr = np.asarray(h.state) != 0          # free chunks, the top chunk among them
            free = (np.asarray(h.addresses)[fr], np.asarray(h.chunk_sizes)[fr].astype(np.uint64) - np.uint64(CHUNK_HDR))
            leaked, live = leaked_pages(np.asarray(g.addresses), np.asarray(g.sizes), reached, free)
            # A C object that nothing points to stays so (no pointer to it can be made again, nor
            # can it be freed): pages found leaked before stay leaked unless this graph finds a
            # live object on them.  So one graph read from a poor copy (pages brought back
            # between the fork and the patch read as zeros) does not undo what earlier ones saw.
            prev = p.leaked_pages
            leaked = np.union1d(leaked, prev[~np.isin(prev, live)]) if len(prev) else leaked
            # how much of what is leaked the pager can send away whole: bytes of unreached
            # objects that lie on leaked pages only (the rest share a page with live data or a
            # free chunk, and stay resident while that page is in use)
            ua = np.asarray(g.addresses, np.uint64)[~reached]
            us = np.asarray(g.sizes, np.uint64)[~reached]
            f = (ua - np.uint64(CHUNK_HDR)) // np.uint64(PAGE) * np.uint64(PAGE)
            l_ = (ua + np.maximum(us, np.uint64(1)) - np.uint64(1)) // np.uint64(PAGE) * np.uint64(PAGE)
            whole = np.isin(f, leaked) & np.isin(l_, leaked)
            unreached_bytes, on_leaked = int(us.sum()), int(us[whole].sum())
            if self.prefetch == "paths":
                # at most half the prefetch cache a round trip: the nearest pages of a list must
                # not be pushed out of the cache by the farthest ones of the same round trip
                per = max(4, min(self.path_pages, p.server.cache_pages // 2))
                src, dst, _ = path_edges(g, EDGE_EXACT, per_page=per)
                depth = 1                           # the lists are transitive already
            else:
                src, dst = page_edges(g, EDGE_EXACT)
                depth = self.depth
        finally:
            target.close()
        self.last_seconds = time.perf_counter() - t0
        p.server.set_leaked(leaked)         # the fault loop never prefetches them (first: see below)
        p.leaked_pages = leaked
        p.server.set_graph(src, dst, depth)
        self.refreshes += 1
        self.state = "ready"
        self.last = {"objects": int(len(g.addresses)), "unreached_objects": int((~reached).sum()),
                     "unreached_bytes": unreached_bytes, "unreached_bytes_on_leaked_pages": on_leaked,
                     "leaked_pages": int(len(leaked)), "page_edges": int(len(src)),
                     "patched_pages": patched, "capture_ms": round((t1 - t0) * 1e3, 1),
                     "graph_ms": round((time.perf_counter() - t1) * 1e3, 1), "updated": time.time(),
                     "prefetch": self.prefetch, "prefetch_depth": depth,
                     "prefetch_list_pages": per if self.prefetch == "paths" else None}
        if not len(src):
            self.last["note"] = ("no exact pointer edges between pages (a binary without maps is paged with "
                                 "leaked pages from a conservative graph, and no prefetch along pointers)")

    def _patch(self, target, stored: np.ndarray) -> int:
        """Write the store's copies into the captured copy where the copy reads all zeros.

        A page that was in the store at the fork reads as zeros in the child (no
        userfaultfd there); its store copy is its content then (a remote page cannot
        change).  The set of remote pages *at the fork* is not known from outside, so
        every page with a store copy that reads as zeros is patched.  Known
        imprecision: a page the program zeroed after it came back gets its older
        store copy in the graph's view (policy only)."""
        n = 0
        cand = []
        for q in (int(x) for x in stored):
            pc = target.piece_at(q)
            if pc is None or pc.data is None or q + PAGE > pc.end:
                continue
            if not np.frombuffer(pc.data[q - pc.start:q - pc.start + PAGE], dtype=np.uint64).any():
                cand.append(q)
        for i in range(0, len(cand), 512):
            batch = cand[i:i + 512]
            got = self.pager.store.get_many([self.pager.key(q) for q in batch])
            for q, data in zip(batch, got):
                if data is None or len(data) != PAGE:
                    continue        # a zero page (no key), or gone: the copy's zeros stand
                pc = target.piece_at(q)
                pc.data[q - pc.start:q - pc.start + PAGE] = data
                n += 1
        return n
