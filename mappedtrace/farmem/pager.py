"""The pager: keeps a process's resident heap under a budget, pages the rest to a store.

Threads (all in the pager process; the program only runs the runtime helper):

* **fault loop** — compiled (:mod:`._serve`, ``_serve.c``), holding no GIL:
  reads the userfaultfd, serves missing-page faults with ``UFFDIO_COPY`` from
  the store (or zeros for a page never evicted) with the neighbours that the
  store also holds prefetched in the same round trip (and the pages the heap
  graph's lists name; never a page the graph says is leaked), holds write-protect
  faults on pages being evicted until the drop is done, and follows the
  program's own ``madvise(DONTNEED)``, ``munmap`` and ``mremap`` (events
  REMOVE, UNMAP, REMAP).  It owns the table of the store's copies.
* **evictor** — every ``interval`` s, and at once when a fault waits for room:
  finds new heap mappings and registers them (missing + write-protect mode),
  reads ``/proc/PID/pagemap`` (present and soft-dirty bits), and when the
  resident heap is over the budget picks pages (leaked first when the heap
  graph says so, then cold by a clock) and hands them to the compiled
  eviction batch (``_evict.c``, no GIL) 512 at a time: write-protect, read
  with ``process_vm_readv``, hash, send what changed to the store (one
  pipelined request), ask the helper to drop them.  Each batch's drop gives
  its room to the waiting faults at once.
* **status** — writes the state file that ``farmem status`` reads.
* **graph** (optional, :mod:`.guide`) — refreshes the heap graph from a fork
  snapshot and turns it into "leaked" pages and prefetch hints; nothing waits
  for it.

The budget: the fault loop lets a fault in only against room under the
budget (``local`` − its resident estimate); the estimate is set from each
pagemap scan plus the pages installed while the scan ran (so none is
forgotten), grows with every page installed and shrinks with every batch
dropped.  Faults of the pager's own reads of the program are told apart by
their thread (``UFFD_FEATURE_THREAD_ID``) and do not wait.

Dirty tracking: a page is write-protected (uffd-wp) *before* it is read, so
no write can slip in between the read and the drop; its content is hashed
(XXH3, 64 bits) and compared with the hash of the copy the store holds; a
page whose store copy is current is dropped without being sent again.
Soft-dirty bits (``/proc/PID/clear_refs`` 4) only feed the clock as "written
recently"; they decide nothing about correctness.

The clock: a page served by a fault, seen soft-dirty, or seen accessed by the
access source (:mod:`.access`: the kernel's DAMON monitor, where it can be
used) gets its reference bit; the hand sweeps the resident heap pages in
address order, clears the bits it passes and evicts pages whose bit is clear.
Known imprecision: without DAMON (``--access faults``, or a kernel where it
cannot be had) reads of resident pages leave no trace visible from outside
(pagemap has no accessed bit), so a page only read is seen as cold until it
faults once; with DAMON a reference bit is a region's, not a page's; and
the fault loop keeps the last 4096 faulted pages for the clock, so in a round
with more faults than that the oldest ones set no bit.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import threading
import time
from collections import deque

import numpy as np

from ..errors import MappedTraceError, NoSuchProcess
from ..fileio import write_private
from ..target import _kernel as K
from . import _uffd as U
from ._serve import FaultServer, make_kick_fd
from .access import DamonUnavailable, FaultsOnly, open_source, reclaim_stale
from .ranges import HeapRanges
from .stores import Store, StoreError

PAGE = 4096
PM_PRESENT = np.uint64(1 << 63)
PM_SOFT_DIRTY = np.uint64(1 << 55)
BATCH = 512                  # pages per eviction batch (2 MiB; _mtfs.h's EVB is the most)
FIRST_BATCH = 32             # a round starts small and doubles: the faults waiting for room get
                             # the first room after 32 pages, not 512 (a file store on a busy
                             # disk took 3 ms a page to create: 1.5 s for a batch of 512)
GRAPH_READAHEAD = 0           # graph-prefetched pages put into the program a fault (the rest: cache;
                             # benchmarks/farmem/RESULTS.md, "readahead and the graph")
HIGH_WATER = 0.95            # evict when the resident heap passes this share of the budget,
LOW_WATER = 0.90             # down to this share (faults find room without waiting)
CLEAR_REFS_EVERY = 0.1       # s between two clearings of the soft-dirty bits (each costs the
                             # program a minor fault on its next write to every page)

# the helper's wire format (runtime/mtfarmem.c)
_REQ = struct.Struct("<II")
_RANGE = struct.Struct("<QQ")
_REPLY = struct.Struct("<iiQQQ")
OP_HELLO, OP_DROP, OP_PING, OP_RELEASE = 1, 2, 3, 4
MAX_RANGES = 4096



#: PF_EXITING in /proc/PID/stat's flags: the process is past exit_group (its files may be closed)
_PF_EXITING = 0x4


def _exiting(pid: int) -> bool:
    """Whether ``pid`` is gone or on its way out (exiting, a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return fields[0] in "ZXx" or bool(int(fields[6]) & _PF_EXITING)
    except (OSError, ValueError, IndexError):
        return True

class FarMemError(MappedTraceError):
    """Far memory cannot be set up or kept for this process; the message says why."""


def state_dir() -> str:
    """Where pagers keep their state files and helper sockets (mode 0700)."""
    d = "/run/mappedtrace/farmem" if os.access("/run", os.W_OK) else \
        os.path.join(os.path.expanduser("~"), ".cache", "mappedtrace", "farmem")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def state_path(pid: int) -> str:
    return os.path.join(state_dir(), f"{pid}.json")


def read_state(pid: int) -> dict | None:
    try:
        with open(state_path(pid)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


class Helper:
    """The control socket of the runtime helper inside the target."""

    def __init__(self, path: str, *, timeout: float = 10.0, alive=lambda: True):
        deadline = time.monotonic() + timeout
        self.lock = threading.Lock()
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.s.close()
                if time.monotonic() > deadline or not alive():
                    raise FarMemError(f"the far-memory helper did not answer on {path}",
                                      hint="the program must run with the helper preloaded (farmem run); a "
                                           "static binary or one that clears LD_PRELOAD cannot be paged") from None
                time.sleep(0.02)

    def call(self, op: int, ranges: list[tuple[int, int]] = ()) -> tuple[int, int, int, int, int]:
        """``(rc, errno, value, features, address of the last drop)`` of one request."""
        # page numbers, not addresses (see runtime/mtfarmem.c: the helper's data is a root)
        msg = _REQ.pack(op, len(ranges)) + b"".join(_RANGE.pack(a >> 12, n >> 12) for a, n in ranges)
        with self.lock:
            try:
                self.s.sendall(msg)
                buf = b""
                while len(buf) < _REPLY.size:
                    part = self.s.recv(_REPLY.size - len(buf))
                    if not part:
                        raise FarMemError("the far-memory helper closed its socket (the program exited?)")
                    buf += part
            except (ConnectionResetError, BrokenPipeError):
                raise FarMemError("the far-memory helper closed its socket (the program exited?)") from None
            except OSError as e:
                raise FarMemError(f"the far-memory helper: {e.strerror or e}") from None
        return _REPLY.unpack(buf)

    def close(self) -> None:
        self.s.close()


def find_uffd(pid: int) -> tuple[int, int] | None:
    """``(fd number, features)`` of the userfaultfd the helper made in ``pid``, or None.

    Found in ``/proc/PID/fd`` rather than asked of the helper: a helper in the
    middle of a drop that a dead pager asked for waits until someone reads the
    userfaultfd, so the descriptor must be had without it.
    """
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        raise NoSuchProcess(f"no process {pid}") from None
    except PermissionError:
        raise FarMemError(f"not permitted to look at the descriptors of process {pid}") from None
    for n in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}") != "anon_inode:[userfaultfd]":
                continue
            with open(f"/proc/{pid}/fdinfo/{n}") as f:
                for line in f:
                    if line.startswith("API:"):         # API:\t<api>:<features>:<ioctls>
                        return int(n), int(line.split()[1].split(":")[1], 16)
            return int(n), 0
        except (OSError, ValueError, IndexError):
            continue
    return None


def wait_uffd(pid: int, *, timeout: float = 10.0, alive=lambda: True) -> tuple[int, int]:
    """``(fd number, features)`` of ``pid``'s userfaultfd once its helper made the API handshake.

    Features 0 is the helper's probe descriptor, or its descriptor before the
    ``UFFDIO_API`` handshake (the helper makes both as it starts): a pager that
    connects at that moment waits for the handshake rather than take the kernel
    for one without the features (a CI run once did).
    """
    deadline = time.monotonic() + timeout
    while (found := find_uffd(pid)) is None or not found[1]:
        if time.monotonic() > deadline or not alive():
            if found is not None:
                break                               # a kernel that grants none of the features
            raise FarMemError(f"process {pid} has no far-memory helper (no userfaultfd)",
                              hint="start it with 'mappedtrace farmem run'; a static binary, one that "
                                   "clears LD_PRELOAD, or a kernel without userfaultfd cannot be paged")
        time.sleep(0.01)
    fdnum, features = found
    missing = [n for bit, n in U.NEEDED_FEATURES.items() if not features & bit]
    if missing:
        raise FarMemError(f"this kernel's userfaultfd lacks {', '.join(missing)}",
                          hint="far memory needs Linux 5.7 or newer (anonymous write-protect)")
    return fdnum, features


def registered_vmas(pid: int) -> list[tuple[int, int]]:
    """VMAs of ``pid`` registered with a userfaultfd (smaps VmFlags ``um``/``uw``)."""
    out = []
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(maxsplit=1)[0]:
                    lo, hi = line.split(maxsplit=1)[0].split("-")
                    cur = (int(lo, 16), int(hi, 16))
                elif line.startswith("VmFlags:") and cur:
                    flags = line.split()[1:]
                    if "um" in flags or "uw" in flags:
                        out.append(cur)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _helper_sp(pid: int) -> int:
    """The stack pointer of the helper's thread (named ``mtfarmem``), 0 if unknown.

    Read from ``/proc/PID/task/TID/syscall`` (``nr args… sp pc`` while the
    thread waits in a system call, as it does between requests)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "mtfarmem":
                    continue
            for _ in range(50):
                with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                    parts = f.read().split()
                if len(parts) >= 9:
                    return int(parts[-2], 16)
                time.sleep(0.01)        # "running": between two system calls
    except (OSError, ValueError):
        pass
    return 0


class Pager:
    """Far memory for process ``pid`` whose helper listens on ``sock``.

    :param local: the resident heap budget in bytes
    :param ns: prefix of this process's keys in the store
    :param resume: a pager took over from one that died: pages it does not know
        may be in the store (asked on their first fault)
    :param graph: guide eviction and prefetch by the heap graph (:mod:`.guide`)
    :param prefetch: pages after a faulting page fetched with it when the store holds them
    :param readahead: put prefetched pages into the program while half the room left under the
        budget allows (each saves the program a fault), not only into the pager's cache
    :param graph_readahead: of the pages the graph's lists bring, at most this many a fault
        go into the program (nearest first); the rest wait in the pager's cache
    :param access: what else feeds the clock (:mod:`.access`): ``damon`` (the kernel's access
        monitor: reads too), ``faults`` (faults and soft-dirty bits only) or ``auto`` (DAMON
        where it can be used here, faults otherwise; the status says which and why)
    """

    def __init__(self, pid: int, store: Store, *, local: int, sock: str, ns: str, resume: bool = False,
                 interval: float = 0.1, soft_dirty: bool = True, graph: bool = False, prefetch: int = 8,
                 readahead: bool = True, graph_readahead: int = GRAPH_READAHEAD, access: str = "faults"):
        if local <= 0:
            raise FarMemError(f"a local memory budget of {local} bytes leaves no page resident",
                              hint="give --local a size such as 64M or 1G")
        self.pid, self.store, self.local, self.sock, self.ns = pid, store, local, sock, ns
        self.resume, self.interval, self.soft_dirty, self.graph = resume, interval, soft_dirty, graph
        self.prefetch = prefetch
        self.readahead = readahead
        self.graph_readahead = max(0, graph_readahead)
        self.lock = threading.Lock()
        self.ref: set[int] = set()                  # clock reference bits
        self.registered: dict[tuple[int, int], str] = {}
        self.hand = 0
        self.stop = threading.Event()
        self.evict_on = threading.Event()
        self.evict_on.set()
        self.stats = dict(pages_evicted=0, pages_sent=0, pages_dropped_clean=0, pages_zero=0, bytes_sent=0,
                          resident_bytes=0, remote_bytes=0, heap_bytes=0, evict_rounds=0,
                          resident_after_evict_bytes=0, resident_after_evict_max_bytes=0,
                          resident_scan_max_bytes=0, evicted_leaked=0, evicted_cold=0, pages_not_dropped=0,
                          pages_deleted=0, evict_batches=0, evict_seconds=0.0,
                          evict_read_seconds=0.0, evict_put_seconds=0.0, evict_drop_seconds=0.0,
                          leaked_pages_resident=0, leaked_faulted_back=0)
        self.blocked: str | None = None             # the evictor's reason to wait (the loop has its own)
        self.warnings: list[str] = []
        self.state = "starting"
        self.started = time.time()
        self._last_faults = (time.monotonic(), 0)
        self.faults_per_s = 0.0
        self._state_at = 0.0
        self._recent_seen = 0
        self._cleared_at = 0.0
        self._held = False              # the resident heap has been under the budget once
        self._scan_regs: set[tuple[int, int]] = set()
        self._scan_old = 0
        self.features = 0
        #: pages holding only leaked objects (sorted), from the last heap graph (:mod:`.guide`)
        self.leaked_pages = np.zeros(0, np.uint64)
        self.guide = None
        self.round_lock = threading.Lock()
        #: held by whoever ptrace-stops the program (the graph's snapshot, a relocation pass)
        self.ptrace_lock = threading.Lock()
        #: hot/cold segregation of objects (``--relocate``, :mod:`.segregate`), or None
        self.segregator = None
        #: $MTFARMEM_DEBUG=PATH: a log of evictions, written to PATH.PID at the end
        self.debug = deque(maxlen=2_000_000) if os.environ.get("MTFARMEM_DEBUG") else None
        self.ranges = HeapRanges(pid)
        self.threads: list[threading.Thread] = []
        self.helper: Helper | None = None
        self.uffd: U.Uffd | None = None
        self.server: FaultServer | None = None
        self.kick_fd = -1
        self.serve_thread: threading.Thread | None = None
        self.helper_sp = 0
        self._told_ranges: list[tuple[int, int]] = []
        self.access_kind = access
        self.access = None                          # opened once the heap ranges are known
        self.damon_reclaimed = False                # this start stopped a dead pager's DAMON context

    # ---- set-up ------------------------------------------------------
    def key(self, page: int) -> str:
        return f"{self.ns}:{page:x}"

    def connect(self, *, timeout: float = 10.0, alive=lambda: True, before_helper=None) -> None:
        """Take the target's userfaultfd, start serving it, then connect to the helper.

        :param before_helper: called once the fault loop serves and before the helper is
            spoken to (a relocation pass a dead pager left has the helper's thread stopped)"""
        deadline = time.monotonic() + timeout
        fdnum, features = wait_uffd(self.pid, timeout=timeout, alive=alive)
        # the loop's state before the descriptor: a store the loop cannot speak stops us here
        self.kick_fd = make_kick_fd()
        self.uffd = U.Uffd(U.take_fd(self.pid, fdnum))
        # the prefetch cache: an eighth of the budget, at most 4 MiB (pager memory, in the status)
        cache_pages = 0 if self.prefetch <= 0 else int(min(1024, max(64, self.local // PAGE // 8)))
        self.server = FaultServer(self.uffd.fd, self.kick_fd, self.store, self.ns, local=self.local,
                                  resume=self.resume, pf_neigh=max(0, self.prefetch), cache_pages=cache_pages)
        self.features = features
        self.server.set_features(features)
        self.server.set_readahead(self.readahead)
        self.server.set_graph_readahead(self.graph_readahead)
        try:
            self.pagemap = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY)
        except (ProcessLookupError, FileNotFoundError):
            raise NoSuchProcess(f"process {self.pid} exited before the pager connected") from None
        self.serve_thread = threading.Thread(target=self._serve_loop, name="mtfm-fault", daemon=True)
        self.serve_thread.start()
        if self.resume:
            # faults a dead pager had read but not served wait for a wake-up that never comes:
            # wake every registered range, the threads fault again and this pager reads them
            for lo, hi in registered_vmas(self.pid):
                self.uffd.wake(lo, hi - lo)
        if before_helper is not None:
            before_helper()
        self.helper = Helper(self.sock, timeout=max(1.0, deadline - time.monotonic()), alive=alive)
        rc, err, _, _, last = self.helper.call(OP_HELLO)
        foreign: list[tuple[int, int]] = []
        if self.resume and last:
            # the drop a killed pager had asked for: its REMOVE events are not the program's
            try:
                n = struct.unpack("<Q", K.vm_read(self.pid, last, 8))[0]
                raw = K.vm_read(self.pid, last + 8, min(n, MAX_RANGES) * _RANGE.size) if n else b""
                foreign = [(a << 12, n << 12) for a, n in _RANGE.iter_unpack(raw)]
            except MappedTraceError as e:
                self.warnings.append(f"the helper's last drop could not be read: {e.message}")
        self.server.hello(foreign)
        self.server.evict_setup(self.pid, self.pagemap, self.helper.s.fileno())
        self.helper_sp = _helper_sp(self.pid)


    def start(self) -> None:
        """Start evicting (the fault loop runs from :meth:`connect` on)."""
        # a DAMON context a killed pager left goes first, whatever this pager's --access (:mod:`.access`)
        self.damon_reclaimed = reclaim_stale(state_dir())
        self.state = "running"
        self.write_state()
        for fn, name in ((self._evict_loop, "mtfm-evict"), (self._state_loop, "mtfm-state")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        if self.graph:
            from .guide import Guide
            self.guide = Guide(self)
            self.guide.start()

    def _state_loop(self) -> None:
        """The status file, twice a second, from a thread of its own: an eviction
        round waiting on a store that does not answer must not freeze what
        ``farmem status`` shows (the store's health, what the program waits on)."""
        while not self.stop.wait(0.5):
            try:
                self.write_state()
            except MappedTraceError as e:
                self.warnings.append(e.message)

    # ---- the fault loop (compiled) -------------------------------------------
    def _serve_loop(self) -> None:
        rc = self.server.run()
        if rc < 0:
            self.warnings.append(f"reading the userfaultfd: {os.strerror(-rc)}")

    def loop_alive(self) -> bool:
        return self.serve_thread is not None and self.serve_thread.is_alive()

    # ---- the evictor -----------------------------------------------------
    def _refresh_ranges(self) -> None:
        for lo, hi, label in self.ranges.current():
            if self.state in ("detaching", "detached"):
                return                          # detach unregisters: register nothing new
            if (lo, hi) in self.registered:
                continue
            if self.helper_sp and lo <= self.helper_sp < hi:
                # The helper's own stack, merged by the kernel with a heap mapping next to it
                # (same flags): never paged.  The helper writes its stack while it serves a
                # DROP; a stack page in that DROP's batch would wait for the DROP (seen: the
                # evictor and the helper waited on each other for good).
                with self.lock:
                    self.registered[(lo, hi)] = "refused"
                self.warnings.append(f"{label} heap {lo:#x}-{hi:#x} not paged: it holds the helper's stack")
                continue
            try:
                self.uffd.register(lo, hi - lo, U.REGISTER_MODE_MISSING | U.REGISTER_MODE_WP)
                with self.lock:
                    self.registered[(lo, hi)] = label
            except U.UffdError as e:
                if e.errno != errno.ENOMEM:     # ENOMEM: gone while we looked
                    self.warnings.append(f"{label} heap {lo:#x}-{hi:#x} not paged: {e.message}")
                    with self.lock:
                        self.registered[(lo, hi)] = "refused"
        with self.lock:
            live = {(lo, hi) for lo, hi, _ in self.ranges.current()}
            for r in [r for r in self.registered if r not in live]:
                del self.registered[r]
            regs = sorted(r for r, lab in self.registered.items() if lab != "refused")
        if regs != self._told_ranges:
            self.server.set_ranges(regs)
            self._told_ranges = regs
            if self.access is not None:
                self.access.set_ranges(regs)

    def _access_source(self):
        """The clock's access source, opened at the first round with heap ranges."""
        if self.access is None and self._told_ranges and self.state == "running":
            try:
                self.access = open_source(self.access_kind, self.pid, self._told_ranges, state_dir())
            except DamonUnavailable as e:   # asked for by name, lost since the CLI's probe
                self.access = FaultsOnly(f"DAMON unavailable: {e}")
                self.warnings.append(f"--access damon: {e}; the clock sees faults only")
        return self.access

    def _scan(self) -> tuple[np.ndarray, np.ndarray]:
        """Present pages and soft-dirty present pages of the registered ranges.

        Also sets ``self._scan_old``: how many of the present pages lie in ranges that were
        registered at the previous scan already (their pages came in through the fault loop,
        under the budget; a new range's pages were touched before it was registered)."""
        present, dirty = [], []
        with self.lock:
            regs = [r for r, lab in self.registered.items() if lab != "refused"]
        old = 0
        prev, self._scan_regs = self._scan_regs, set(regs)
        for lo, hi in sorted(regs):
            n = (hi - lo) // PAGE
            try:
                raw = os.pread(self.pagemap, n * 8, (lo // PAGE) * 8)
            except OSError:
                continue
            pm = np.frombuffer(raw, dtype=np.uint64)
            addrs = lo + np.arange(len(pm), dtype=np.uint64) * PAGE
            pres = (pm & PM_PRESENT) != 0
            present.append(addrs[pres])
            if (lo, hi) in prev:
                old += int(pres.sum())
            dirty.append(addrs[pres & ((pm & PM_SOFT_DIRTY) != 0)])
        self._scan_old = old
        if not present:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        return np.concatenate(present), np.concatenate(dirty)

    def _evict_loop(self) -> None:
        last_ranges = 0.0
        kicked = False
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                with self.round_lock:           # detach waits for a round to finish
                    if now - last_ranges >= self.interval and self.evict_on.is_set():
                        self._refresh_ranges()
                        last_ranges = now
                    if self.evict_on.is_set() and self.state not in ("detaching", "detached"):
                        if self.segregator is not None and self.segregator.due(kicked):
                            self.segregator.run_pass()      # no eviction in flight meanwhile
                        self._round(kicked)
            except (NoSuchProcess, FarMemError) as e:
                if not _exiting(self.pid):      # a program that ends mid-round is no news
                    self.warnings.append(e.message)
                break
            except MappedTraceError as e:
                self.warnings.append(e.message)
            except Exception as e:             # a bug must show in the status, not end paging silently
                self.warnings.append(f"evictor: {type(e).__name__}: {e}")
                time.sleep(self.interval)
            # the fault loop writes the eventfd when a fault waits for room
            kicked = bool(select.select([self.kick_fd], [], [], self.interval)[0])
            if kicked:
                try:
                    os.eventfd_read(self.kick_fd)
                except BlockingIOError:
                    pass

    def _faulted_since(self) -> list[int]:
        """Pages the fault loop served since the last call (at most its ring's 4096)."""
        r = self.server.read(recent=True)
        n, seen = r["recent_n"], self._recent_seen
        self._recent_seen = n
        k = min(n - seen, len(r["recent"]))
        if k <= 0:
            return []
        ring = r["recent"]
        idx = np.arange(n - k, n) % len(ring)
        return ring[idx].tolist()

    def _scan_counted(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_scan`, and the fault loop's resident estimate set from it (with the pages it
        installed while the scan ran: an estimate that forgot them let faults in over budget)."""
        before = self.server.installed()
        present, dirty = self._scan()
        self.server.set_resident_scan(len(present) * PAGE, before)
        return present, dirty

    def _round(self, kicked: bool = False) -> None:
        present, dirty = self._scan_counted()
        faulted = self._faulted_since()
        with self.lock:
            self.ref.update(faulted)
        src = self._access_source()
        if src is not None:
            # pages the access monitor saw used (reads too) get their reference bit like faulted ones
            seen = np.intersect1d(src.accessed(), present, assume_unique=False)
            with self.lock:
                self.ref.update(seen.tolist())
        if self.segregator is not None:
            self.segregator.note_faults(faulted)
        if len(self.leaked_pages) and faulted:
            # a page the program touched is not leaked, whatever the last graph said (counted: a
            # leaked page fetched back is the graph's mistake, or a leak the program still reads)
            back = np.isin(self.leaked_pages, np.asarray(faulted, np.uint64))
            self.stats["leaked_faulted_back"] += int(back.sum())
            if back.any():
                self.leaked_pages = self.leaked_pages[~back]
                self.server.set_leaked(self.leaked_pages)     # prefetch them again like any page
        if self.soft_dirty:
            with self.lock:
                self.ref.update(dirty.tolist())
            now = time.monotonic()
            if now - self._cleared_at >= CLEAR_REFS_EVERY:
                self._cleared_at = now
                try:
                    with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                        f.write("4")
                except OSError:
                    self.soft_dirty = False
        self.stats["evict_rounds"] += 1
        self._account(present)
        self.stats["leaked_pages_resident"] = int(np.isin(self.leaked_pages, present).sum())
        resident = len(present) * PAGE
        # The worst resident heap a scan saw, once paging holds, in the ranges registered at the
        # previous scan already: the pages the budget governs.  Not counted: the program's start
        # (it fills its heap before the pager registers it: counted from the first round that
        # evicted and ended under the budget on) and the pages of a mapping the program
        # touched before the pager registered it (an mmapped chunk, a new arena).
        if self._held:
            self.stats["resident_scan_max_bytes"] = max(self.stats["resident_scan_max_bytes"],
                                                        self._scan_old * PAGE)
        if resident <= self.local * HIGH_WATER and not kicked:
            return
        need = max(resident - int(self.local * LOW_WATER), 16 * PAGE) // PAGE
        victims, nleaked = self._pick(present, need)
        t0 = time.monotonic()
        i, size = 0, FIRST_BATCH
        while i < len(victims):
            if self.stop.is_set() or not self.evict_on.is_set():
                break
            batch = victims[i:i + size]
            done = self._evict(batch)
            if done < 0:                        # the store failed: the status says so
                break
            lk = max(0, min(nleaked - i, len(batch)))       # victims start with the leaked pages
            self.stats["evicted_leaked"] += min(lk, done)
            self.stats["evicted_cold"] += max(0, done - lk)
            i += len(batch)
            size = min(BATCH, size * 2)
        self.stats["evict_seconds"] += time.monotonic() - t0
        present, _ = self._scan_counted()
        self._account(present)
        self.stats["resident_after_evict_bytes"] = self.stats["resident_bytes"]
        self._held = self._held or (self.stats["pages_evicted"] > 0 and self.stats["resident_bytes"] <= self.local)
        self.stats["resident_after_evict_max_bytes"] = max(self.stats["resident_after_evict_max_bytes"],
                                                           self.stats["resident_bytes"])

    def _account(self, present: np.ndarray) -> None:
        st = self.server.stored()
        with self.lock:
            heap = sum(hi - lo for (lo, hi), lab in self.registered.items() if lab != "refused")
        self.stats["resident_bytes"] = int(len(present)) * PAGE
        self.stats["remote_bytes"] = int((~np.isin(st, present)).sum()) * PAGE if len(st) else 0
        self.stats["heap_bytes"] = heap

    def _pick(self, present: np.ndarray, need: int) -> tuple[list[int], int]:
        """Victims and how many of them (the first ones) are leaked pages.

        Pages the heap graph says hold only leaked objects go first (never touched again by a
        correct program); then the clock: from the hand on, pages without a reference bit;
        bits passed are cleared."""
        if not len(present) or need <= 0:
            return [], 0
        leaked = present[np.isin(present, self.leaked_pages)] if len(self.leaked_pages) else present[:0]
        leaked = leaked[:need]
        out = [int(p) for p in leaked]
        need -= len(out)
        if need <= 0:
            return sorted(out), len(out)
        if len(leaked):
            present = present[~np.isin(present, leaked)]
        k = int(np.searchsorted(present, np.uint64(self.hand)))
        order = np.concatenate([present[k:], present[:k]])
        with self.lock:
            refs = np.fromiter(self.ref, dtype=np.uint64, count=len(self.ref))
        hot = np.isin(order, refs)
        cold_idx = np.flatnonzero(~hot)[:need]
        chosen = order[cold_idx]
        if len(chosen) < need:          # everything referenced: second pass takes the oldest bits
            upto = len(order)
            chosen = np.concatenate([chosen, order[hot][:need - len(chosen)]])
        else:
            upto = int(cold_idx[-1]) + 1 if len(cold_idx) else 0
        passed = order[:upto][hot[:upto]]
        with self.lock:
            self.ref.difference_update(passed.tolist())
        if len(chosen):
            self.hand = int(order[upto - 1]) + PAGE if upto else self.hand
        # leaked first, each part in address order (runs for the drop)
        return out + sorted(int(p) for p in chosen), len(out)

    def _evict(self, pages: list[int]) -> int:
        """Evict ``pages`` (sorted) in the compiled batch; returns how many were dropped, or -1
        when the store failed (nothing dropped; the status says why).

        :raises FarMemError: the helper did not answer (the program exited?)"""
        with self.helper.lock:                  # the batch speaks to the helper over its socket
            r, err = self.server.evict(np.asarray(pages, np.uint64))
        st = self.stats
        st["evict_batches"] += 1
        st["pages_evicted"] += r["evicted"]
        st["pages_sent"] += r["sent"]
        st["bytes_sent"] += r["bytes_sent"]
        st["pages_dropped_clean"] += r["clean"]
        st["pages_zero"] += r["zero"]
        st["pages_deleted"] += r["deleted"]
        st["pages_not_dropped"] += r["not_dropped"]
        if self.segregator is not None and r["evicted"]:
            # known imprecision: a batch that dropped only some of its pages counts them all
            self.segregator.note_evicted(pages)
        st["evict_read_seconds"] += r["t_read"]
        st["evict_put_seconds"] += r["t_put"]
        st["evict_drop_seconds"] += r["t_drop"]
        if self.debug is not None:
            self.debug.append((time.monotonic(), "evict", len(pages), r, err))
        if err:
            if "helper" in err:
                raise FarMemError(err)
            self.blocked = f"{err} (eviction paused)"
            return -1
        if self.blocked and "eviction" in self.blocked:
            self.blocked = None
        return r["evicted"]

    # ---- status, detach, shutdown -------------------------------------------
    def snapshot(self) -> dict:
        r = self.server.read(latencies=True) if self.server else {"latencies": np.zeros(0), "blocked": "",
                                                                   "warning": ""}
        if r.get("warning"):
            self.warnings.append(r["warning"])
        loop = {k: r.get(k, 0) for k in ("faults", "zero_faults", "bytes_fetched", "faults_waited_for_room",
                                          "store_round_trips", "events_remove", "events_unmap", "events_remap",
                                          "removed_by_program", "remapped", "wp_faults", "prefetched",
                                          "prefetch_hits", "prefetch_unused", "hinted", "copy_errors",
                                          "store_errors", "faults_over_budget", "graph_prefetched", "faults_pager_own", "readahead",
                                          "graph_readahead", "leaked_not_prefetched", "forks", "forks_own",
                                          "fork_pages_restored", "fork_events_child", "fork_seconds")}
        now = time.monotonic()
        t, f = self._last_faults
        if now - t >= 1.0:
            self.faults_per_s = (loop["faults"] - f) / (now - t)
            self._last_faults = (now, loop["faults"])
        lat = r["latencies"]
        med, p99 = (float(np.median(lat) * 1e6), float(np.percentile(lat, 99) * 1e6)) if len(lat) else (None, None)
        with self.lock:
            regs = sorted((lo, hi, lab) for (lo, hi), lab in self.registered.items())
        pf = loop["prefetched"]
        guide = self.guide.describe() if self.guide else \
            {"state": "off (--no-graph)" if not self.graph else "starting"}
        return {
            "pid": self.pid, "pager_pid": os.getpid(), "state": self.state, "store": self.store.url,
            "namespace": self.ns, "sock": self.sock, "local_bytes": self.local, **self.stats, **loop,
            "fault_loop": "compiled" if self.loop_alive() else "stopped",
            "prefetch_cache_bytes": (self.server.cache_pages if self.server else 0) * PAGE,
            "prefetch_accuracy": round(loop["prefetch_hits"] / pf, 4) if pf else None,
            "faults_per_s": round(self.faults_per_s, 1), "fault_latency_median_us": med,
            "fault_latency_p99_us": p99, "store_health": self.store.health(),
            "blocked": r["blocked"] or self.blocked or None,
            "evicted_by_reason": {"leaked": self.stats["evicted_leaked"], "cold": self.stats["evicted_cold"]},
            "graph": guide,
            "access": {**(self.access.describe() if self.access else {"source": "starting", "asked": self.access_kind}),
                       "stopped_dead_pager_context": self.damon_reclaimed},
            "relocation": self.segregator.describe() if self.segregator else None,
            "ranges": [{"start": lo, "end": hi, "label": lab} for lo, hi, lab in regs],
            "warnings": self.warnings[-20:], "updated": time.time(), "started": self.started,
        }

    def write_state(self) -> None:
        self._state_at = time.monotonic()
        with write_private(state_path(self.pid)) as f:
            json.dump(self.snapshot(), f)

    def detach(self) -> None:
        """Bring every page home, unregister, release the helper's descriptor."""
        self.state = "detaching"
        self.evict_on.clear()                   # a round in progress stops after its batch...
        with self.round_lock:                   # ...and releases this when it has
            pass
        left = 0
        holes = np.zeros(0, np.uint64)
        if self.resume:                         # pages a dead pager sent: ask the store for every hole
            hs = [np.arange(lo, hi, PAGE, dtype=np.uint64) for lo, hi in registered_vmas(self.pid)]
            holes = np.concatenate(hs) if hs else holes
        for attempt in range(2000):             # EAGAIN while the program maps or unmaps: again
            present, _ = self._scan()
            # the holes stay wanted until present (a resumed pager's table does not name them)
            home = np.union1d(self.server.stored(), holes)
            home = home[~np.isin(home, present)]
            holes = holes[~np.isin(holes, present)]
            if not len(home):
                break
            left = self.server.serve_now(home.tolist())
            if not left:
                break
            time.sleep(0.005)
        if left:
            r = self.server.read()
            raise FarMemError(f"detach: {left} pages of process {self.pid} could not be brought home "
                              f"({r['blocked'] or 'the kernel kept answering EAGAIN'}); it stays paged",
                              hint="run 'mappedtrace farmem detach' again")
        with self.round_lock:                   # a refresh that began before "detaching" has ended
            pass
        # the program runs on meanwhile: an mremap of a registered range moves its
        # registration, so look again until nothing is registered (bounded)
        for _ in range(200):
            vmas = registered_vmas(self.pid)
            if not vmas:
                break
            for lo, hi in vmas:
                try:
                    self.uffd.unregister(lo, hi - lo)
                except U.UffdError as e:
                    self.warnings.append(e.message)
            time.sleep(0.005)
        self.helper.call(OP_RELEASE)
        self.state = "detached"
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the threads, forget this process's pages in the store, close the descriptors."""
        self.stop.set()
        if self.debug is not None:
            with open(os.environ["MTFARMEM_DEBUG"] + f".{self.pid}", "w") as f:
                for rec in list(self.debug):
                    f.write(repr(rec) + "\n")
        if self.guide:
            self.guide.stop()
        if self.access is not None:
            self.access.close()             # the DAMON context stops with its pager
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        if self.server:
            self.server.stop()
            if self.serve_thread:
                self.serve_thread.join(timeout=10)
        if self.state != "detached":
            self.state = "stopped"
        try:
            self.write_state()
        except MappedTraceError:
            pass
        try:
            self.store.delete_prefix(self.ns + ":")
        except StoreError as e:
            self.warnings.append(e.message)
        if self.server and not self.loop_alive() and not any(t.is_alive() for t in self.threads):
            # (a loop or an evictor in a batch that did not stop keeps the state: no use after free)
            self.server.destroy()
        if self.uffd:
            self.uffd.close()
        if self.helper:
            self.helper.close()
        if self.kick_fd >= 0:
            os.close(self.kick_fd)
            self.kick_fd = -1
        try:
            os.close(self.pagemap)
        except (OSError, AttributeError):
            pass
