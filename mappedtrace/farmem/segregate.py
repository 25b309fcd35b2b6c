"""Hot/cold segregation of objects under the pager (``farmem run|attach --relocate``).

Page-based paging suffers from hotness fragmentation: one hot object keeps its
page resident, and the cold objects beside it with it (issue 17).  The pager
sees pages only (its faults, its evictions); this module turns that into
object-level heat with no instrumentation, and moves objects with the
relocation mover (:mod:`mappedtrace.relocate.mover`, its journal and its kill
safety) so that hot objects share pages and the pages they leave go cold whole.

**Object heat from page evidence (group testing).**  Over each window between
two passes the evictor tells this module which pages the program faulted on
(:meth:`Segregator.note_faults`: the program's faults only) and which pages it
evicted (:meth:`Segregator.note_evicted`).  At a pass every movable object
gets evidence from the page it starts on and the page it ends on:

* the page faulted ``f`` times: the object's score becomes ``DECAY·s + f/k``,
  ``k`` the objects starting on that page (a page's faults shared by the
  objects on it);
* the page was evicted and did not fault: ``DECAY·s`` (evidence of cold);
* neither (resident all window): no evidence, the score stays.  A resident
  page is not a cold one: the pager cannot see reads of resident pages.

A pass gathers the objects of highest score (``hot_share`` of the budget in
bytes) onto fresh pages, hottest first, and moves objects that sit on pages
gathered earlier but are no longer among the hottest off them again.  Each
gathering mixes objects from many source pages, so the next windows' faults
split them anew: objects that are hot keep the pages they land on faulting and
accumulate score; cold objects that came along with a hot neighbour are
diluted and decay once their page is evicted and stays away (a binary search
by repeated pooling; ``passes`` bounds it).  The pages the hot objects left
hold cold objects only, which the pager's clock then evicts whole.

**Placement.**  A :class:`HotColdPolicy` (a :class:`~..relocate.compact.
CompactPolicy` with every free chunk of the borrowed thread's arena plugged and
the tcache off for the pass) makes ``posix_memalign`` serve the destinations
from the top chunk, in the order asked (hottest first); a destination on a page
that held any object when the pass began is refused (held, asked again).

**Interplay with the pager.**  A pass runs in the evictor's own thread
(:meth:`Pager._evict_loop`), so no eviction batch is in flight or starts during
it, and under the pager's ``ptrace_lock`` (the graph's fork snapshot waits).
The fault loop keeps serving: the pass's own reads of evicted pages fault and
are served at once (the pager's own thread); the budget is lifted for the pass
(the target's injected allocator calls may touch pages never seen, which must
not wait for an eviction that cannot come while the program is stopped) and
the next scan sets it again; the faults the pass caused are dropped from the
evidence and the clock.  Known cost: the analysis reads every chunk header
and pointer slot, so a pass brings most of the heap back in, and the evictor
sends it out again after the pass (see benchmarks/farmem/RESULTS.md).
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np

from ..errors import MappedTraceError
from ..heap.glibc import IN_USE
from ..relocate.compact import CompactPolicy

PAGE = 4096
#: weight of the previous score at each piece of evidence
DECAY = 0.5
#: objects moved per pass at most (the pause grows with them: about 25–60 ms per 1 000)
MAX_MOVES = 20_000
#: set (to anything): each pass is checked (:mod:`~..relocate.verify`): the program is
#: stopped around it, and the heap graph after it must be the one before, renamed
VERIFY_ENV = "MTFARMEM_RELOCATE_VERIFY"


class HotColdPolicy(CompactPolicy):
    """Chooses the objects to gather (:meth:`select`) and places them side by side on fresh
    pages (see the module's docstring)."""

    max_tries = 16

    def __init__(self, seg: "Segregator"):
        super().__init__(seg.pid, max_occupancy=1.0)
        self.always = False
        self.seg = seg
        self._order: dict[int, int] = {}
        self._occupied = np.zeros(0, np.int64)
        self.figures: dict = {}
        self.score: np.ndarray | None = None
        self._promote = np.zeros(0, np.int64)

    # choosing -----------------------------------------------------------------------
    def select(self, analysis, graph, pinned) -> list[int]:
        heap = analysis.heap
        inuse = np.flatnonzero(heap.state == IN_USE)
        if len(inuse) != len(graph) or not np.array_equal(heap.addresses[inuse], graph.addresses):
            raise MappedTraceError("the heap graph's objects are not the heap's in-use chunks",
                                   hint="report it: relocation needs the chunk of every object")
        n = len(graph)
        addr = graph.addresses.astype(np.int64)
        size = graph.sizes.astype(np.int64)
        movable = heap.arena_index[inuse] >= 0
        if pinned:
            movable[np.fromiter(pinned.keys(), np.int64, len(pinned))] = False
        p0, p1 = addr // PAGE, (addr + np.maximum(size, 1) - 1) // PAGE
        self._occupied = np.unique(np.concatenate([p0, p1]))
        score = self.score = self.seg.scores_for(addr, p0, p1)
        # the hottest objects, up to hot_share of the budget in chunk bytes
        order = np.lexsort((self.seg.rng.random(n), -score))
        order = order[movable[order] & (score[order] > 0)]
        csum = np.cumsum(size[order] + 16)
        hot = np.zeros(n, bool)
        hot[order[:int(np.searchsorted(csum, self.seg.hot_bytes, "right"))]] = True
        in_hot = np.isin(p0, self.seg.hot_pages)
        promote = order[hot[order] & ~in_hot[order]]          # hottest first
        demote = np.flatnonzero(in_hot & ~hot & movable)
        promote = promote[:MAX_MOVES]
        demote = demote[:max(0, MAX_MOVES - len(promote))]
        self._promote = promote
        self._order = {int(i): k for k, i in enumerate(np.concatenate([promote, demote]).tolist())}
        self.figures = {"objects": n, "movable": int(movable.sum()), "pinned": len(pinned or ()),
                        "scored": int((score > 0).sum()), "hot": int(hot.sum()), "already_hot": int((hot & in_hot).sum()),
                        "promote": int(len(promote)), "demote": int(len(demote))}
        return list(self._order)

    def order(self, moves: list[int]) -> list[int]:
        return sorted(moves, key=lambda i: self._order.get(i, len(self._order)))

    # placing ------------------------------------------------------------------------
    def _wants_plug(self, hdr: int, size: int) -> bool:
        return True             # every free chunk: the destinations come from the top chunk

    def before(self, live, analysis, result) -> None:
        result.compaction = self.report
        self.seg.lift_budget()

    def accept(self, new: int, size: int) -> bool:
        lo, hi = (new - 16) // PAGE, (new + size + 7) // PAGE
        k = np.searchsorted(self._occupied, lo)
        return not (k < len(self._occupied) and self._occupied[k] <= hi)

    def after(self, live, analysis, result) -> None:
        pass


class Segregator:
    """Object heat and relocation passes for one :class:`~.pager.Pager`.

    :param every: seconds between passes (the first after one window)
    :param passes: passes at most (0: no bound)
    :param hot_share: bytes of objects gathered as hot, as a share of the budget
    """

    def __init__(self, pager, *, every: float = 3.0, passes: int = 0, hot_share: float = 0.5, seed: int = 1):
        if not 0 < hot_share <= 1:
            raise MappedTraceError(f"the hot share of the budget must be in (0, 1], not {hot_share}")
        self.pager, self.pid = pager, pager.pid
        self.every, self.max_passes, self.hot_bytes = every, passes, int(hot_share * pager.local)
        self.rng = np.random.default_rng(seed)
        self._faults: dict[int, int] = {}
        self._evicted: list[np.ndarray] = []
        self.s_addr = np.zeros(0, np.int64)     # scores by object address (sorted)
        self.s_val = np.zeros(0, np.float64)
        self.hot_pages = np.zeros(0, np.int64)  # pages gathered hot objects were placed on (sorted)
        self.last = time.monotonic()
        self.stats = dict(passes=0, passes_failed=0, objects_moved=0, bytes_moved=0, objects_pinned=0,
                          objects_promoted=0, objects_demoted=0, skipped=0, pause_ms_last=0.0, pause_ms_max=0.0,
                          pause_ms_total=0.0, hot_objects=0, verified=0, verify_failures=0)
        self.pinned_reasons: dict[str, int] = {}
        self.last_error: str | None = None

    # evidence (the evictor's thread) ---------------------------------------------------
    def note_faults(self, pages: list[int]) -> None:
        f = self._faults
        for p in pages:
            k = p // PAGE
            f[k] = f.get(k, 0) + 1

    def note_evicted(self, pages) -> None:
        if len(pages):
            self._evicted.append(np.asarray(pages, np.int64) // PAGE)

    def scores_for(self, addr: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Each object's score after this window's evidence (see the module's docstring)."""
        n = len(addr)
        prev = np.zeros(n)
        if len(self.s_addr):
            k = np.minimum(np.searchsorted(self.s_addr, addr), len(self.s_addr) - 1)
            hit = self.s_addr[k] == addr
            prev[hit] = self.s_val[k[hit]]
        if self._faults:
            fp = np.fromiter(self._faults.keys(), np.int64, len(self._faults))
            fc = np.fromiter(self._faults.values(), np.float64, len(self._faults))
            o = np.argsort(fp)
            fp, fc = fp[o], fc[o]

            def faults(p):
                j = np.minimum(np.searchsorted(fp, p), len(fp) - 1)
                return np.where(fp[j] == p, fc[j], 0.0)
            f = np.maximum(faults(p0), faults(p1))
        else:
            f = np.zeros(n)
        ev = np.unique(np.concatenate(self._evicted)) if self._evicted else np.zeros(0, np.int64)
        gone = np.isin(p0, ev) & np.isin(p1, ev)
        pages, occ = np.unique(p0, return_counts=True)
        k = occ[np.searchsorted(pages, p0)]
        score = np.where(f > 0, DECAY * prev + f / k, np.where(gone, DECAY * prev, prev))
        return score

    # passes -------------------------------------------------------------------------
    def due(self, kicked: bool = False) -> bool:
        """A pass is due: ``every`` seconds since the last, with faults seen since (twice that
        when a fault waits for room: the round that makes room goes first)."""
        if self.max_passes and self.stats["passes"] >= self.max_passes:
            return False
        return time.monotonic() - self.last >= self.every * (2 if kicked else 1) and bool(self._faults)

    def lift_budget(self) -> None:
        # the target runs the allocator calls with its pages possibly missing: let it in
        # (the next scan sets the estimate again)
        self.pager.server.set_resident(-(1 << 50))

    def run_pass(self) -> None:
        """One pass (the evictor's thread, no eviction in flight)."""
        from ..relocate.mover import relocate
        p = self.pager
        policy = HotColdPolicy(self)
        t0 = time.perf_counter()
        verify = bool(os.environ.get(VERIFY_ENV))
        try:
            with p.ptrace_lock:
                if verify:
                    self._stop_program()
                try:
                    res = relocate(self.pid, policy=policy, attempts=5, keep_analysis=verify)
                    if verify and res.moved:
                        self._verify(res)
                finally:
                    if verify:
                        os.kill(self.pid, signal.SIGCONT)
        except MappedTraceError as e:
            self.stats["passes_failed"] += 1
            self.last_error = e.message
            p.warnings.append(f"relocation pass: {e.message}")
            return
        finally:
            self.last = time.monotonic()
            p._faulted_since()           # the pass's own faults are no evidence of heat
            self._faults.clear()
            self._evicted.clear()
        dt = (time.perf_counter() - t0) * 1e3
        g = res.plan.graph
        addr = g.addresses.astype(np.int64)
        score = policy.score if policy.score is not None else np.zeros(len(g))
        moved = {int(g.find(o)): n for o, n, _s in res.moved} if res.moved else {}
        new_addr = addr.copy()
        if moved:
            idx = np.fromiter(moved.keys(), np.int64, len(moved))
            new_addr[idx] = np.fromiter(moved.values(), np.int64, len(moved))
        keep = score > 0
        o = np.argsort(new_addr[keep])
        self.s_addr, self.s_val = new_addr[keep][o], score[keep][o]
        prom_set = set(policy._promote.tolist())
        promoted = np.asarray([n for i, n in moved.items() if i in prom_set], np.int64)
        demoted_from = np.asarray([addr[i] // PAGE for i in moved if i not in prom_set], np.int64)
        hp = np.setdiff1d(self.hot_pages, demoted_from) if len(demoted_from) else self.hot_pages
        self.hot_pages = np.union1d(hp, promoted // PAGE)
        st = self.stats
        st["passes"] += 1
        st["objects_moved"] += len(res.moved)
        st["bytes_moved"] += int(sum(s for _o, _n, s in res.moved))
        st["objects_promoted"] += len(promoted)
        st["objects_demoted"] += len(res.moved) - len(promoted)
        st["objects_pinned"] = len(res.plan.pinned)
        st["skipped"] += len(res.skipped)
        st["hot_objects"] = policy.figures.get("hot", 0)
        st["pause_ms_last"] = round(res.timings.get("pause", dt / 1e3) * 1e3, 1)
        st["pause_ms_max"] = max(st["pause_ms_max"], st["pause_ms_last"])
        st["pause_ms_total"] = round(st["pause_ms_total"] + st["pause_ms_last"], 1)
        reasons: dict[str, int] = {}
        for why in res.plan.pinned.values():
            reasons[why] = reasons.get(why, 0) + 1
        self.pinned_reasons = reasons
        self.last_figures = {**policy.figures, "moved": len(res.moved), "batches": res.batches,
                             "plugs": (policy.report.get("plugs") or {}).get("calls", 0),
                             "timings_ms": {k: round(v * 1e3, 1) for k, v in res.timings.items()}}

    def recover(self) -> dict | None:
        """Finish or roll back the pass a killed pager left (its journal), with the fault loop
        serving (the recovery reads and writes pages that may be in the store): call after
        :meth:`Pager.connect`.  None when there was none."""
        from ..relocate.journal import load
        from ..relocate.mover import recover
        if load(self.pid) is None:
            return None
        self.lift_budget()
        with self.pager.ptrace_lock:
            return recover(self.pid)

    def _stop_program(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        for _ in range(500):                    # bounded: 5 s
            with open(f"/proc/{self.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.01)
        raise MappedTraceError(f"process {self.pid} did not stop for a checked relocation pass")

    def _verify(self, res) -> None:
        from ..relocate.verify import differs
        from ..session import analyse, preload_maps
        from ..target import settle
        from ..target.live import LiveTarget
        with LiveTarget(self.pid) as live:
            settle.settle_threads(live, None, max_steps=0)
            after = analyse(live, leaks=False, maps_cache=preload_maps(self.pid), glibc_model=False).graph
        why = differs(res.analysis.graph, after, res.moved)
        if why:
            self.stats["verify_failures"] += 1
            self.last_error = f"the heap graph after pass {self.stats['passes'] + 1} is not the one before: {why}"
            self.pager.warnings.append(self.last_error)
        else:
            self.stats["verified"] += 1

    def summary(self) -> str:
        """One line for the end of a paged run."""
        st = self.stats
        return (f"relocation: {st['passes']} passes ({st['passes_failed']} failed), {st['objects_moved']} objects "
                f"moved, {st['objects_pinned']} pinned, {len(self.hot_pages)} hot pages, pause max "
                f"{st['pause_ms_max']:.0f} ms" + (f", {st['verified']} passes checked, {st['verify_failures']} "
                                                  f"differed" if os.environ.get(VERIFY_ENV) else ""))

    def describe(self) -> dict:
        return {**self.stats, "pinned_by_reason": self.pinned_reasons, "hot_pages": int(len(self.hot_pages)),
                "hot_budget_bytes": self.hot_bytes, "every_s": self.every, "last_error": self.last_error,
                "last_pass": getattr(self, "last_figures", None)}
