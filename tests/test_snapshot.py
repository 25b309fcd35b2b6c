"""Snapshots of running processes: stop, settle, capture (stop-copy, fork), core files.

Real processes built at test time from samples/snap_*.c, real ptrace, real
gdb/lldb.  Each target prints a checksum over its own data at the end; a
snapshot must not change it.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mappedtrace.errors import BadData, MappedTraceError, NoSuchProcess
from mappedtrace.target.base import SETTLED, UNINSTRUMENTED, UNSETTLED
from mappedtrace.target.capture import snapshot_process
from mappedtrace.target.core import open_core, write_core
from mappedtrace.target.live import process_state

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
MT = str(Path(sys.executable).parent / "mappedtrace")
CC = shutil.which("clang-22") or shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="x86-64 Linux only")


def _build(src: str, out: Path) -> str:
    if CC is None:
        pytest.skip("no C compiler")
    subprocess.run([CC, "-O2", "-g", "-pthread", "-o", str(out), str(SAMPLES / src)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("snapbins")
    return {"heap": _build("snap_heap.c", d / "snap_heap"),
            "threads": _build("snap_threads.c", d / "snap_threads")}


class Proc:
    """A started target that prints 'ready PID' first; always killed at the end."""

    def __init__(self, argv: list[str], stdin=None):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=stdin, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready "), line
        self.pid = self.p.pid

    def finish(self, timeout: float = 60) -> str:
        out, _ = self.p.communicate(timeout=timeout)
        assert self.p.returncode == 0, (self.p.returncode, out)
        return out

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(argv, **kw) -> Proc:
        p = Proc(argv, **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        p.kill()


def _reference(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return r.stdout.split("\n", 1)[1]       # drop "ready PID"


def _run_mt(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([MT, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("mappedtrace: error:")]
    assert len(lines) == 1, r.stderr


# --- the target is unharmed -------------------------------------------------

@pytest.mark.parametrize("mode", ["stop-copy", "fork"])
def test_threads_unharmed_by_repeated_snapshots(bins, procs, mode):
    argv = [bins["threads"], "4", "40000", "64"]
    want = _reference(argv)
    p = procs(argv)
    n = 0
    for _ in range(8):
        if p.p.poll() is not None:
            break
        try:
            ct = snapshot_process(p.pid, mode)
        except NoSuchProcess:
            break
        try:
            assert ct.meta["mode"] == mode and ct.meta["pause_ns"] > 0
            assert ct.meta["captured_bytes"] > 0
            # every thread's stack top is in the copy
            for t in ct.threads:
                assert len(ct.read(t.sp, 64)) == 64
            n += 1
        finally:
            ct.close()
        time.sleep(0.02)
    assert n >= 2, "the target ended before two snapshots"
    assert p.finish() == want


@pytest.mark.parametrize("mode", ["stop-copy", "fork"])
def test_heap_unharmed_and_memory_equal(bins, procs, mode):
    """The copy equals the live memory: the checksum the target computes over its heap
    is what we compute over the captured heap with the same algorithm."""
    p = procs([bins["heap"], "8", "serve"], stdin=subprocess.PIPE)
    p.p.stdin.write("c\n")        # let it allocate its stdin buffer and block in read()
    p.p.stdin.flush()
    p.p.stdout.readline()
    ct = snapshot_process(p.pid, mode)
    try:
        heap = [m for m in ct.mappings if m.path == "[heap]"]
        assert heap and ct.piece_at(heap[0].start).data is not None
        data = ct.read(heap[0].start, heap[0].size)
        live = open(f"/proc/{p.pid}/mem", "rb")
        live.seek(heap[0].start)
        assert live.read(heap[0].size) == data     # the target did not run in between
        live.close()
    finally:
        ct.close()
    p.p.stdin.write("w\nc\nq\n")
    p.p.stdin.flush()
    out = p.finish().split()
    assert len(out) == 2
    ref = subprocess.run([bins["heap"], "8", "serve"], input="w\nc\nq\n", capture_output=True,
                         text=True, timeout=60).stdout.split()
    assert out[-1] == ref[-1]


def test_group_stopped_process_stays_stopped(bins, procs):
    want = _reference([bins["threads"], "2", "40000", "64"])
    p = procs([bins["threads"], "2", "40000", "64"])
    os.kill(p.pid, signal.SIGSTOP)
    for _ in range(200):
        if process_state(p.pid) == "T":
            break
        time.sleep(0.005)
    for mode in ("stop-copy", "fork"):
        ct = snapshot_process(p.pid, mode)
        ct.close()
        assert ct.meta["was_stopped"] is True
        time.sleep(0.05)
        assert process_state(p.pid) == "T", f"{mode}: the stopped process was resumed"
    os.kill(p.pid, signal.SIGCONT)
    assert p.finish() == want


# --- 8 threads ---------------------------------------------------------------

def test_eight_threads_all_captured(bins, procs, tmp_path):
    p = procs([bins["threads"], "8", "0", "64"], stdin=subprocess.PIPE)
    time.sleep(0.05)
    tids = {int(t) for t in os.listdir(f"/proc/{p.pid}/task")}
    core = tmp_path / "eight.core"
    r = _run_mt("snapshot", str(p.pid), "-o", str(core), "--json")
    assert r.returncode == 0, r.stderr
    import json
    d = json.loads(r.stdout)
    got = {t["tid"] for t in d["threads"]}
    assert tids <= got | {t for t in tids if not os.path.exists(f"/proc/{p.pid}/task/{t}")}
    assert len(got) >= 11            # main + sleeper + reader + 8 workers
    for t in d["threads"]:
        assert t["settle"] in (SETTLED, UNSETTLED, UNINSTRUMENTED)
    assert os.stat(core).st_mode & 0o777 == 0o600
    c = open_core(str(core))
    try:
        assert {t.tid for t in c.threads} == got
        assert c.meta["mode"] == "stop-copy"
    finally:
        c.close()
    p.p.stdin.close()
    p.p.wait(timeout=30)
    assert p.p.returncode == 0


# --- core files ----------------------------------------------------------------

@pytest.fixture
def core_of_threads(bins, procs, tmp_path):
    p = procs([bins["threads"], "3", "0", "64"], stdin=subprocess.PIPE)
    time.sleep(0.1)
    ct = snapshot_process(p.pid, "fork")
    path = str(tmp_path / "t.core")
    write_core(ct, path)
    yield ct, path, bins["threads"]
    ct.close()


def test_core_roundtrip(core_of_threads):
    ct, path, _ = core_of_threads
    assert os.stat(path).st_mode & 0o777 == 0o600
    c = open_core(path)
    try:
        assert [t.tid for t in sorted(c.threads, key=lambda t: t.tid)] == sorted(t.tid for t in ct.threads)
        for t in ct.threads:
            u = c.thread(t.tid)
            # a live thread keeps the kernel's XSAVE layout; the core holds Intel's (for gdb)
            from mappedtrace.target import xsave
            assert u.regs == t.regs and u.fpregs == t.fpregs and u.xstate == xsave.to_standard(t.xstate)[0]
            assert u.settle == t.settle and u.settle_steps == t.settle_steps
            assert c.read(t.sp, 512) == ct.read(t.sp, 512)
        assert c.auxv == ct.auxv and c.exe == ct.exe
        assert [(m.start, m.end, m.perms, m.path) for m in c.mappings] == \
               [(m.start, m.end, m.perms, m.path) for m in ct.mappings]
        for m in ct.mappings:
            if m.readable and not m.path.startswith("[vv") and m.path != "[vsyscall]":
                n = min(m.size, 1 << 16)
                assert c.read(m.start, n) == ct.read(m.start, n), m
        assert c.meta["mode"] == "fork" and c.meta["pause_ns"] == ct.meta["pause_ns"]
        assert any(b["build_id"] for b in c.meta["binaries"])
    finally:
        c.close()


def _gdb_regs(out: str) -> dict[int, int]:
    """LWP → rip from gdb's 'thread apply all info registers rip'."""
    res, lwp = {}, None
    for line in out.splitlines():
        m = re.search(r"\(LWP (\d+)\)\)?:?$", line.strip()) or re.match(r"Thread \d+ .*LWP (\d+)", line)
        if m:
            lwp = int(m.group(1))
        m = re.match(r"rip\s+(0x[0-9a-f]+)", line)
        if m and lwp is not None:
            res[lwp] = int(m.group(1), 16)
    return res


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_gdb_opens_core(core_of_threads):
    ct, path, exe = core_of_threads
    r = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info threads", "-ex", "thread apply all bt",
                        "-ex", "thread apply all info registers rip", exe, path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lwps = {int(x) for x in re.findall(r"LWP (\d+)", r.stdout)}
    assert lwps == {t.tid for t in ct.threads}
    assert _gdb_regs(r.stdout) == {t.tid: t.pc for t in ct.threads}
    # the backtraces go through libc into the program's own functions
    for fn in ("sleeper", "reader", "main"):
        assert re.search(rf"in {fn} \(", r.stdout), (fn, r.stdout[-3000:])


@pytest.mark.skipif(shutil.which("lldb-22") is None, reason="lldb-22 not installed")
def test_lldb_opens_core(core_of_threads):
    ct, path, exe = core_of_threads
    r = subprocess.run(["lldb-22", "--batch", "--no-lldbinit", "-c", path, exe, "-o", "thread list",
                        "-o", "bt all"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tids = {int(x) for x in re.findall(r"tid = (\d+)", r.stdout)}
    assert tids == {t.tid for t in ct.threads}
    for t in ct.threads:
        assert re.search(rf"tid = {t.tid}, {t.pc:#018x}", r.stdout), (t.tid, hex(t.pc))
    for fn in ("sleeper", "reader", "main"):
        assert f"`{fn}" in r.stdout, fn


def _corrupt_variants(raw: bytes, size: int) -> list[tuple[str, list[tuple[int, bytes]] | int]]:
    """Named corruptions: a list of (offset, new bytes) patches, or an int: truncate there."""
    e_phoff = struct.unpack_from("<Q", raw, 0x20)[0]
    note_off = struct.unpack_from("<Q", raw, e_phoff + 8)[0]
    out: list = [("empty", 0), ("short", 40), ("magic", [(3, b"G")]), ("32-bit", [(4, b"\x01")]),
                 ("exec", [(16, b"\x02\x00")]), ("machine", [(18, b"\x03\x00")]),
                 ("phentsize", [(0x36, b"\x10\x00")]), ("phnum", [(0x38, b"\xff\xff")]),
                 ("truncated-phdrs", e_phoff + 30), ("truncated-data", size // 2),
                 ("note-size", [(note_off, struct.pack("<I", 0x7FFFFFFF))]),
                 ("prstatus-size", [(note_off + 4, struct.pack("<I", 12))])]
    js = raw.find(b'{"format": "mappedtrace-snapshot"')
    assert js > 0
    out.append(("json", [(js, b"#")]))
    v = raw.find(b'"version": 1', js)
    out.append(("version", [(v + 11, b"9")]))
    return out


def test_bad_core_files(core_of_threads, tmp_path):
    _, path, _ = core_of_threads
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(1 << 20)          # headers and notes are at the start
    work = tmp_path / "work.core"
    shutil.copyfile(path, work)

    def patched(patches):
        with open(work, "r+b") as f:
            old = []
            for off, b in patches:
                f.seek(off)
                old.append((off, f.read(len(b))))
                f.seek(off)
                f.write(b)
        return old

    for name, how in _corrupt_variants(raw, size):
        if isinstance(how, int):
            bad = tmp_path / f"bad-{name}.core"
            with open(path, "rb") as src, open(bad, "wb") as dst:
                dst.write(src.read(how))
            restore = None
        else:
            bad, restore = work, patched(how)
        try:
            with pytest.raises(MappedTraceError) as ei:
                open_core(str(bad)).close()
        finally:
            if restore:
                patched(restore)
        msg = ei.value.message
        assert "\n" not in msg and str(bad) in msg, (name, msg)
        if name != "empty":
            assert isinstance(ei.value, BadData), (name, msg)
    # random byte flips in the headers and notes: BadData or a usable file, never a crash
    rng = random.Random(4)
    limit = min(len(raw), 64 + 56 * 4 + 6000)
    for _ in range(200):
        restore = patched([(rng.randrange(0, limit), bytes([rng.randrange(256)]))
                           for _ in range(rng.randint(1, 8))])
        try:
            c = open_core(str(work))
        except MappedTraceError:
            continue
        else:
            for t in c.threads:
                try:
                    c.read(t.sp, 16)
                except MappedTraceError:
                    pass
            c.close()
        finally:
            patched(restore[::-1])
    c = open_core(str(work))
    assert c.threads
    c.close()


# --- bad input -----------------------------------------------------------------

def test_nonexistent_pid(tmp_path):
    r = _run_mt("snapshot", "4194303", "-o", str(tmp_path / "x.core"))
    assert r.returncode != 0
    _no_traceback(r)
    assert "no process" in r.stderr
    assert not (tmp_path / "x.core").exists()


def test_zombie_pid(tmp_path):
    z = subprocess.Popen(["true"])
    for _ in range(400):
        if process_state(z.pid) == "Z":
            break
        time.sleep(0.005)
    try:
        r = _run_mt("snapshot", str(z.pid), "-o", str(tmp_path / "z.core"))
        assert r.returncode != 0
        _no_traceback(r)
        assert "zombie" in r.stderr
    finally:
        z.wait()


def test_no_permission(bins, procs, tmp_path):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    p = procs([bins["heap"], "1", "serve"], stdin=subprocess.PIPE)
    out = tmp_path / "perm"
    out.mkdir()
    os.chmod(out, 0o777)
    r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", MT, "snapshot",
                        str(p.pid), "-o", str(out / "p.core")], capture_output=True, text=True, timeout=60)
    if "setpriv" in r.stderr and "mappedtrace" not in r.stderr:
        pytest.skip(f"setpriv failed: {r.stderr.strip()}")
    assert r.returncode != 0
    _no_traceback(r)
    assert "permi" in r.stderr.lower()
    assert process_state(p.pid) in ("S", "R")
    p.p.stdin.write("q\n")
    p.p.stdin.flush()
    p.finish()


def test_process_exits_mid_capture(bins, tmp_path):
    """A target that ends while we snapshot it in a loop: each attempt either
    succeeds or fails with a one-line error, never a traceback or a hang."""
    ok = err = 0
    for i in range(4):
        p = subprocess.Popen([bins["threads"], "2", str(20 + 40 * i), "32"], stdout=subprocess.DEVNULL)
        try:
            for _ in range(30):
                r = _run_mt("snapshot", str(p.pid), "-o", str(tmp_path / "e.core"),
                            "--mode", "fork" if i % 2 else "stop-copy")
                if r.returncode == 0:
                    ok += 1
                else:
                    _no_traceback(r)
                    err += 1
                    break
        finally:
            p.kill()
            p.wait()
    assert err >= 1


def test_bad_core_path_is_one_line(tmp_path, bins, procs):
    p = procs([bins["heap"], "1", "serve"], stdin=subprocess.PIPE)
    r = _run_mt("snapshot", str(p.pid), "-o", str(tmp_path / "no" / "such" / "dir.core"))
    assert r.returncode != 0
    _no_traceback(r)
    assert process_state(p.pid) in ("S", "R")


# --- the tracer dies -----------------------------------------------------------

def _live_copies(exe: str, keep: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == keep:
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") == exe and process_state(int(d)) not in ("Z", ""):
                out.append(int(d))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("mode", ["stop-copy", "fork"])
def test_tracer_killed_midway(bins, procs, tmp_path, mode):
    # enough rounds (~14 s) that the target outlives the calibration snapshot on a loaded machine
    argv = [bins["threads"], "4", "200000", "64"]
    want = _reference(argv)
    p = procs(argv)
    rng = random.Random(hash(mode) & 0xFFFF)
    # calibrate: how long a whole snapshot command takes here; kill within that span
    t0 = time.monotonic()
    r = _run_mt("snapshot", str(p.pid), "-o", str(tmp_path / "cal.core"), "--mode", mode)
    assert r.returncode == 0, r.stderr
    span = time.monotonic() - t0
    for i in range(8):
        if p.p.poll() is not None:
            break
        sp = subprocess.Popen([MT, "snapshot", str(p.pid), "-o", str(tmp_path / f"k{i}.core"), "--mode", mode],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4 * span, span))     # start-up first, then stop/settle/capture/write
        sp.send_signal(signal.SIGKILL)
        sp.wait()
        time.sleep(0.02)
        st = process_state(p.pid)
        assert st not in ("T", "t"), f"target left stopped ({st}) after the tracer was killed"
    assert p.finish(timeout=120) == want
    assert _live_copies(bins["threads"], p.pid) == []


# --- signals that arrive during a snapshot -------------------------------------

def test_signals_during_snapshots_are_delivered_once(tmp_path):
    exe = _build("snap_signals.c", tmp_path / "snap_signals")
    p = subprocess.Popen([exe], stdout=subprocess.PIPE, text=True)
    stop = False
    import select
    import threading

    def snapshots():
        n = 0
        while not stop and n < 200:
            try:
                snapshot_process(p.pid, "fork" if n % 2 else "stop-copy").close()
            except MappedTraceError:
                return
            n += 1
    try:
        assert p.stdout.readline().startswith("ready")
        th = threading.Thread(target=snapshots)
        th.start()
        try:
            for i in range(1, 31):
                os.kill(p.pid, signal.SIGUSR1)
                ready, _, _ = select.select([p.stdout], [], [], 10)
                assert ready, f"signal {i} was lost"
                assert p.stdout.readline().strip() == str(i)
                time.sleep(random.uniform(0, 0.01))
        finally:
            stop = True
            th.join(timeout=60)
        time.sleep(0.1)
        ready, _, _ = select.select([p.stdout], [], [], 0)
        assert not ready, "a signal was delivered twice"
    finally:
        p.kill()
        p.wait()


# --- threads that come and go during the stop -----------------------------------

@pytest.mark.parametrize("mode", ["stop-copy", "fork"])
def test_thread_churn(tmp_path, mode):
    exe = _build("snap_churn.c", tmp_path / "snap_churn")
    argv = [exe, "3000", "4"]
    want = _reference(argv)
    p = Proc(argv)
    try:
        n = 0
        for _ in range(30):
            if p.p.poll() is not None:
                break
            try:
                ct = snapshot_process(p.pid, mode)
            except NoSuchProcess:
                break
            try:
                assert ct.threads and all(t.regs["rip"] for t in ct.threads)
                assert p.pid in {t.tid for t in ct.threads}
                n += 1
            finally:
                ct.close()
        assert n >= 3
        assert p.finish() == want
    finally:
        p.kill()


def test_fork_mode_refused_under_seccomp(tmp_path):
    exe = _build("snap_seccomp.c", tmp_path / "snap_seccomp")
    p = Proc([exe], stdin=subprocess.PIPE)
    try:
        ct = snapshot_process(p.pid, "fork")
        ct.close()
        assert ct.meta["mode"] == "stop-copy"
        assert any("seccomp" in w for w in ct.warnings)
        p.p.stdin.write("x\n")
        p.p.stdin.flush()
        assert p.finish().strip() == "bye"
    finally:
        p.kill()


def test_proc_mem_fallback_reads_the_same(bins, procs):
    """The /proc/PID/mem path of the copier gives the bytes process_vm_readv gives."""
    import mmap as _mmap
    from mappedtrace.target import _kernel as k
    from mappedtrace.target.capture import _Reader
    from mappedtrace.target.live import attach
    p = procs([bins["heap"], "2", "serve"], stdin=subprocess.PIPE)
    with attach(p.pid) as t:
        heap = next(m for m in t.mappings if m.path == "[heap]")
        a = _mmap.mmap(-1, heap.size)
        b = _mmap.mmap(-1, heap.size)
        assert k.vm_readv(p.pid, [(heap.start, heap.size, a, 0)]) == heap.size
        r = _Reader(p.pid)
        r.fd = os.open(f"/proc/{p.pid}/mem", os.O_RDONLY)
        try:
            assert r([(heap.start, heap.size, b, 0)]) == heap.size
            assert r([(0x1000, 4096, b, 0)]) == 0           # unmapped: a short read, no exception
        finally:
            r.close()
        assert a[:] == b[:]


def _dirty_kib(pid: int, start: int) -> tuple[int, int]:
    """(Shared_Dirty, Private_Dirty) in KiB of the mapping of ``pid`` that starts at ``start``."""
    shared = private = None
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) == start
            elif inside and head == "Shared_Dirty:":
                shared = int(line.split()[1])
            elif inside and head == "Private_Dirty:":
                private = int(line.split()[1])
    assert shared is not None and private is not None, f"no mapping at {start:#x} in process {pid}"
    return shared, private


def test_fork_capture_leaves_the_child_pages_shared(bins, procs):
    """Reading the fork child copies nothing inside it: its heap pages are still the
    ones it shares with the target.  (process_vm_readv pins what it reads, and pinning
    unshares a page still shared after a fork: the child used to get a private copy of
    the whole heap, 3–5 s/GiB, issue #13.)"""
    p = procs([bins["heap"], "32", "serve"], stdin=subprocess.PIPE)
    ct = snapshot_process(p.pid, "fork", hold_child=True)
    try:
        child = ct.meta["child_pid"]
        heap = next(m for m in ct.mappings if m.path == "[heap]")
        assert ct.piece_at(heap.start).data is not None
        shared, private = _dirty_kib(child, heap.start)
        assert shared >= 30 << 10, (shared, private)       # the 32 MiB heap, still shared
        assert private < 1 << 10, (shared, private)        # not copied into the child
    finally:
        ct.close()


def test_stop_copy_leaves_a_forked_targets_pages_shared(tmp_path):
    """A target whose heap is shared copy-on-write with a fork child of its own
    is read through /proc/PID/mem by stop-copy: its pages stay shared (read with
    process_vm_readv, every page read was copied inside the target first)."""
    exe = tmp_path / "forked_heap"
    if CC is None:
        pytest.skip("this host has no C compiler to build the target")
    subprocess.run([CC, "-O2", "-o", str(exe), str(ROOT / "tests" / "capture" / "forked_heap.c")], check=True)
    p = subprocess.Popen([str(exe), "32"], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        _, pid, child = p.stdout.readline().split()
        heap = None
        ct = snapshot_process(int(pid), "stop-copy")
        try:
            heap = next(m for m in ct.mappings if m.path == "[heap]")
            assert ct.piece_at(heap.start).data is not None
        finally:
            ct.close()
        shared, private = _dirty_kib(int(pid), heap.start)
        assert shared >= 24 << 10, (shared, private)       # still shared with the child
        p.stdin.write("q\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_core_refuses_a_rebuilt_binary(bins, procs, tmp_path):
    """Read-only bytes left out of a snapshot come from the mapped file — only if its
    build-id is the one recorded in the snapshot."""
    from mappedtrace.target.core import build_id
    exe = tmp_path / "snap_heap_copy"
    shutil.copy(bins["heap"], exe)
    if not build_id(str(exe)):
        pytest.skip("the compiler wrote no build-id")
    p = procs([str(exe), "1", "serve"], stdin=subprocess.PIPE)
    ct = snapshot_process(p.pid, "stop-copy")
    path = str(tmp_path / "r.core")
    write_core(ct, path)
    ct.close()
    text = next(m for m in ct.mappings if m.path == str(exe) and m.executable)
    c = open_core(path)
    assert len(c.read(text.start, 16)) == 16          # from the file, same build
    c.close()
    p.kill()
    subprocess.run([CC, "-O1", "-o", str(exe), str(SAMPLES / "snap_heap.c")], check=True)
    c = open_core(path)
    try:
        assert any("build-id" in w for w in c.warnings)
        with pytest.raises(MappedTraceError, match="build-id"):
            c.read(text.start, 16)
    finally:
        c.close()


def test_load_bias_of_pie_and_non_pie(tmp_path):
    """settle adds the load bias to record PCs: AT_ENTRY − e_entry, 0 for a non-PIE binary."""
    from mappedtrace.target.settle import load_bias
    gcc = shutil.which("gcc") or CC
    for flags, pie in ((["-fPIE", "-pie"], True), (["-fno-pie", "-no-pie"], False)):
        exe = tmp_path / f"heap_{'pie' if pie else 'nopie'}"
        subprocess.run([gcc, "-O2", *flags, "-o", str(exe), str(SAMPLES / "snap_heap.c")], check=True)
        p = Proc([str(exe), "1", "serve"], stdin=subprocess.PIPE)
        try:
            ct = snapshot_process(p.pid, "stop-copy", settle=False)
            ct.close()
            first = min(m.start for m in ct.mappings if m.path == str(exe))
            if pie:
                assert load_bias(ct) == first != 0
            else:
                assert load_bias(ct) == 0 and first == 0x400000
        finally:
            p.kill()


def _a_kernel_thread() -> int | None:
    for d in sorted(os.listdir("/proc"), key=lambda x: (len(x), x))[:400]:
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[6]) & 0x00200000:
                return int(d)
    return None


def test_kernel_thread_and_self_are_refused(tmp_path):
    kt = _a_kernel_thread()
    if kt is not None:
        r = _run_mt("snapshot", str(kt), "-o", str(tmp_path / "k.core"))
        assert r.returncode != 0
        _no_traceback(r)
        assert "kernel thread" in r.stderr
    with pytest.raises(MappedTraceError, match="tracer itself"):
        snapshot_process(os.getpid())
