"""One relocation pass over a live process, and the recovery of a pass cut short.

A pass (:func:`relocate`):

1. stop every thread (ptrace) and put the process in group-stop
   (:func:`~.inject.group_stop`) — from here a dead relocator leaves it stopped;
2. analyse it in place (:func:`mappedtrace.session.analyse` on the stopped
   process) and plan (:func:`~.plan.make_plan`);
3. check that no thread is inside the allocator (arena locks free, no frame in
   a malloc function) and borrow one thread for the calls;
4. allocate every destination with the program's ``posix_memalign`` (same
   alignment as the object's address has, up to a page) in batches
   (:mod:`.inject`: one stop-resume of the borrowed thread per batch of up to
   :data:`~.inject.BATCH_MAX` calls, journaled before it runs, its results read
   back in one read); refused destinations are asked again in the next batch;
5. journal the plan (copies, and every word with its old and new value), then
   copy the objects (one scatter read, one gather write) and rewrite the words:
   every word read in one scatter read and checked against its old value
   first, then written in one ``process_vm_writev`` of the runs of adjacent
   words; registers with ``PTRACE_SETREGS``, once per thread; journal ``commit``;
6. ``free`` every old chunk with the program's ``free``, in one batch; journal
   ``done``; detach and SIGCONT (unless the process was stopped before we came).

A destination whose ``malloc_usable_size`` is not the object's (glibc hands
out a whole free chunk when the rest is too small to split off) is refused:
held (journaled as a "plug") until the end of the pass, so that malloc offers
another.  A :class:`MovePolicy` (``mappedtrace compact``,
:mod:`.compact`) chooses the objects, may hold free chunks, change libc words
for the pass (journaled "pokes") and call ``malloc_trim``, and refuse
destinations; a recovery frees every plug and restores every poke.

Recovery (:func:`recover`), on the process a dead relocator left stopped: a
batch in flight is run to its end (its thread stopped anywhere inside the loop
or inside a call), and what it did is read from its table (the loop counts a
call done only after it returned, and a ``posix_memalign`` writes its result
there itself); then before ``commit`` every word gets its old value back (all
writes are idempotent) and every destination is freed; after ``commit`` the
remaining old chunks are freed; the batch mapping is unmapped.  A call whose
thread vanished with it is not repeated (that chunk is leaked rather than
freed twice).
"""
from __future__ import annotations

import base64
import gc
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import MappedTraceError
from ..target import _kernel as k
from ..target.base import ThreadState
from ..target.live import LiveTarget, check_pid
from . import inject
from .journal import Journal, load, start_time
from .plan import Plan, kernel_held_values, make_plan

#: test hook: SIGKILL this relocator after its k-th step that changes the target
#: (an injected call, armed; a copy; a word written)
KILL_ENV = "MAPPEDTRACE_RELOCATE_KILL_AFTER"


class _KillHook:
    """Counts the steps of a pass; with :data:`KILL_ENV` set to ``k``, dies at the
    k-th; set to ``PHASE:k`` (alloc, write, free), at the k-th step of that phase."""

    def __init__(self) -> None:
        env = os.environ.get(KILL_ENV, "")
        phase, _, n = env.rpartition(":")
        self.phase = phase or None
        self.after = int(n) if n.isdigit() else None
        self.n = 0
        self.current = ""

    def __call__(self) -> None:
        if self.span(1) is not None:
            self.die()

    def span(self, n: int) -> int | None:
        """Count ``n`` steps at once (a batch of calls or writes): the step among them
        (1..n) after which to die, or None."""
        if self.phase is not None and self.phase != self.current:
            return None
        first = self.n + 1
        self.n += n
        if self.after is not None and first <= self.after <= self.n:
            return self.after - first + 1
        return None

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


_hook = _KillHook()
#: largest alignment kept for a moved object (the natural alignment of its address, capped:
#: a cache line, what programs ask aligned_alloc for; a page for objects of a page or more).
#: Known imprecision: an object the program allocated with a larger alignment loses it.
MAX_ALIGN = 64
PAGE = 4096


class AllocatorBusy(MappedTraceError):
    """A thread was inside the allocator when the process was stopped: nothing was written."""


#: destinations refused (their usable size is not the object's) before an object is left where it is
MAX_TRIES = 8
#: bound on the system-call stops of a call a recovery finishes (a malloc_trim
#: makes one madvise per free chunk)
RECOVERY_MAX_STOPS = 1 << 22
#: attempts of a pass that met the allocator busy, and the pause between them
BUSY_ATTEMPTS = 20
BUSY_WAIT = 0.02


@dataclass
class PassResult:
    plan: Plan
    dry_run: bool
    moved: list[tuple[int, int, int]] = field(default_factory=list)   # (old, new, size)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    recovered: dict | None = None
    analysis: object = None
    attempts: int = 1
    #: objects planned to move that stayed (a policy refused every destination offered)
    skipped: list[int] = field(default_factory=list)
    #: a compaction pass's figures (:mod:`.compact`)
    compaction: dict | None = None
    #: batches of allocator calls run (each one stop-resume of the borrowed thread)
    batches: int = 0

    def pages(self) -> dict:
        """Distinct 4 KiB pages the moved objects touched before and touch after the
        pass: how much closer together they now are (what far memory pages by)."""
        def count(spans):
            pages = set()
            for a, n in spans:
                pages.update(range(a // PAGE, (a + max(n, 1) - 1) // PAGE + 1))
            return len(pages)
        return {"pages_before": count((o, s) for o, _n, s in self.moved),
                "pages_after": count((n, s) for _o, n, s in self.moved)}

    def to_dict(self) -> dict:
        f = self.plan.figures()
        f.update(self.pages())
        return {"dry_run": self.dry_run, "summary": f,
                "moved": [{"from": hex(o), "to": hex(n), "size": s} for o, n, s in self.moved],
                "pinned": [{"address": hex(int(self.plan.graph.addresses[i])), "size": int(self.plan.graph.sizes[i]),
                            "type": self.plan.graph.type_name(int(self.plan.graph.type_ids[i])), "reason": why}
                           for i, why in sorted(self.plan.pinned.items())],
                "timings_ms": {k_: round(v * 1000, 3) for k_, v in self.timings.items()},
                "skipped": len(self.skipped), "batches": self.batches,
                **({"compaction": self.compaction} if self.compaction is not None else {}),
                "recovered": self.recovered, "attempts": self.attempts, "warnings": self.warnings}


class _Writer:
    """Every write to the target goes here (counted for the kill hook)."""

    def __init__(self, live: LiveTarget, hook=None):
        self.live = live
        self._hook = hook

    def _span(self, n: int) -> int | None:
        return self._hook.span(n) if self._hook is not None else None

    def mem(self, addr: int, data: bytes) -> None:
        k.vm_write(self.live.pid, addr, data)
        if self._span(1) is not None:
            self._hook.die()

    def copies(self, items: list[tuple[int, bytes]]) -> None:
        """Write each ``(address, bytes)``, in one ``process_vm_writev`` per
        :data:`~mappedtrace.target._kernel.IOV_MAX` ranges (one step each for the kill hook)."""
        j = self._span(len(items))
        k.vm_writev(self.live.pid, items if j is None else items[:j])
        if j is not None:
            self._hook.die()        # killed between two ranges of the write

    def word(self, where: list | tuple, value: int, expect: int) -> None:
        """Write ``value`` to a word (``("mem", addr)`` or ``("reg", tid, name)``), which
        must hold ``expect`` or already ``value`` (a rerun of an idempotent write)."""
        if where[0] == "mem":
            self.words(np.array([where[1]], np.int64), np.array([value], np.int64), np.array([expect], np.int64))
        else:
            self.words(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                       [(where[1], where[2], expect, value)])

    def words(self, addrs: np.ndarray, values: np.ndarray, expect: np.ndarray,
              regs: list[tuple[int, str, int, int]] = ()) -> None:
        """Write many words: memory words ``addrs`` (int64 arrays, with their new and
        expected old values), then registers ``(tid, name, old, new)``.  Every memory
        word is read in one scatter read and checked (it must hold its old value or
        already its new one), every register too; nothing is written when a check
        fails.  Then the memory words are written in one gather write of the runs of
        adjacent words, and each thread's registers once."""
        pid = self.live.pid
        n = len(addrs)
        j = self._span(n + len(regs))
        cur = np.frombuffer(k.vm_read_ranges(pid, addrs, np.full(n, 8, np.int64)), "<i8") if n else addrs
        bad = np.flatnonzero((cur != expect) & (cur != values))
        if len(bad):
            i = int(bad[0])
            raise MappedTraceError(f"word at {int(addrs[i]):#x} holds {int(cur[i]) & (1 << 64) - 1:#x}, not "
                                   f"{int(expect[i]) & (1 << 64) - 1:#x}", hint="the process changed under the relocator")
        rv: dict[int, dict] = {}
        for tid, name, old, new in regs:
            r = rv.get(tid)
            if r is None:
                r = rv[tid] = ThreadState.unpack_regs(k.get_regs(tid))
            if r[name] not in (old, new):
                raise MappedTraceError(f"register {name} of thread {tid} holds {r[name]:#x}, not {old:#x}")
        # the writes (with the kill hook, only the first j of them: memory first)
        m = n if j is None else min(j, n)
        if m:
            order = np.argsort(addrs[:m], kind="stable")
            wa, data = addrs[:m][order], values[:m][order].astype("<i8").tobytes()
            cut = np.flatnonzero(np.diff(wa) != 8) + 1
            starts = [0, *cut.tolist()]
            ends = [*cut.tolist(), m]
            k.vm_writev(pid, [(int(wa[a]), data[8 * a:8 * b]) for a, b in zip(starts, ends)])
        todo = regs if j is None else regs[:max(0, j - n)]
        changed = set()
        for tid, name, _old, new in todo:
            rv[tid][name] = new
            changed.add(tid)
            for t in self.live.threads:
                if t.tid == tid:
                    t.regs[name] = new
        for tid in changed:
            k.set_regs(tid, ThreadState(tid, rv[tid]).pack_regs())
        if j is not None:
            self._hook.die()


def _alignment(addr: int, size: int) -> int:
    a = addr & -addr
    if size >= PAGE and a >= PAGE:
        return PAGE
    return max(16, min(a, MAX_ALIGN))


def _usable_many(live: LiveTarget, addrs: list[int]) -> list[int]:
    """malloc_usable_size of the chunks at ``addrs`` (glibc: the size field, less the
    header), their size fields read in one scatter read."""
    return [(h & ~7) - (16 if h & 2 else 8) for h in k.vm_read_words(live.pid, [a - 8 for a in addrs])]


def _read_many(live: LiveTarget, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(address, size)``, read in scatter reads."""
    sizes = [n for _a, n in ranges]
    raw = k.vm_read_ranges(live.pid, [a for a, _n in ranges], sizes)
    out, o = [], 0
    for n in sizes:
        out.append(raw[o:o + n])
        o += n
    return out


def _pick_thread(live: LiveTarget, frames: dict) -> int:
    ok = [t.tid for t in live.threads if live.can_resume(t.tid) and inject.thread_in_allocator(frames.get(t.tid, [])) is None]
    if not ok:
        raise MappedTraceError(f"no thread of process {live.pid} can be borrowed for the allocator calls",
                               hint="every thread is inside the allocator or holds a signal: try again")
    return min(ok, key=lambda t: (t != live.pid, t))


def _allocator_busy(analysis) -> str | None:
    from ..heap.glibc import F_MUTEX
    locked = [a.label for a in analysis.heap.arenas if a.raw and a.raw[F_MUTEX]]
    if locked:
        return f"arena {', '.join(locked)} is locked"
    for tid, fs in analysis.roots.frames.items():
        fn = inject.thread_in_allocator(fs)
        if fn:
            return f"thread {tid} is inside {fn}"
    return None


def _borrow(live, journal, alloc, tid) -> inject.Borrow:
    b, frame = inject.borrow(live, tid, alloc)
    journal.add({"t": "borrow", **b.__dict__})
    inject.arm(live, b, frame)
    return b


def _release(live, journal, b) -> None:
    inject.restore(live, b)
    journal.add({"t": "release", "tid": b.tid})


def _col(xs) -> dict:
    """A column of integers for the journal: little-endian int64, base64 (a JSON list of
    30 000 addresses took 20-60 ms to encode; this takes well under 1)."""
    return {"i8": base64.b64encode(np.asarray(xs, dtype="<i8").tobytes()).decode()}


def _uncol(c) -> np.ndarray:
    """The integers of a journal column (:func:`_col`), or of a plain JSON list."""
    if isinstance(c, dict):
        try:
            raw = base64.b64decode(c["i8"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise MappedTraceError("a column of the journal is damaged") from None
        if len(raw) % 8:
            raise MappedTraceError("a column of the journal is damaged")
        return np.frombuffer(raw, "<i8")
    return np.asarray(c, np.int64)


def _ops_record(ops: list[tuple[str, int, str, list[int]]]) -> dict:
    """A batch's calls ``(phase, i, fn, args)`` as journal columns (a phase or a
    function the same for all is written once)."""
    def col(xs):
        return xs[0] if len(set(xs)) == 1 else xs
    return {"n": len(ops), "ph": col([o[0] for o in ops]), "fn": col([o[2] for o in ops]),
            "i": _col([o[1] for o in ops]), "a0": _col([o[3][0] for o in ops]),
            "a1": _col([o[3][1] if len(o[3]) > 1 else 0 for o in ops])}


def _ops_from_record(r: dict) -> list[tuple[str, int, str, list[int]]]:
    """The calls of a ``batch`` journal record (:func:`_ops_record`)."""
    n = int(r["n"])
    ph = r["ph"] if isinstance(r["ph"], list) else [r["ph"]] * n
    fn = r["fn"] if isinstance(r["fn"], list) else [r["fn"]] * n
    i_, a0, a1 = (_uncol(r[c]).tolist() for c in ("i", "a0", "a1"))
    if not (len(ph) == len(fn) == len(i_) == len(a0) == len(a1) == n):
        raise MappedTraceError(f"a batch record of the journal is damaged ({n} calls)")
    # addresses are below 2**47: int64 holds them (a free's argument, an alignment, a size)
    return [(p_, i, f_, [x0, x1] if f_ == "posix_memalign" else [x0])
            for p_, i, f_, x0, x1 in zip(ph, i_, fn, a0, a1)]


class Calls:
    """The journaled allocator calls of a pass, made in batches (:mod:`.inject`): the
    destinations, and what a pass policy may do (:class:`MovePolicy`): chunks held
    for the pass ("plugs", freed at its end), ``malloc_trim``, and words of libc's
    own data changed for the pass and restored after it ("pokes").  A recovery
    frees the plugs and restores the pokes whether it rolls the pass back or
    finishes it.

    Journal records: ``scratch``/``unscratch`` (the batch mapping, named before it
    is made), ``batch`` (the table's address and every call ``[phase, i, fn,
    args]``, written after the table and before the thread is armed) and
    ``batch-end`` (each call's result)."""

    def __init__(self, live: LiveTarget, journal: Journal, alloc: inject.Allocator, tid: int,
                 hook: "_KillHook | None" = None):
        self.live, self.journal, self.alloc, self.tid = live, journal, alloc, tid
        self.hook = hook
        self.b: inject.Borrow | None = None
        self.scratch: inject.Scratch | None = None
        self.plugs: list[tuple[int, int]] = []      # (journal index, address)
        self._k = 0
        self._pokes: list[tuple[int, int, int]] = []  # (address, old, new)
        self.trims = 0
        self.holds = 0
        self.batches = 0

    def borrow(self) -> None:
        self.b = _borrow(self.live, self.journal, self.alloc, self.tid)
        sc = inject.choose_scratch(self.live)
        self.journal.add({"t": "scratch", "addr": sc.addr, "size": sc.size})
        self.scratch = sc
        inject.map_scratch(self.live, self.b, self.alloc, sc)

    def release(self) -> None:
        if self.scratch is not None:
            inject.unmap_scratch(self.live, self.b, self.alloc, self.scratch)
            self.journal.add({"t": "unscratch", "addr": self.scratch.addr})
            self.scratch = None
        _release(self.live, self.journal, self.b)
        self.b = None

    def batch(self, ops: list[tuple[str, int, str, list[int]]], max_stops: int | None = None) -> list[int]:
        """Run the calls ``(phase, i, fn, args)`` in batches of at most
        :data:`~.inject.BATCH_MAX`; each call's result (the address posix_memalign
        allocated, 0 if it failed; malloc_trim's result; 0 for free)."""
        out: list[int] = []
        for lo in range(0, len(ops), inject.BATCH_MAX):
            out += self._batch(ops[lo:lo + inject.BATCH_MAX], max_stops)
        return out

    def _batch(self, ops, max_stops: int | None) -> list[int]:
        live, sc, n = self.live, self.scratch, len(ops)
        inject.write_batch(live, self.alloc, sc, [(fn, args) for _ph, _i, fn, args in ops])
        self.journal.add({"t": "batch", "table": sc.table, **_ops_record(ops)})
        j = self.hook.span(n) if self.hook is not None else None
        if j is not None:
            # the tests' kill hook: die with the batch armed (j = 1), or with the thread
            # inside it, j - 1 calls done
            inject.run_batch_until(live, self.b, sc, n, j - 1, max_stops or inject.batch_stops(n))
            self.hook.die()
        inject.run_batch(live, self.b, sc, max_stops or inject.batch_stops(n))
        self.batches += 1
        done, res = inject.read_batch(live.pid, sc, n)
        if done != n:
            raise MappedTraceError(f"a batch of {n} allocator calls in process {live.pid} stopped after {done}")
        out = [(o if r == 0 else 0) if fn == "posix_memalign" else (r if fn == "malloc_trim" else 0)
               for (_ph, _i, fn, _a), (r, o) in zip(ops, res)]
        self.journal.add({"t": "batch-end", "done": n, "results": _col(out)})
        return out

    def plug_many(self, sizes: list[int]) -> list[int]:
        """Allocate chunks of ``sizes`` bytes and hold them until :meth:`free_plugs`;
        their addresses (0: none)."""
        ops = []
        for size in sizes:
            ops.append(("plug", self._k, "posix_memalign", [16, size]))
            self._k += 1
        res = self.batch(ops)
        for (_ph, k_, _fn, _a), r in zip(ops, res):
            if r:
                self.plugs.append((k_, r))
        return res

    def hold(self, items: list[tuple[int, int]]) -> None:
        """Keep each destination ``addr`` allocated for move ``i`` (``items``: ``(i,
        addr)``) as a plug (one journal record: a recovery frees each once, as a plug,
        never as a destination)."""
        if not items:
            return
        ks = list(range(self._k, self._k + len(items)))
        self._k += len(items)
        self.journal.add({"t": "hold", "i": [i for i, _a in items], "k": ks, "addr": [a for _i, a in items]})
        self.plugs.extend(zip(ks, (a for _i, a in items)))
        self.holds += len(items)

    def free_plugs(self) -> None:
        if self.plugs:
            self.batch([("pfree", k, "free", [addr]) for k, addr in self.plugs])
        self.plugs = []

    def trim(self, max_stops: int) -> None:
        """The program's ``malloc_trim(0)``."""
        self.batch([("trim", self.trims, "malloc_trim", [0])], max_stops)
        self.trims += 1

    def poke(self, addr: int, value: int) -> int:
        """Set the word at ``addr`` (libc's data) to ``value`` for the pass; its old value."""
        old = int.from_bytes(self.live.read(addr, 8), "little")
        self.journal.add({"t": "poke", "addr": addr, "old": old, "new": value})
        _Writer(self.live, _hook).word(("mem", addr), value, old)
        self._pokes.append((addr, old, value))
        return old

    def unpoke(self) -> None:
        for addr, old, new in reversed(self._pokes):
            _Writer(self.live).word(("mem", addr), old, new)
            self.journal.add({"t": "unpoke", "addr": addr})
        self._pokes = []


class MovePolicy:
    """How a pass chooses and places objects (the default: none of this).

    :meth:`select` chooses the objects (node indices, given the pins);
    :meth:`prepare` runs with the thread borrowed before the destinations are
    allocated; :meth:`accept` may refuse a destination (it is then held, see
    :meth:`Calls.hold`, and another is allocated, :attr:`max_tries` times in
    all, after which the object stays where it is); :meth:`finish` runs after
    the old chunks are freed.  ``always``: run prepare and finish even when
    nothing moves."""

    max_tries = 1
    always = False

    def select(self, analysis, graph, pinned) -> list[int]:
        """Node indices of the objects to move (pinned ones are dropped all the same)."""
        raise NotImplementedError

    def before(self, live: LiveTarget, analysis, result: "PassResult") -> None:
        """Runs once the plan is made (also on a dry run)."""

    def prepare(self, calls: Calls, analysis) -> None:
        pass

    def accept(self, new: int, size: int) -> bool:
        return True

    def order(self, moves: list[int]) -> list[int]:
        """The order in which the destinations of ``moves`` (node indices, the plan's
        address order) are allocated."""
        return moves

    def finish(self, calls: Calls, analysis) -> None:
        pass

    def after(self, live: LiveTarget, analysis, result: "PassResult") -> None:
        """Runs after the pass, the process still stopped."""


def relocate(pid: int, select="all", *, dry_run: bool = False, limit: int | None = None,
             keep_analysis: bool = False, attempts: int = BUSY_ATTEMPTS,
             policy: MovePolicy | None = None) -> PassResult:
    """One relocation pass over process ``pid`` (see the module's docstring).

    A journal left by a relocator that died is recovered first.  A pass that
    finds a thread inside the allocator lets the process run :data:`BUSY_WAIT`
    seconds and tries again, ``attempts`` times in all.  ``policy`` (a
    :class:`MovePolicy`) chooses and places the objects instead of ``select``.

    :raises MappedTraceError: the pass cannot be made (a one-line reason);
        nothing was written to the target then, or it was rolled back.
    """
    from ..session import MapsCache, preload_maps
    from ..target.live import process_state

    check_pid(pid)
    _warm()
    recovered = None
    if load(pid) is not None:
        recovered = recover(pid)
    cache = preload_maps(pid, MapsCache())
    if process_state(pid) == "T":
        attempts = 1        # stopped by someone else: waiting changes nothing
    for attempt in range(max(1, attempts)):
        # no cyclic garbage collection while the process is stopped: a pass allocates
        # hundreds of thousands of small objects, and each full collection walks them all
        # (measured: 20-30 % of a 16 000-object pass's pause)
        gc_was = gc.isenabled()
        gc.disable()
        try:
            res = _pass(pid, select, dry_run, limit, keep_analysis, cache, policy)
        except AllocatorBusy:
            if attempt + 1 >= attempts:
                raise
            time.sleep(BUSY_WAIT)
            continue
        finally:
            if gc_was:
                gc.enable()
        res.recovered = recovered
        res.attempts = attempt + 1
        return res
    raise AssertionError("unreachable")


def _warm() -> None:
    """Import what the analysis of a pass uses, and load the compiled marker, before
    the process is stopped: in a fresh ``mappedtrace`` process these lazy imports
    took 0.2–0.3 s of the pause."""
    from .. import _markkernel, tls, trace, unwind  # noqa: F401
    from ..analyses import containers, fields  # noqa: F401
    from ..heap import glibc  # noqa: F401
    import numpy.ma  # noqa: F401  (np.unique imports it on first use)
    _markkernel.load()


def _pass(pid: int, select, dry_run: bool, limit: int | None, keep_analysis: bool, cache,
          policy: MovePolicy | None = None) -> PassResult:
    from ..session import analyse
    from ..target import settle as _settle

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    live = LiveTarget(pid)
    journal = None
    try:
        if not dry_run:
            journal = Journal(pid, {"t": "begin", "pid": pid, "start": start_time(pid),
                                    "was_stopped": live.was_stopped})
            inject.group_stop(live)
            live.refresh()
        maps = cache.maps.get(os.path.realpath(live.exe)) or cache.maps.get(live.exe)
        _settle.settle_threads(live, maps, max_steps=0, _maps_loaded=True)
        timings["stop"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        # glibc frames stay scanned: what the model calls rootless (a buffer read(2)
        # is filling) must still be pinned
        a = analyse(live, leaks=False, maps_cache=cache, glibc_model=False)
        sel = (lambda g_, pinned_: policy.select(a, g_, pinned_)) if policy is not None else select
        plan = make_plan(a.graph, a.roots, sel, limit, read=live.read, kernel_values=kernel_held_values(pid))
        timings["analyse"] = time.perf_counter() - t1
        res = PassResult(plan, dry_run, timings=timings, warnings=list(a.warnings),
                         analysis=a if keep_analysis else None)
        if policy is not None:
            policy.before(live, a, res)
        if dry_run or not (plan.moves or (policy is not None and policy.always)):
            return res
        busy = _allocator_busy(a)
        if busy:
            raise AllocatorBusy(f"cannot relocate now: {busy}", hint="try again (the lock is held only briefly)")
        why = inject.injection_refused(pid)
        if why:
            raise MappedTraceError(f"cannot call the allocator of process {pid}: {why}",
                                   hint="relocation injects allocator calls; this process forbids it")
        tid = _pick_thread(live, a.roots.frames)
        alloc = inject.Allocator.find(live, a.modules)
        g = plan.graph
        t2 = time.perf_counter()
        moves: list[tuple[int, int, int]] = []
        moved_idx: list[int] = []
        _hook.current = "alloc"
        calls = Calls(live, journal, alloc, tid, _hook)
        calls.borrow()
        if policy is not None:
            _hook.current = "plug"
            policy.prepare(calls, a)
            _hook.current = "alloc"
        max_tries = policy.max_tries if policy is not None else MAX_TRIES
        dest: dict[int, int] = {}
        # (node, old, size, alignment, refusals so far): every pending object asks in one batch
        # destinations are asked in the policy's order (a batch served from the top chunk
        # places them side by side in that order)
        order = policy.order(plan.moves) if policy is not None else plan.moves
        pending = [(i, int(g.addresses[i]), int(g.sizes[i])) for i in order]
        pending = [(i, old, size, _alignment(old, size), 0) for i, old, size in pending]
        for _round in range(2 * max_tries + 2):
            if not pending:
                break
            got = calls.batch([("alloc", i, "posix_memalign", [align, size]) for i, _o, size, align, _t in pending])
            if not all(got):
                bad = next(p_ for p_, r in zip(pending, got) if not r)
                raise MappedTraceError(f"posix_memalign({bad[2]}) failed in process {pid}")
            usable = _usable_many(live, got)
            retry, undo, held = [], [], []
            for (i, old, size, align, tries), new, us in zip(pending, got, usable):
                if align > 16 and us != size:
                    # the alignment would change malloc_usable_size (memalign's split leaves
                    # slack): malloc's own 16 instead.  Known imprecision: an object the
                    # program asked more alignment for may lose it when it is this size.
                    undo.append(("undo", i, "free", [new]))
                    retry.append((i, old, size, 16, tries))
                # malloc hands out a whole free chunk when the rest would be too small to split
                # off: malloc_usable_size would change.  Such a chunk is refused like one the
                # policy refuses (held until the end, so that malloc offers another).
                elif us == size and (policy is None or policy.accept(new, size)):
                    dest[i] = new
                else:
                    held.append((i, new))
                    if tries + 1 < max_tries:
                        retry.append((i, old, size, align, tries + 1))
            calls.hold(held)
            if undo:
                calls.batch(undo)
            pending = retry
        for i in plan.moves:
            if i in dest:
                moves.append((int(g.addresses[i]), dest[i], int(g.sizes[i])))
                moved_idx.append(i)
            else:
                res.skipped.append(i)       # no place the policy accepts: stays where it is
        # given back before the words are written: one of them may be its register
        calls.release()
        timings["allocate"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        plan.moves = moved_idx
        # every rewrite: memory words (a word inside a moved object moves with it) as
        # arrays, registers as a list
        nn = len(g)
        moving = np.zeros(nn, bool)
        delta = np.zeros(nn, np.int64)
        if moves:
            mv_idx = np.asarray(moved_idx, np.int64)
            moving[mv_idx] = True
            delta[mv_idx] = np.asarray([nw - o for o, nw, _s in moves], np.int64)
        mem = [(s_.where[1], s_.old, s_.obj) for s_ in plan.sites if s_.where[0] == "mem"]
        m_addr = np.asarray([x[0] for x in mem], np.int64)
        m_old = np.asarray([x[1] for x in mem], np.int64)
        m_obj = np.asarray([x[2] for x in mem], np.int64)
        keep = moving[m_obj] if len(m_obj) else np.zeros(0, bool)
        m_addr, m_old, m_obj = m_addr[keep], m_old[keep], m_obj[keep]
        m_new = m_old + delta[m_obj]
        if moves:
            by_addr = np.asarray(sorted(moves), np.int64).reshape(-1, 3)
            jx = np.searchsorted(by_addr[:, 0], m_addr, "right") - 1
            jc = np.maximum(jx, 0)
            inside = (jx >= 0) & (m_addr < by_addr[jc, 0] + by_addr[jc, 2])
            m_addr = np.where(inside, by_addr[jc, 1] + (m_addr - by_addr[jc, 0]), m_addr)
        regs = [(s_.where[1], s_.where[2], s_.old, s_.old + int(delta[s_.obj]))
                for s_ in plan.sites if s_.where[0] == "reg" and moving[s_.obj]]
        journal.add({"t": "plan", "copies": _col(np.asarray(moves, np.int64).reshape(-1)), "idx": _col(moved_idx),
                     "mem": _col(m_addr), "mem_old": _col(m_old), "mem_new": _col(m_new),
                     "regs": [list(r) for r in regs]})
        _hook.current = "write"
        w = _Writer(live, _hook)
        data = _read_many(live, [(old, size) for old, _new, size in moves])
        w.copies([(new, d) for (_old, new, _size), d in zip(moves, data)])
        w.words(m_addr, m_new, m_old, regs)
        journal.add({"t": "commit"})
        timings["write"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        live.refresh()
        _hook.current = "free"
        calls.borrow()
        if moves:
            calls.batch([("free", i, "free", [old]) for i, (old, _new, _size) in zip(moved_idx, moves)])
        _hook.current = "pfree"
        calls.free_plugs()
        calls.unpoke()
        if policy is not None:
            policy.finish(calls, a)
        calls.release()
        timings["free"] = time.perf_counter() - t4
        res.moved = moves
        res.batches = calls.batches
        if policy is not None:
            t5 = time.perf_counter()
            policy.after(live, a, res)
            timings["measure"] = time.perf_counter() - t5
        journal.add({"t": "done"})
        return res
    except BaseException:
        if journal is not None:
            # before the commit: undo what was written (words back to their old values,
            # destinations freed); after it: free the old chunks left
            live.close()
            live = None
            try:
                recover(pid)
            except MappedTraceError as e:
                raise MappedTraceError(f"the pass failed and its recovery too ({e.message}); the process is "
                                       f"left stopped", hint=f"run 'mappedtrace relocate {pid} --recover'") from None
        raise
    finally:
        if live is not None:
            was = live.was_stopped
            live.close()
            if journal is not None:
                journal.finish()
                if not was:
                    k.kill(pid, signal.SIGCONT)
            timings["pause"] = time.perf_counter() - t0



def recover(pid: int) -> dict:
    """Finish or roll back the pass a dead relocator left in ``pid``'s journal,
    then let the process run again (SIGCONT unless it was stopped before).

    A recovery journals its own calls in the same file, so a recovery killed
    midway is recovered in turn without freeing anything twice.

    :returns: ``{"action": "rolled back"|"finished"|"none", "words": n,
        "freed": n, "leaked": n}``
    """
    recs = load(pid)
    if recs is None:
        return {"action": "none", "words": 0, "freed": 0, "leaked": 0}
    head = recs[0]
    was = bool(head.get("was_stopped", False))
    out = {"action": "", "words": 0, "freed": 0, "leaked": 0}
    live = LiveTarget(pid)
    journal = Journal.reopen(pid)
    try:
        inject.group_stop(live)
        live.refresh()
        allocs: dict[int, int] = {}                       # move index → destination
        plugs: dict[int, int] = {}                        # plug index → chunk held for the pass
        pokes: dict[int, tuple[int, int]] = {}            # libc word → (old, new) not restored yet
        # old chunks, destinations (rollback), destinations given back at once ("undo"), plugs
        freed: dict[str, set[int]] = {"free": set(), "rfree": set(), "undo": set(), "pfree": set()}
        unsure: dict[str, set[int]] = {"free": set(), "rfree": set(), "undo": set(), "pfree": set()}

        def apply(ph: str, i: int, result: int) -> None:
            if ph == "alloc":
                if result:
                    allocs[i] = result
            elif ph == "plug":
                if result:
                    plugs[i] = result
            elif ph == "undo":
                allocs.pop(i, None)
            elif ph != "trim":
                freed[ph].add(i)

        if any(r["t"] in ("call", "call-end") for r in recs):
            raise MappedTraceError(f"the journal of process {pid} was written by an older mappedtrace "
                                   "(one call per record)", hint="recover with the version that wrote it")
        last_batch = None
        scratches: dict[int, int] = {}                    # scratch mappings not unmapped: address → size
        for r in recs:
            if r["t"] == "batch":
                last_batch = r
                r["ops"] = _ops_from_record(r)
            elif r["t"] == "batch-end":
                for (ph, i, _fn, _a), res_ in zip(last_batch["ops"][:r["done"]], _uncol(r["results"]).tolist()):
                    apply(ph, i, res_)
                for ph, i, _fn, _a in last_batch["ops"][r["done"]:r.get("unsure", r["done"])]:
                    unsure.setdefault(ph, set()).add(i)
                last_batch = None
            elif r["t"] == "scratch":
                scratches[r["addr"]] = r["size"]
            elif r["t"] == "unscratch":
                scratches.pop(r["addr"], None)
            elif r["t"] == "hold":
                # refused destinations kept as plugs: freed once, as plugs
                for i, k_, addr in zip(r["i"], r["k"], r["addr"]):
                    if allocs.get(i) == addr:
                        del allocs[i]
                    plugs[k_] = addr
            elif r["t"] == "poke":
                pokes[r["addr"]] = (r["old"], r["new"])
            elif r["t"] == "unpoke":
                pokes.pop(r["addr"], None)
        # 1. a thread still borrowed when the relocator died: let its batch (or system
        # call) run to its end, read what the batch did, give the thread back
        borrowed = None
        for r in recs:
            if r["t"] == "borrow":
                borrowed = r
            elif r["t"] == "release":
                borrowed = None
        if borrowed is not None:
            b = inject.Borrow(**{f: borrowed[f] for f in inject.Borrow.__dataclass_fields__})
            alive = b.tid in live.stopped_tids
            sc = None
            if last_batch is not None:
                sc = inject.Scratch(last_batch["table"] - inject.PAGE, scratches.get(last_batch["table"] - inject.PAGE,
                                                                               inject.SCRATCH_SIZE))
                out["batch"] = {"calls": len(last_batch["ops"]), "done_when_found": inject.batch_done(pid, sc),
                                "in_flight": alive and inject.call_state(b) == "in-flight"}
            if alive and inject.call_state(b) == "in-flight":
                inject.finish_batch(live, b, RECOVERY_MAX_STOPS)
            if last_batch is not None:
                n = len(last_batch["ops"])
                done, res_ = inject.read_batch(pid, sc, n)
                results = []
                for (ph, i, fn, _a), (ret, o) in zip(last_batch["ops"][:done], res_):
                    v = (o if ret == 0 else 0) if fn == "posix_memalign" else 0
                    apply(ph, i, v)
                    results.append(v)
                # a call cut short with its thread (gone): freed or not, never freed twice
                cut = done + (1 if not alive and done < n else 0)
                for ph, i, _fn, _a in last_batch["ops"][done:cut]:
                    unsure.setdefault(ph, set()).add(i)
                    if ph == "undo":
                        allocs.pop(i, None)
                        out["leaked"] += 1
                journal.add({"t": "batch-end", "done": done, "results": _col(results), "unsure": cut})
            if alive:
                inject.restore(live, b)
            journal.add({"t": "release", "tid": b.tid})
        plan = next((r for r in recs if r["t"] == "plan"), None)
        committed = any(r["t"] == "commit" for r in recs)
        from ..modules import ModuleMap
        alloc = inject.Allocator.find(live, ModuleMap(live))
        tid = _pick_thread(live, {})
        todo: list[tuple[str, int, str, list[int]]] = []

        def free_rest(chunks, phase: str) -> None:
            # every chunk (journal index, address) whose free is not journaled as done; one
            # whose free began but did not end (unsure) is counted leaked, never freed twice
            for i, addr in chunks:
                if i in freed[phase]:
                    continue
                if i in unsure.get(phase, ()):
                    out["leaked"] += 1
                    continue
                todo.append((phase, i, "free", [addr]))
        if not committed:
            out["action"] = "rolled back"
            if plan is not None:
                w = _Writer(live)
                # a word inside a copy is freed with its destination: nothing to restore (and
                # a copy not made yet holds whatever the chunk held)
                cp = _uncol(plan["copies"]).reshape(-1, 3)
                dests = np.stack([cp[:, 1], cp[:, 1] + cp[:, 2]], axis=1)
                dests = dests[np.argsort(dests[:, 0], kind="stable")]
                ma, mo, mn = (_uncol(plan[c]) for c in ("mem", "mem_old", "mem_new"))
                if len(dests) and len(ma):
                    jx = np.searchsorted(dests[:, 0], ma, "right") - 1
                    jc = np.maximum(jx, 0)
                    out_ = ~((jx >= 0) & (ma < dests[jc, 1]))
                    ma, mo, mn = ma[out_], mo[out_], mn[out_]
                # only a word that holds the new value (or already the old one) goes back:
                # one the program changed since (someone sent SIGCONT) stays
                if len(ma):
                    cur = np.frombuffer(k.vm_read_ranges(pid, ma, np.full(len(ma), 8, np.int64)), "<i8")
                    ok = (cur == mn) | (cur == mo)
                    out["changed"] = out.get("changed", 0) + int(np.count_nonzero(~ok))
                    w.words(ma[ok], mo[ok], mn[ok])
                    out["words"] += int(np.count_nonzero(ok))
                for tid, name, oldv, newv in plan["regs"]:
                    if tid not in live.stopped_tids:
                        continue
                    try:
                        w.word(("reg", tid, name), oldv, newv)
                        out["words"] += 1
                    except MappedTraceError:
                        out["changed"] = out.get("changed", 0) + 1
                live.refresh()
            free_rest(list(allocs.items()), "rfree")
        else:
            out["action"] = "finished"
            copies = _uncol(plan["copies"]).reshape(-1, 3).tolist() if plan else []
            order = _uncol(plan["idx"]).tolist() if plan else []
            free_rest([(order[n_], old) for n_, (old, _new, _size) in enumerate(copies)], "free")
        # either way: the chunks held for the pass go back
        free_rest(list(plugs.items()), "pfree")
        # the frees in one borrowing, in batches; the dead relocator's batch mapping goes too
        old_scratch = [inject.Scratch(a_, n_) for a_, n_ in scratches.items()
                       if inject.scratch_mapped(pid, inject.Scratch(a_, n_))]
        for a_ in scratches:
            if all(sc.addr != a_ for sc in old_scratch):
                journal.add({"t": "unscratch", "addr": a_})     # unmapped before the relocator died
        if todo or old_scratch:
            calls = Calls(live, journal, alloc, tid)
            calls.borrow()
            for sc in old_scratch:
                inject.unmap_scratch(live, calls.b, alloc, sc)
                journal.add({"t": "unscratch", "addr": sc.addr})
            if todo:
                calls.batch(todo, RECOVERY_MAX_STOPS)
                out["freed"] += len(todo)
            calls.release()
        # libc's words get their values back
        w = _Writer(live)
        for addr, (oldv, newv) in pokes.items():
            try:
                w.word(("mem", addr), oldv, newv)
                journal.add({"t": "unpoke", "addr": addr})
                out["restored"] = out.get("restored", 0) + 1
            except MappedTraceError:
                out["changed"] = out.get("changed", 0) + 1
        journal.add({"t": "done"})
    finally:
        live.close()
    journal.finish()
    if not was:
        k.kill(pid, signal.SIGCONT)
    return out
