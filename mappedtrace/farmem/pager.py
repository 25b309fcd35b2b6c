"""The pager: keeps a process's resident heap under a budget, pages the rest to a store.

Threads (all in the pager process; the program only runs the runtime helper):

* **fault thread** — reads the userfaultfd: missing-page faults are served with
  ``UFFDIO_COPY`` from the store (or zeros for a page never evicted),
  write-protect faults on pages being evicted are held until the drop is
  done, and the program's own ``madvise(DONTNEED)``, ``munmap`` and
  ``mremap`` (events REMOVE, UNMAP, REMAP) update which store copies are
  still the page's content.
* **evictor** — every ``interval`` s: finds new heap mappings and registers
  them (missing + write-protect mode), reads ``/proc/PID/pagemap`` (present
  and soft-dirty bits), and when the resident heap is over the budget picks
  cold pages by a clock and evicts them in batches: write-protect, read with
  ``process_vm_readv``, send what changed to the store (pipelined), then ask
  the helper to drop them.  Writes the state file that ``farmem status``
  reads.

Dirty tracking: a page is write-protected (uffd-wp) *before* it is read, so
no write can slip in between the read and the drop; its content is hashed
(BLAKE2b, 8 bytes) and compared with the hash of the copy the store holds; a
page whose store copy is current is dropped without being sent again.
Soft-dirty bits (``/proc/PID/clear_refs`` 4) only feed the clock as "written
recently"; they decide nothing about correctness.

The clock: a page served by a fault or seen soft-dirty gets its reference
bit; the hand sweeps the resident heap pages in address order, clears the
bits it passes and evicts pages whose bit is clear.  Known imprecision: reads
of resident pages leave no trace visible from outside (pagemap has no
accessed bit), so a page only read is seen as cold until it faults once.
"""
from __future__ import annotations

import errno
import hashlib
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
from .ranges import HeapRanges
from .stores import Store, StoreError

PAGE = 4096
PM_PRESENT = np.uint64(1 << 63)
PM_SOFT_DIRTY = np.uint64(1 << 55)
BATCH = 256                  # pages per eviction batch (1 MiB)
HIGH_WATER = 0.95            # evict when the resident heap passes this share of the budget,
LOW_WATER = 0.90             # down to this share (faults find room without waiting)
_ZERO = bytes(PAGE)
_ZERO_HASH = hashlib.blake2b(_ZERO, digest_size=8).digest()

# the helper's wire format (runtime/mtfarmem.c)
_REQ = struct.Struct("<II")
_RANGE = struct.Struct("<QQ")
_REPLY = struct.Struct("<iiQQQ")
OP_HELLO, OP_DROP, OP_PING, OP_RELEASE = 1, 2, 3, 4
MAX_RANGES = 4096


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
        msg = _REQ.pack(op, len(ranges)) + b"".join(_RANGE.pack(a, n) for a, n in ranges)
        with self.lock:
            try:
                self.s.sendall(msg)
                buf = b""
                while len(buf) < _REPLY.size:
                    part = self.s.recv(_REPLY.size - len(buf))
                    if not part:
                        raise FarMemError("the far-memory helper closed its socket (the program exited?)")
                    buf += part
            except OSError as e:
                raise FarMemError(f"the far-memory helper: {e.strerror or e}") from None
        return _REPLY.unpack(buf)

    def close(self) -> None:
        self.s.close()


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page addresses → ``(start, length)`` of contiguous runs."""
    out: list[tuple[int, int]] = []
    for p in pages:
        if out and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + PAGE)
        else:
            out.append((p, PAGE))
    return out


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


class Pager:
    """Far memory for process ``pid`` whose helper listens on ``sock``.

    :param local: the resident heap budget in bytes
    :param ns: prefix of this process's keys in the store
    :param resume: a pager took over from one that died: pages it does not know
        may be in the store (asked on their first fault)
    """

    def __init__(self, pid: int, store: Store, *, local: int, sock: str, ns: str, resume: bool = False,
                 interval: float = 0.1, soft_dirty: bool = True, graph: bool = False):
        if local <= 0:
            raise FarMemError(f"a local memory budget of {local} bytes leaves no page resident",
                              hint="give --local a size such as 64M or 1G")
        self.pid, self.store, self.local, self.sock, self.ns = pid, store, local, sock, ns
        self.resume, self.interval, self.soft_dirty, self.graph = resume, interval, soft_dirty, graph
        self.lock = threading.Lock()
        self.stored: dict[int, bytes] = {}          # page → hash of the store's copy
        self.ref: set[int] = set()                  # clock reference bits
        self.evicting: set[int] = set()
        self.deferred: set[int] = set()             # write faults held during an eviction
        self.dropping: set[tuple[int, int]] = set() # our own DROP runs (their REMOVE events are ours)
        self.registered: dict[tuple[int, int], str] = {}
        self.hand = 0
        self.stop = threading.Event()
        self.evict_on = threading.Event()
        self.evict_on.set()
        self.lat = deque(maxlen=20000)
        self.stats = dict(faults=0, zero_faults=0, pages_evicted=0, pages_sent=0, pages_dropped_clean=0,
                          pages_zero=0, bytes_sent=0, bytes_fetched=0, removed_by_program=0, remapped=0,
                          resident_bytes=0, remote_bytes=0, heap_bytes=0, evict_rounds=0,
                          resident_after_evict_bytes=0, resident_after_evict_max_bytes=0,
                          faults_waited_for_room=0, events_remove=0, events_unmap=0, events_remap=0)
        self.blocked: str | None = None
        self.warnings: list[str] = []
        self.state = "starting"
        self.started = time.time()
        self._last_faults = (time.monotonic(), 0)
        self.faults_per_s = 0.0
        self._state_at = 0.0
        self.cycle = 0
        self.resident_est = 0           # bytes: the last scan, plus faults served, less drops since
        self.kick = threading.Event()   # a fault waits for room: evict now
        self.round_lock = threading.Lock()
        #: $MTFARMEM_DEBUG=PATH: a log of evictions, serves and events, written to PATH.PID at the end
        self.debug = deque(maxlen=2_000_000) if os.environ.get("MTFARMEM_DEBUG") else None
        self.hello_done = threading.Event()
        self.foreign_drops: list[tuple[int, int]] = []
        self.pending_removes: list[tuple[int, int]] = []
        self.ranges = HeapRanges(pid)
        self.threads: list[threading.Thread] = []
        self.helper: Helper | None = None
        self.uffd: U.Uffd | None = None

    # ---- set-up ------------------------------------------------------
    def key(self, page: int) -> str:
        return f"{self.ns}:{page:x}"

    def connect(self, *, timeout: float = 10.0, alive=lambda: True) -> None:
        """Take the target's userfaultfd, start serving it, then connect to the helper."""
        deadline = time.monotonic() + timeout
        while (found := find_uffd(self.pid)) is None:
            if time.monotonic() > deadline or not alive():
                raise FarMemError(f"process {self.pid} has no far-memory helper (no userfaultfd)",
                                  hint="start it with 'mappedtrace farmem run'; a static binary, one that "
                                       "clears LD_PRELOAD, or a kernel without userfaultfd cannot be paged")
            time.sleep(0.01)
        fdnum, features = found
        missing = [n for bit, n in U.NEEDED_FEATURES.items() if not features & bit]
        if missing:
            raise FarMemError(f"this kernel's userfaultfd lacks {', '.join(missing)}",
                              hint="far memory needs Linux 5.7 or newer (anonymous write-protect)")
        self.uffd = U.Uffd(U.take_fd(self.pid, fdnum))
        self.pagemap = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY)
        t = threading.Thread(target=self._fault_loop, name="mtfm-fault", daemon=True)
        t.start()
        self.threads.append(t)
        if self.resume:
            # faults a dead pager had read but not served wait for a wake-up that never comes:
            # wake every registered range, the threads fault again and this pager reads them
            for lo, hi in registered_vmas(self.pid):
                self.uffd.wake(lo, hi - lo)
        self.helper = Helper(self.sock, timeout=max(1.0, deadline - time.monotonic()), alive=alive)
        rc, err, _, _, last = self.helper.call(OP_HELLO)
        if self.resume and last:
            # the drop a killed pager had asked for: its REMOVE events are not the program's
            try:
                n = struct.unpack("<Q", K.vm_read(self.pid, last, 8))[0]
                raw = K.vm_read(self.pid, last + 8, min(n, MAX_RANGES) * _RANGE.size) if n else b""
                self.foreign_drops = [r for r in _RANGE.iter_unpack(raw)]
            except MappedTraceError as e:
                self.warnings.append(f"the helper's last drop could not be read: {e.message}")
        self.hello_done.set()

    def start(self) -> None:
        """Start evicting (the fault thread runs from :meth:`connect` on)."""
        self.state = "running"
        self.write_state()
        for fn, name in ((self._evict_loop, "mtfm-evict"), (self._state_loop, "mtfm-state")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def _state_loop(self) -> None:
        """The status file, twice a second, from a thread of its own: an eviction
        round waiting on a store that does not answer must not freeze what
        ``farmem status`` shows (the store's health, what the program waits on)."""
        while not self.stop.wait(0.5):
            try:
                self.write_state()
            except MappedTraceError as e:
                self.warnings.append(e.message)

    # ---- the fault thread ----------------------------------------------
    def _fault_loop(self) -> None:
        fd = self.uffd.fd
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        retry: list[int] = []
        while not self.stop.is_set():
            if self.pending_removes and self.hello_done.is_set():
                for a, b in self.pending_removes:
                    self._on_remove(a, b, False)
                self.pending_removes = []
            self.cycle += 1         # everything read so far is handled (see _evict)
            if not poller.poll(2 if retry else 100):
                if retry:
                    retry = self._serve(retry)
                continue
            try:
                data = os.read(fd, U.MSG.size * 512)
            except BlockingIOError:
                continue
            except OSError as e:
                self.warnings.append(f"reading the userfaultfd: {e.strerror}")
                break
            t0 = time.perf_counter()
            missing = retry
            for ev, _, _, _, a, b, c in U.MSG.iter_unpack(data):
                if ev == U.EVENT_PAGEFAULT:
                    page = b & ~(PAGE - 1)
                    if a & U.PAGEFAULT_FLAG_WP:
                        self._on_wp(page)
                    else:
                        missing.append((page, t0))
                elif ev in (U.EVENT_REMOVE, U.EVENT_UNMAP):
                    self.stats["events_unmap" if ev == U.EVENT_UNMAP else "events_remove"] += 1
                    if missing:            # faults read before the event come first
                        missing = self._serve(missing, budget=False)
                    self._on_remove(a, b, ev == U.EVENT_UNMAP)
                elif ev == U.EVENT_REMAP:
                    self.stats["events_remap"] += 1
                    if missing:
                        missing = self._serve(missing, budget=False)
                    self._on_remap(a, b, c)
            retry = self._serve(missing) if missing else []

    def _on_wp(self, page: int) -> None:
        with self.lock:
            if page in self.evicting:
                self.deferred.add(page)      # woken after the drop; it refaults as missing
                return
        self.uffd.writeprotect(page, PAGE, False)

    def _fetch(self, keys: list[str]) -> list[bytes | None]:
        """get_many that waits for the store rather than hand the program a wrong page."""
        delay = 0.05
        while True:
            try:
                got = self.store.get_many(keys)
                if self.blocked:
                    self.blocked = None
                return got
            except StoreError as e:
                self.blocked = f"{e.message} (the program waits on its faults)"
                if self.stop.is_set():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _serve(self, faults: list[tuple[int, float]], *, budget: bool = True) -> list[tuple[int, float]]:
        """Serve missing faults ``(page, time read)``; returns those to try again: EAGAIN
        from the kernel, or no room under the budget yet (the faulting thread waits while
        the evictor makes room: that is what keeps the resident heap under --local)."""
        first: dict[int, float] = {}
        for p, t in faults:
            first.setdefault(p, t)
        pages = list(first)
        later: list[int] = []
        if budget:
            with self.lock:
                room = max(0, (self.local - self.resident_est) // PAGE)
            if room < len(pages):
                pages, later = pages[:room], pages[room:]
                self.kick.set()
                self.stats["faults_waited_for_room"] += len(later)
        with self.lock:
            known = [(p, self.stored.get(p)) for p in pages]
        ask = [p for p, h in known if (h is not None and h != _ZERO_HASH) or (h is None and self.resume)]
        got = dict(zip(ask, self._fetch([self.key(p) for p in ask]))) if ask else {}
        retry = later
        zero = served = 0
        for p, h in known:
            data = got.get(p)
            if data is None:
                if h is not None and h != _ZERO_HASH:
                    # the store lost a page it acknowledged: never hand out zeros instead
                    self.blocked = f"store {self.store.url} has no copy of page {p:#x}; the program waits"
                    retry.append(p)
                    continue
                data = _ZERO
                zero += 1
            elif len(data) != PAGE:
                self.blocked = f"store {self.store.url}: page {p:#x} has {len(data)} bytes, not {PAGE}"
                retry.append(p)
                continue
            rc = self.uffd.copy(p, U.ffi.from_buffer(data), PAGE)
            if self.debug is not None:
                self.debug.append((time.monotonic(), "serve", p, "zero" if data is _ZERO else "store", h, rc))
            if rc == errno.EEXIST:
                self.uffd.wake(p, PAGE)
            elif rc == errno.EAGAIN:
                retry.append(p)
                continue
            elif rc in (errno.ENOENT, errno.ESRCH, errno.EFAULT, errno.EINVAL):
                self.uffd.wake(p, PAGE)     # the range went away: the thread retries and sees why
            elif rc:
                self.warnings.append(f"UFFDIO_COPY {p:#x}: {os.strerror(rc)}")
            served += rc == 0
            if data is not _ZERO:
                self.stats["bytes_fetched"] += PAGE
            self.lat.append(time.perf_counter() - first[p])
        n = len(pages) - (len(retry) - len(later))
        self.stats["faults"] += n
        self.stats["zero_faults"] += zero
        with self.lock:
            self.resident_est += served * PAGE
            self.ref.update(pages)
        return [(p, first[p]) for p in retry]

    def _on_remove(self, start: int, end: int, unmap: bool) -> None:
        if self.debug is not None:
            self.debug.append((time.monotonic(), "remove", start, end, unmap, list(self.dropping)))
        with self.lock:
            # our own drop: madvise reports one REMOVE per VMA, so a run that crosses a VMA
            # boundary comes back in pieces; each lies inside a run in flight
            if not unmap and any(a <= start and end <= a + n for a, n in self.dropping):
                return
            if not unmap and self.resume:
                if not self.hello_done.is_set():       # who dropped it is known after HELLO
                    self.pending_removes.append((start, end))
                    return
                if any(a <= start and end <= a + n for a, n in self.foreign_drops):
                    return
            if (end - start) // PAGE < len(self.stored):
                gone = [p for p in range(start, end, PAGE) if p in self.stored]
            else:
                gone = [p for p in self.stored if start <= p < end]
            keys = [self.key(p) for p in gone if self.stored.pop(p) != _ZERO_HASH]
            self.ref.difference_update(gone)
            self.stats["removed_by_program"] += (end - start) // PAGE
        if unmap:
            with self.lock:
                for r in [r for r in self.registered if r[0] < end and start < r[1]]:
                    del self.registered[r]
        if keys:
            try:
                self.store.delete(keys)
            except StoreError as e:
                self.warnings.append(f"{e.message} (stale pages stay in the store)")

    def _on_remap(self, old: int, new: int, length: int) -> None:
        if self.debug is not None:
            self.debug.append((time.monotonic(), "remap", old, new, length))
        # the program's mremap moved registered pages: move their store copies with them
        with self.lock:
            moved = [(p, self.stored.pop(p)) for p in range(old, old + length, PAGE) if p in self.stored]
        data_keys = [p for p, h in moved if h != _ZERO_HASH]
        got = self._fetch([self.key(p) for p in data_keys]) if data_keys else []
        puts = [(self.key(p - old + new), d) for p, d in zip(data_keys, got) if d is not None]
        try:
            self.store.put_many(puts)
            self.store.delete([self.key(p) for p in data_keys])
        except StoreError as e:
            self.blocked = e.message
        with self.lock:
            for p, h in moved:
                self.stored[p - old + new] = h
            self.stats["remapped"] += len(moved)

    # ---- the evictor -----------------------------------------------------
    def _refresh_ranges(self) -> None:
        for lo, hi, label in self.ranges.current():
            if self.state in ("detaching", "detached"):
                return                          # detach unregisters: register nothing new
            if (lo, hi) in self.registered:
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

    def _scan(self) -> tuple[np.ndarray, np.ndarray]:
        """Present pages and soft-dirty present pages of the registered ranges."""
        present, dirty = [], []
        with self.lock:
            regs = [r for r, lab in self.registered.items() if lab != "refused"]
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
            dirty.append(addrs[pres & ((pm & PM_SOFT_DIRTY) != 0)])
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
                        self._round(kicked)
            except (NoSuchProcess, FarMemError) as e:
                self.warnings.append(e.message)
                break
            except MappedTraceError as e:
                self.warnings.append(e.message)
            kicked = self.kick.wait(self.interval)
            self.kick.clear()

    def _round(self, kicked: bool = False) -> None:
        present, dirty = self._scan()
        if self.soft_dirty:
            with self.lock:
                self.ref.update(dirty.tolist())
            try:
                with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                    f.write("4")
            except OSError:
                self.soft_dirty = False
        self.stats["evict_rounds"] += 1
        self._account(present)
        resident = len(present) * PAGE
        with self.lock:
            self.resident_est = resident
        if resident <= self.local * HIGH_WATER and not kicked:
            return
        need = max(resident - int(self.local * LOW_WATER), 16 * PAGE) // PAGE
        victims = self._pick(present, need)
        for i in range(0, len(victims), BATCH):
            if self.stop.is_set() or not self.evict_on.is_set():
                break
            self._evict(victims[i:i + BATCH])
            if time.monotonic() - self._state_at > 0.5:
                self.write_state()
        present, _ = self._scan()
        self._account(present)
        with self.lock:
            self.resident_est = self.stats["resident_bytes"]
        self.stats["resident_after_evict_bytes"] = self.stats["resident_bytes"]
        self.stats["resident_after_evict_max_bytes"] = max(self.stats["resident_after_evict_max_bytes"],
                                                           self.stats["resident_bytes"])

    def _account(self, present: np.ndarray) -> None:
        with self.lock:
            st = np.fromiter(self.stored.keys(), dtype=np.uint64, count=len(self.stored))
            heap = sum(hi - lo for (lo, hi), lab in self.registered.items() if lab != "refused")
        self.stats["resident_bytes"] = int(len(present)) * PAGE
        self.stats["remote_bytes"] = int((~np.isin(st, present)).sum()) * PAGE if len(st) else 0
        self.stats["heap_bytes"] = heap

    def _pick(self, present: np.ndarray, need: int) -> list[int]:
        """The clock: from the hand on, pages without a reference bit; bits passed are cleared."""
        if not len(present) or need <= 0:
            return []
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
        return sorted(int(p) for p in chosen)

    def _evict(self, pages: list[int]) -> None:
        with self.lock:
            self.evicting.update(pages)
        try:
            runs = _runs(pages)
            ok_runs = []
            for a, n in runs:
                if self.uffd.writeprotect(a, n, True) == 0:
                    ok_runs.append((a, n))
            buf = bytearray(sum(n for _, n in ok_runs))
            good: list[tuple[int, int, int]] = []        # (addr, len, offset in buf)
            off = 0
            for a, n in ok_runs:
                if K.vm_read_into(self.pid, a, n, memoryview(buf)[off:off + n]) == n:
                    good.append((a, n, off))
                else:
                    self.uffd.writeprotect(a, n, False)
                off += n
            puts, hashes, zero_old = [], {}, []
            mv = memoryview(buf)
            with self.lock:
                old = {p: self.stored.get(p) for p in pages}
            for a, n, o in good:
                for i in range(0, n, PAGE):
                    p, page = a + i, mv[o + i:o + i + PAGE]
                    h = hashlib.blake2b(page, digest_size=8).digest()
                    hashes[p] = h
                    if h == _ZERO_HASH:
                        self.stats["pages_zero"] += 1
                        if old[p] not in (None, _ZERO_HASH):
                            zero_old.append(self.key(p))
                    elif old[p] != h:
                        puts.append((self.key(p), bytes(page)))
            try:
                self.store.put_many(puts)
                if zero_old:
                    self.store.delete(zero_old)
            except StoreError as e:
                self.blocked = f"{e.message} (eviction paused)"
                for a, n, _ in good:
                    self.uffd.writeprotect(a, n, False)
                return
            if self.blocked and "eviction" in self.blocked:
                self.blocked = None
            drop = [(a, n) for a, n, _ in good]
            if self.debug is not None:
                self.debug.append((time.monotonic(), "evict", drop, len(puts)))
            with self.lock:
                self.stored.update(hashes)      # before the drop: a fault right after it finds the copy
                self.dropping.update(drop)
            try:
                for i in range(0, len(drop), MAX_RANGES):
                    rc, err, _, _, _ = self.helper.call(OP_DROP, drop[i:i + MAX_RANGES])
                    if rc:
                        self.warnings.append(f"the helper could not drop pages: {os.strerror(err)}")
                # the helper's madvise returned once the fault thread had *read* its REMOVE
                # events, not handled them: wait for the fault thread to finish the read it
                # was in, so it still finds these runs in self.dropping
                c = self.cycle
                fault_thread = self.threads[0]
                while self.cycle <= c and not self.stop.is_set() and fault_thread.is_alive():
                    time.sleep(0.0002)
            finally:
                with self.lock:
                    self.dropping.difference_update(drop)
            with self.lock:
                self.resident_est -= len(hashes) * PAGE
            self.stats["pages_evicted"] += len(hashes)
            self.stats["pages_sent"] += len(puts)
            self.stats["bytes_sent"] += len(puts) * PAGE
            self.stats["pages_dropped_clean"] += len(hashes) - len(puts) - sum(
                1 for h in hashes.values() if h == _ZERO_HASH)
        finally:
            with self.lock:
                self.evicting.difference_update(pages)
                woken = [p for p in self.deferred if p in set(pages)]
                self.deferred.difference_update(woken)
            for p in woken:
                self.uffd.writeprotect(p, PAGE, False)   # no-op when dropped; then wakes the writer
                self.uffd.wake(p, PAGE)

    # ---- status, detach, shutdown -------------------------------------------
    def latency_us(self) -> tuple[float | None, float | None]:
        lat = np.fromiter(self.lat, dtype=float, count=len(self.lat)) if self.lat else None
        if lat is None:
            return None, None
        return float(np.median(lat) * 1e6), float(np.percentile(lat, 99) * 1e6)

    def snapshot(self) -> dict:
        now = time.monotonic()
        t, f = self._last_faults
        if now - t >= 1.0:
            self.faults_per_s = (self.stats["faults"] - f) / (now - t)
            self._last_faults = (now, self.stats["faults"])
        med, p99 = self.latency_us()
        with self.lock:
            regs = sorted((lo, hi, lab) for (lo, hi), lab in self.registered.items())
        return {
            "pid": self.pid, "pager_pid": os.getpid(), "state": self.state, "store": self.store.url,
            "namespace": self.ns, "sock": self.sock, "local_bytes": self.local, **self.stats,
            "faults_per_s": round(self.faults_per_s, 1), "fault_latency_median_us": med,
            "fault_latency_p99_us": p99, "store_health": self.store.health(), "blocked": self.blocked,
            "graph": "off (not built yet: leaked-first and prefetch are follow-ups)",
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
        present, _ = self._scan()
        pres = set(present.tolist())
        with self.lock:
            home = sorted(p for p, h in self.stored.items() if p not in pres)
        if self.resume:                         # pages a dead pager sent: ask the store for every hole
            for lo, hi in registered_vmas(self.pid):
                home += [p for p in range(lo, hi, PAGE) if p not in pres and p not in self.stored]
        for i in range(0, len(home), BATCH):
            t = time.perf_counter()
            left = self._serve([(p, t) for p in home[i:i + BATCH]], budget=False)
            for _ in range(2000):               # EAGAIN while the program maps or unmaps: again
                if not left:
                    break
                time.sleep(0.005)
                left = self._serve(left, budget=False)
            if left:
                raise FarMemError(f"detach: {len(left)} pages of process {self.pid} could not be brought home "
                                  f"({self.blocked or 'the kernel kept answering EAGAIN'}); it stays paged",
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
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
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
        if self.uffd:
            self.uffd.close()
        if self.helper:
            self.helper.close()
        try:
            os.close(self.pagemap)
        except (OSError, AttributeError):
            pass
