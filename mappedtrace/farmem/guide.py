"""Graph guidance for the pager: leaked pages first, prefetch along exact edges.

A thread of the pager refreshes the heap graph of the paged process every
``period`` seconds from a fork snapshot (:func:`mappedtrace.session.capture_live`:
the program is paused only for the fork) and turns it into two things:

* **leaked pages**: pages that overlap unreachable objects and no reachable
  one (a chunk's header counts as its object's).  The evictor takes them before
  any cold page (:meth:`Pager._pick`): a correct program never touches them again.
* **prefetch edges**: for every exact pointer (a typed slot of a typed
  object, :data:`~mappedtrace.graph.EDGE_EXACT`) from an object on page A to an
  object on page B, the edge A → B; the fault loop (``_serve.c``) fetches, with
  a faulting page, the pages reachable from it along these edges (breadth first,
  at most ``depth`` steps and 256 pages a round trip), into its prefetch cache.
  Conservative edges are not used (a hint's cost is a wasted fetch, but exact
  edges are what the maps give us for free).

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
never a wrong byte): the fork child of a paged process has no userfaultfd
(``EVENT_FORK`` is not asked for), so its pages that were in the store read as
zeros; every page of the copy that reads all zeros and has a store copy is
patched from the store (see :meth:`Guide._patch`).  The first version patched
only the pages still remote after the copy: pages brought back meanwhile read
as zeros, broke lists in the graph's view, and live pages were taken for
leaked ones (seen on the checksum workload: thousands of "leaked" evictions in
a program without leaks).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import MappedTraceError

PAGE = 4096
CHUNK_HDR = 16          # glibc: a chunk's size field sits just before the user pointer
MAX_EDGES = 1 << 20     # page edges handed to the fault loop at most


def leaked_pages(addresses: np.ndarray, sizes: np.ndarray, reached: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(leaked, live)``: pages (sorted) that overlap an unreached object and no reached one,
    and pages that overlap a reached one."""
    def pages_of(mask: np.ndarray) -> np.ndarray:
        a = addresses[mask].astype(np.uint64)
        lo = (a - np.uint64(CHUNK_HDR)) // np.uint64(PAGE)
        hi = (a + np.maximum(sizes[mask].astype(np.uint64), np.uint64(1)) - np.uint64(1)) // np.uint64(PAGE)
        if not len(lo):
            return np.zeros(0, np.uint64)
        n = (hi - lo + np.uint64(1)).astype(np.int64)
        idx = np.repeat(lo, n) + (np.arange(int(n.sum()), dtype=np.int64) -
                                  np.repeat(np.cumsum(n) - n, n)).astype(np.uint64)
        return np.unique(idx) * np.uint64(PAGE)
    dead = pages_of(~reached)
    live = pages_of(reached)
    return dead[~np.isin(dead, live)], live


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
    pairs = pairs[:MAX_EDGES]
    return pairs[:, 0] * np.uint64(PAGE), pairs[:, 1] * np.uint64(PAGE)


class Guide:
    """The graph thread of one :class:`~mappedtrace.farmem.pager.Pager`.

    :param period: seconds between graph refreshes (measured from the end of one)
    :param depth: prefetch steps along exact edges from a faulting page
    """

    def __init__(self, pager, *, period: float = 5.0, depth: int = 2):
        self.pager = pager
        self.period, self.depth = period, depth
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
        target = snapshot_process(p.pid, "fork")
        stored = p.server.stored()
        try:
            patched = self._patch(target, stored)
            self.state = "building the graph"
            t1 = time.perf_counter()
            a = analyse(target, leaks=False, maps_cache=self._maps)
            g = a.graph
            reached = np.asarray(g.reached, dtype=bool)
            leaked, live = leaked_pages(np.asarray(g.addresses), np.asarray(g.sizes), reached)
            # A C object that nothing points to stays so (no pointer to it can be made again, nor
            # can it be freed): pages found leaked before stay leaked unless this graph finds a
            # live object on them.  So one graph read from a poor copy (pages brought back
            # between the fork and the patch read as zeros) does not undo what earlier ones saw.
            prev = p.leaked_pages
            leaked = np.union1d(leaked, prev[~np.isin(prev, live)]) if len(prev) else leaked
            src, dst = page_edges(g, EDGE_EXACT)
        finally:
            target.close()
        self.last_seconds = time.perf_counter() - t0
        p.leaked_pages = leaked
        p.server.set_graph(src, dst, self.depth)
        self.refreshes += 1
        self.state = "ready"
        self.last = {"objects": int(len(g.addresses)), "unreached_objects": int((~reached).sum()),
                     "leaked_pages": int(len(leaked)), "page_edges": int(len(src)),
                     "patched_pages": patched, "capture_ms": round((t1 - t0) * 1e3, 1),
                     "graph_ms": round((time.perf_counter() - t1) * 1e3, 1), "updated": time.time(),
                     "prefetch_depth": self.depth}
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
