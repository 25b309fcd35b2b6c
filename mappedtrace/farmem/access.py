"""Access sources for the pager's clock: what the program touched, reads included.

The fault loop and the soft-dirty bits tell the clock about faults and writes
only; a page the program only *reads* leaves no trace in ``/proc/PID/pagemap``
(it has no accessed bit).  The kernel's DAMON access monitor samples the
page-table accessed bits of a process and reports per-region access counts;
:class:`DamonAccess` runs one DAMON context for the paged process through the
sysfs interface (``Documentation/admin-guide/mm/damon/usage.rst``) and hands
the clock the pages of the regions it saw accessed.

The DAMON sysfs interface is one namespace for the whole machine: taking a
kdamond means writing ``kdamonds/nr_kdamonds``, which the kernel refuses
(``EBUSY``) while any kdamond runs and which *deletes the configuration of
every kdamond* when none runs.  So this module writes there only when nobody
else uses it: ``nr_kdamonds`` is 0, or every kdamond there is one a pager of
ours started (recorded in ``damon.json`` in the pager's state directory) and
whose pager is dead.  Everything else is read-only probing, and the reason it
cannot be used goes to the status (``access``) and the clock falls back to
faults only.

A pager killed with its context running: the context is bounded twice.
DAMON stops a kdamond by itself once none of its targets is alive (the
target process exited: ``damon_va_target_valid``), and the next pager to
start on this machine (any process) finds the record of a dead pager and
stops and removes that kdamond before anything else.  Between the two (the
target lives on, no pager starts) the kdamond keeps sampling the target:
at most :data:`MAX_REGIONS` page-table checks every :data:`SAMPLE_US`.

Monitoring attributes (DAMON's own defaults are 5 ms / 100 ms / 1 s, 10–1000 regions):

* ``fvaddr`` operations with the paged heap ranges as the regions: DAMON
  monitors exactly those ranges (``vaddr`` would re-derive three big regions
  from the whole address space every update interval);
* sampling every 5 ms, aggregating over 100 ms: one aggregation per eviction
  round (the pager's default ``--interval`` is 0.1 s), so a region's count
  (0–20) is how many of the last 20 samples found it accessed;
* 1 000–4 000 regions: DAMON splits and merges regions by access pattern, so
  hot and cold parts of a heap end in different regions; a 1 GiB heap gets
  regions of 256 KiB–1 MiB, not single pages (DAMON's precision is a
  region's, never a page's).  The cost is one accessed-bit check per region
  per sample: at most 800 000 checks a second in the kdamond thread
  (unmeasured here, see below).

Known limits, written where they arise: a region counts as accessed when any
of its samples in the last aggregation found it accessed (nr_accesses ≥ 1), so
the cold pages of a region DAMON has not yet split from a hot neighbour keep
their reference bit; DAMON's counts lag by one aggregation interval.
"""
from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import threading
import time
from contextlib import contextmanager

import numpy as np

PAGE = 4096
DAMON_ROOT = "/sys/kernel/mm/damon/admin"
SAMPLE_US = 5_000
AGGR_US = 100_000
UPDATE_US = 1_000_000
MIN_REGIONS = 1_000
MAX_REGIONS = 4_000
RECORD = "damon.json"


class DamonUnavailable(Exception):
    """DAMON cannot be used for this pager; the message says why (one line)."""


# ---- read-only probing -----------------------------------------------------
def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(f"{value}\n")


def _kernel_config(option: str) -> bool | None:
    """Whether the running kernel's config sets ``option`` (None: no config to read)."""
    rel = os.uname().release
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{rel}", open)):
        try:
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith(option + "=") and line.split("=", 1)[1].strip() in ("y", "m"):
                        return True
            return False
        except OSError:
            continue
    return None


def _pid_start(pid: int) -> int | None:
    """The start time of ``pid`` (``/proc/PID/stat`` field 22), None if it is gone: with the pid,
    it tells a live pager from a new process that got a dead pager's pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _kdamonds(root: str) -> list[dict]:
    """What the sysfs interface shows of each kdamond (read-only)."""
    base = os.path.join(root, "kdamonds")
    n = int(_read(os.path.join(base, "nr_kdamonds")))
    out = []
    for i in range(min(n, 64)):                 # a count read from the kernel is still a bound
        d = os.path.join(base, str(i))
        k = {"index": i, "state": _read(os.path.join(d, "state"))}
        try:
            k["pid"] = int(_read(os.path.join(d, "pid")))
            k["operations"] = _read(os.path.join(d, "contexts", "0", "operations"))
            k["avail_operations"] = _read(os.path.join(d, "contexts", "0", "avail_operations")).split()
        except (OSError, ValueError):
            pass
        out.append(k)
    return out


def _own_record(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, RECORD)) as f:
            r = json.load(f)
        return r if isinstance(r, dict) else None
    except (OSError, ValueError):
        return None


def _owner_alive(rec: dict) -> bool:
    pid, start = rec.get("pager_pid"), rec.get("pager_start")
    return isinstance(pid, int) and _pid_start(pid) == start


def probe(state_dir: str, root: str = DAMON_ROOT) -> str | None:
    """Why DAMON cannot monitor a process for a pager here, or None when it can.

    Reads only; the answer for a machine whose DAMON sysfs another monitor holds
    names that monitor."""
    if not os.path.isdir(os.path.join(root, "kdamonds")):
        return "this kernel has no DAMON sysfs interface (CONFIG_DAMON_SYSFS)"
    try:
        kds = _kdamonds(root)
    except (OSError, ValueError) as e:
        return f"DAMON's sysfs interface cannot be read: {e}"
    why = []            # every reason, not the first: a user fixing one learns of the next now
    if _kernel_config("CONFIG_DAMON_VADDR") is False:
        why.append("this kernel's DAMON has no virtual-address monitoring (CONFIG_DAMON_VADDR is not set)")
    else:
        for k in kds:
            if "avail_operations" in k and "fvaddr" not in k["avail_operations"]:
                why.append(f"this kernel's DAMON offers only {' '.join(k['avail_operations']) or 'no'} "
                           f"operations (no fvaddr: CONFIG_DAMON_VADDR)")
                break
    rec = _own_record(state_dir)
    ours = rec is not None and not _owner_alive(rec) and len(kds) == 1 and \
        kds[0].get("pid") in (rec.get("kdamond_pid"), -1, None)
    if kds and not ours:
        k = kds[0]
        who = f"kdamond {k['index']}: {k['state']}, {k.get('operations', '?')}" + \
              (f", pid {k['pid']}" if k.get("pid", -1) > 0 else "")
        if rec is not None and _owner_alive(rec):
            why.append(f"DAMON is in use by pager {rec['pager_pid']} (for process {rec.get('target_pid')})")
        else:
            why.append(f"DAMON's sysfs interface is held by another monitor ({who}); taking a kdamond "
                       f"would stop or delete it, so it is left alone")
    return "; ".join(why) or None


# ---- the access sources ----------------------------------------------------
class FaultsOnly:
    """No source beyond the pager's own faults and soft-dirty bits."""

    name = "faults"

    def __init__(self, reason: str = "asked for (--access faults)"):
        self.reason = reason

    def accessed(self) -> np.ndarray:
        return np.zeros(0, np.uint64)

    def set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        pass

    def describe(self) -> dict:
        return {"source": self.name, "why": self.reason}

    def close(self) -> None:
        pass


def _teardown(state_dir: str, root: str) -> None:
    """Stop kdamond 0 and remove it (nr_kdamonds 0), then the record.  Only for a kdamond the
    record names as ours (callers check, under the lock)."""
    base = os.path.join(root, "kdamonds")
    try:
        if int(_read(os.path.join(base, "nr_kdamonds"))) >= 1:
            if _read(os.path.join(base, "0", "state")) == "on":
                _write(os.path.join(base, "0", "state"), "off")
            _write(os.path.join(base, "nr_kdamonds"), 0)
    except (OSError, ValueError):
        pass
    try:
        os.unlink(os.path.join(state_dir, RECORD))
    except FileNotFoundError:
        pass


def reclaim_stale(state_dir: str, root: str = DAMON_ROOT) -> bool:
    """Stop the DAMON context a dead pager left running (every pager start calls this, whatever
    its ``--access``).  Returns whether there was one.  Touches nothing that is not recorded as
    a dead pager's."""
    if _own_record(state_dir) is None:
        return False
    with _locked(state_dir):
        rec = _own_record(state_dir)
        if rec is None or _owner_alive(rec):
            return False
        try:
            kds = _kdamonds(root)
        except (OSError, ValueError):
            kds = []
        if len(kds) == 1 and kds[0].get("pid") in (rec.get("kdamond_pid"), -1, None):
            _teardown(state_dir, root)
            return True
        # the machine's DAMON changed hands since (not our kdamond any more): only forget the record
        try:
            os.unlink(os.path.join(state_dir, RECORD))
        except FileNotFoundError:
            pass
        return False


@contextmanager
def _locked(state_dir: str):
    """One pager at a time decides who holds DAMON (an advisory lock in the state directory)."""
    fd = os.open(os.path.join(state_dir, "damon.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class DamonAccess:
    """A DAMON context (``fvaddr``, one target: ``pid``) whose accessed regions feed the clock.

    :param pid: the paged process
    :param ranges: the paged heap ranges ``[(lo, hi)]`` (DAMON monitors these only)
    :param state_dir: where the ownership record lives (the pager's state directory)
    :raises DamonUnavailable: DAMON cannot be used here (the message says why)
    """

    name = "damon"

    def __init__(self, pid: int, ranges: list[tuple[int, int]], state_dir: str, root: str = DAMON_ROOT):
        self.pid, self.state_dir, self.root = pid, state_dir, root
        self.kd = os.path.join(root, "kdamonds", "0")
        self.ctx = os.path.join(self.kd, "contexts", "0")
        self._lock = threading.Lock()
        self._pages = np.zeros(0, np.uint64)     # pages of the regions accessed in the last aggregation
        self._stop = threading.Event()
        self.stats = {"updates": 0, "empty_updates": 0, "regions": 0, "accessed_bytes": 0, "errors": 0}
        self.error: str | None = None
        self._ranges = sorted(r for r in ranges if r[1] > r[0])
        if not self._ranges:
            raise DamonUnavailable("no heap range to monitor yet")
        with _locked(state_dir):
            why = probe(state_dir, root)
            if why:
                raise DamonUnavailable(why)
            self._reclaim()
            try:
                self._start()
            except OSError as e:
                self._teardown()
                raise DamonUnavailable(f"starting a DAMON context for process {pid}: "
                                       f"{e.strerror or e} ({getattr(e, 'filename', '')})") from None
        self._thread = threading.Thread(target=self._poll, name="mtfm-damon", daemon=True)
        self._thread.start()

    # -- set-up and tear-down (under the lock) --
    def _reclaim(self) -> None:
        """Stop and remove a kdamond a dead pager of ours left (the probe said it is ours)."""
        if _own_record(self.state_dir) is not None:
            self._teardown()

    def _teardown(self) -> None:
        _teardown(self.state_dir, self.root)

    def _write_regions(self) -> None:
        regs = os.path.join(self.ctx, "targets", "0", "regions")
        _write(os.path.join(regs, "nr_regions"), len(self._ranges))
        for i, (lo, hi) in enumerate(self._ranges):
            _write(os.path.join(regs, str(i), "start"), lo)
            _write(os.path.join(regs, str(i), "end"), hi)

    def _start(self) -> None:
        base = os.path.join(self.root, "kdamonds")
        _write(os.path.join(base, "nr_kdamonds"), 1)
        _write(os.path.join(self.kd, "contexts", "nr_contexts"), 1)
        _write(os.path.join(self.ctx, "operations"), "fvaddr")
        attrs = os.path.join(self.ctx, "monitoring_attrs")
        _write(os.path.join(attrs, "intervals", "sample_us"), SAMPLE_US)
        _write(os.path.join(attrs, "intervals", "aggr_us"), AGGR_US)
        _write(os.path.join(attrs, "intervals", "update_us"), UPDATE_US)
        _write(os.path.join(attrs, "nr_regions", "min"), MIN_REGIONS)
        _write(os.path.join(attrs, "nr_regions", "max"), MAX_REGIONS)
        _write(os.path.join(self.ctx, "targets", "nr_targets"), 1)
        _write(os.path.join(self.ctx, "targets", "0", "pid_target"), self.pid)
        self._write_regions()
        # a "stat" scheme matching every region: it changes nothing, and its tried_regions
        # directory is how the regions reach us.  The access pattern is written out (6.12's
        # defaults are 0..0, which match no region: seen in the VM of benchmarks/farmem/damon_vm)
        _write(os.path.join(self.ctx, "schemes", "nr_schemes"), 1)
        scheme = os.path.join(self.ctx, "schemes", "0")
        _write(os.path.join(scheme, "action"), "stat")
        for what, hi in (("sz", (1 << 64) - 1), ("nr_accesses", (1 << 32) - 1), ("age", (1 << 32) - 1)):
            _write(os.path.join(scheme, "access_pattern", what, "min"), 0)
            _write(os.path.join(scheme, "access_pattern", what, "max"), hi)
        _write(os.path.join(self.kd, "state"), "on")
        rec = {"pager_pid": os.getpid(), "pager_start": _pid_start(os.getpid()), "target_pid": self.pid,
               "kdamond_pid": int(_read(os.path.join(self.kd, "pid"))), "started": time.time()}
        tmp = os.path.join(self.state_dir, RECORD + ".tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.replace(tmp, os.path.join(self.state_dir, RECORD))

    # -- monitoring --
    def _poll(self) -> None:
        """Ask DAMON for the regions once an aggregation, keep the accessed ones' pages."""
        tried = os.path.join(self.ctx, "schemes", "0", "tried_regions")
        while not self._stop.wait(AGGR_US / 1e6):
            try:
                # blocks until the scheme's next application (at most one aggregation interval)
                _write(os.path.join(self.kd, "state"), "update_schemes_tried_regions")
                pages = []
                nreg = 0
                for name in os.listdir(tried)[:2 * MAX_REGIONS + 8]:
                    if not name.isdigit():
                        continue
                    d = os.path.join(tried, name)
                    nreg += 1
                    if int(_read(os.path.join(d, "nr_accesses"))) < 1:
                        continue
                    lo, hi = int(_read(os.path.join(d, "start"))), int(_read(os.path.join(d, "end")))
                    if hi > lo and hi - lo <= 1 << 40:
                        pages.append(np.arange(lo & ~(PAGE - 1), hi, PAGE, dtype=np.uint64))
                self.stats["updates"] += 1
                if nreg == 0:
                    # a monitored range always has a region: none listed is an update that returned
                    # before the scheme was applied (seen on 6.12 in a VM); keep the last picture
                    self.stats["empty_updates"] += 1
                    continue
                got = np.concatenate(pages) if pages else np.zeros(0, np.uint64)
                with self._lock:
                    self._pages = np.unique(got)
                self.stats["regions"] = nreg
                self.stats["accessed_bytes"] = int(len(got)) * PAGE
            except (OSError, ValueError) as e:
                self.stats["errors"] += 1
                if isinstance(e, OSError) and e.errno in (errno.EINVAL, errno.ESRCH, errno.ENOENT):
                    # the kdamond stopped (its target exited) or its directory went away
                    self.error = f"DAMON stopped: {e.strerror or e}"
                    return
                time.sleep(AGGR_US / 1e6)

    def accessed(self) -> np.ndarray:
        """Pages of the regions DAMON saw accessed in its last aggregation read (sorted).

        A state, not an event: every round gets the latest picture until the next update, so a
        round between two slow updates still sees the hot set as hot."""
        with self._lock:
            return self._pages

    def set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """The paged ranges changed: monitor the new ones (committed to the running context)."""
        ranges = sorted(r for r in ranges if r[1] > r[0])
        if not ranges or ranges == self._ranges:
            return
        self._ranges = ranges
        try:
            self._write_regions()
            _write(os.path.join(self.kd, "state"), "commit")
        except OSError as e:
            self.stats["errors"] += 1
            self.error = f"DAMON regions not updated: {e.strerror or e}"

    def describe(self) -> dict:
        d = {"source": self.name, "sample_us": SAMPLE_US, "aggr_us": AGGR_US,
             "min_regions": MIN_REGIONS, "max_regions": MAX_REGIONS, **self.stats}
        if self.error:
            d["error"] = self.error
        return d

    def close(self) -> None:
        """Stop the context and give the kdamond back (nr_kdamonds 0)."""
        self._stop.set()
        self._thread.join(timeout=2 * AGGR_US / 1e6 + 1)
        with _locked(self.state_dir):
            rec = _own_record(self.state_dir)
            if rec is None or rec.get("pager_pid") == os.getpid():
                self._teardown()


def open_source(kind: str, pid: int, ranges: list[tuple[int, int]], state_dir: str):
    """The access source ``kind`` asks for: ``damon``, ``faults`` or ``auto`` (DAMON where it can
    be used, faults otherwise; the source's :meth:`describe` says which and why).

    :raises DamonUnavailable: ``damon`` was asked for and cannot be used here
    """
    reclaim_stale(state_dir)
    if kind == "faults":
        return FaultsOnly()
    try:
        return DamonAccess(pid, ranges, state_dir)
    except DamonUnavailable as e:
        if kind == "damon":
            raise
        return FaultsOnly(f"DAMON unavailable: {e}")
