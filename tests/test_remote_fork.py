"""A copy-on-write fork made on the far side through gdbserver (``--remote … --mode fork``),
across a real link (the namespaces of ``test_remote``): the same report as the local
tracer, a pause shorter than the stop-copy one on the same heap, lldb-server staying
stop-copy with the reason said, and a tracer killed mid-capture leaving the target
running and no child behind."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import need
from test_remote import (TRUTH, Link, _finish, _local_leaks, _norm, _running_within, _start, _state,  # noqa: F401
                         cache_env, exes, link)


def _children(pid: int) -> set[int]:
    """Live (non-zombie) children of ``pid``, over all its threads."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            out |= {int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()}
        except OSError:
            pass
    return {c for c in out if _state(c) not in ("", "Z", "X")}


def _remote_json(link: Link, pid: int, addr: str, out: Path, env: dict, *mode: str) -> tuple[dict, str]:
    r = link.tracer("leaks", str(pid), "--remote", addr, *mode, "--json", str(out), env=env)
    assert r.returncode == 23, r.stderr
    return json.loads(out.read_text()), r.stderr


@pytest.mark.parametrize("attach", ["multi", "attach"])
def test_remote_fork_same_as_local(link: Link, exes, cache_env, tmp_path: Path, attach: str) -> None:
    """gdbserver --once (--multi: the tracer attaches; --attach: attached first):
    fork mode is the default; its report equals the local one (and the stop-copy one),
    the child is gone, the target runs on."""
    need("gdbserver")
    ref = _start(exes["leaky_server"])
    expected = _finish(ref)
    p = _start(exes["leaky_server"], errfile=tmp_path / "err")
    before = _children(os.getpid())
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(None if attach == "multi" else p.pid, "gdbserver", once=True)
        fork, err = _remote_json(link, p.pid, addr, tmp_path / "fork.json", cache_env)
        assert fork["capture"]["capture"] == "fork", (fork["capture"], err)
        assert "fork capture" in err and "fallback" not in fork["capture"], err
        assert _norm(dict(fork)) == local
        truth = {int(a, 16) for a, _, _ in TRUTH.findall((tmp_path / "err").read_text())}
        assert truth and {x["address"] for x in fork["leaks"]} == truth
        srv.wait(timeout=20)
        assert _running_within(p.pid, 10)
        srv, addr = link.server(None if attach == "multi" else p.pid, "gdbserver", once=True)
        stop, _ = _remote_json(link, p.pid, addr, tmp_path / "stop.json", cache_env, "--mode", "stop-copy")
        assert stop["capture"]["capture"] == "stop-copy"
        assert _norm(dict(stop)) == local
        srv.wait(timeout=20)
        assert _children(os.getpid()) - before == set()       # no forked child left
        assert _running_within(p.pid, 10)
        assert _finish(p) == expected           # the target ran on exactly as before
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_remote_fork_pause_below_stop_copy(link: Link, exes, cache_env, tmp_path: Path) -> None:
    """On a 16 MiB heap across the test link (100 Mbit/s, hex reads: seconds of copy), the
    pause the tool reports for a fork ends before the copy: below its stop-copy pause."""
    need("gdbserver")
    p = _start(exes["snap_heap"], "16", "serve")
    srv = None
    try:
        pauses = {}
        for mode in ("fork", "stop-copy"):
            srv, addr = link.server(None, "gdbserver", once=True)
            r = link.tracer("graph", str(p.pid), "--remote", addr, "--mode", mode, "-o",
                            str(tmp_path / f"{mode}.json"), env=cache_env)
            assert r.returncode == 0, r.stderr
            m = re.search(r"(fork|stop-copy) capture: pause (\d+) ms", r.stderr)
            assert m and m[1] == mode, r.stderr
            pauses[mode] = int(m[2])
            srv.wait(timeout=20)
            assert _running_within(p.pid, 10)
        assert pauses["fork"] < pauses["stop-copy"], pauses
        p.stdin.write("c\n")
        p.stdin.flush()
        assert p.stdout.readline().strip()          # it still answers
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_remote_fork_lldb_stays_stop_copy(link: Link, exes, cache_env, tmp_path: Path) -> None:
    """lldb-server grants no fork-events: the copy is taken stopped, and the report says why."""
    p = _start(exes["leaky_server"])
    srv = None
    try:
        srv, addr = link.server(None, "lldb")
        rep, err = _remote_json(link, p.pid, addr, tmp_path / "r.json", cache_env, "--mode", "fork")
        assert rep["capture"]["capture"] == "stop-copy"
        assert "lldb-server grants neither multiprocess nor fork-events" in rep["capture"]["fallback"]
        assert "fork mode not used (lldb-server grants neither" in err, err
        assert _running_within(p.pid, 10)
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_remote_fork_tracer_killed(link: Link, exes, cache_env, tmp_path: Path) -> None:
    """The tracer SIGKILLed at random moments of a remote fork capture (gdbserver --once):
    from the moment the server stops the target (the attach), 0–150 ms on (the load of
    registers and maps, the injected clone, the parent's detach) or later (the child being
    read).  The target runs on with its heap unchanged, no forked child is left."""
    need("gdbserver")
    p = _start(exes["snap_heap"], "16", "serve")
    before = _children(os.getpid())
    rng = random.Random(int(os.environ.get("MT_KILL_SEED", "16")))
    try:
        p.stdin.write("c\n")
        p.stdin.flush()
        checksum = p.stdout.readline().strip()
        for delay in [rng.uniform(0, 0.15) for _ in range(3)] + [rng.uniform(0.15, 1.5)]:
            srv, addr = link.server(None, "gdbserver", once=True)
            tr = link.tracer("leaks", str(p.pid), "--remote", addr, env=cache_env, wait=False)
            deadline = time.monotonic() + 60
            while _state(p.pid) not in ("t", "T") and time.monotonic() < deadline and tr.poll() is None:
                time.sleep(0.0005)
            time.sleep(delay)
            _kill_tree(tr.pid)
            tr.wait(timeout=20)
            srv.wait(timeout=20)            # --once: the server lets go and exits with the connection
            assert _running_within(p.pid, 10), delay
            deadline = time.monotonic() + 10
            while _children(os.getpid()) - before and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _children(os.getpid()) - before == set(), delay
            p.stdin.write("c\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == checksum, delay      # its heap as it was
    finally:
        p.kill()


def _kill_tree(pid: int) -> None:
    """SIGKILL ``ip netns exec``'s child, the tracer itself (``pid`` execs into it)."""
    for c in _descendants(pid) + [pid]:
        try:
            os.kill(c, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        kids = [int(x) for t in os.listdir(f"/proc/{pid}/task")
                for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except OSError:
        return out
    for k in kids:
        out += _descendants(k) + [k]
    return out


def test_remote_fork_reads_the_child(exes) -> None:
    """Through the API on loopback: after the parent's detach the server reads the child
    (the armed frame is still in the child's stack, nowhere else), the parent's stack
    bytes are its own again, and the child is killed by ``vKill``."""
    need("gdbserver")
    from mappedtrace.target.remote import attach_remote
    from mappedtrace.target.remote_fork import inject_fork
    p = _start(exes["leaky_server"])
    port = random.randrange(20000, 60000)
    srv = subprocess.Popen(["gdbserver", "--once", "--multi", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.1)
        rt = attach_remote(f"127.0.0.1:{port}", p.pid, fork_events=True)
        try:
            child, frame = inject_fork(rt)
            c = rt.conn
            assert child != p.pid and _state(child) == "t"
            assert c.detach(p.pid)
            rt._attached = False
            assert _running_within(p.pid, 10)
            assert c.request(f"Hg{c.thread_id(child, child)}") == b"OK"
            assert c.read(frame.addr, len(frame.data)) == frame.data
            with open(f"/proc/{p.pid}/mem", "rb") as f:        # the parent: blocked in read(2)
                f.seek(frame.addr)
                assert f.read(len(frame.saved)) == frame.saved
            assert c.request(f"vKill;{child:x}") == b"OK"
        finally:
            rt.close()
        srv.wait(timeout=20)
        assert _state(child) in ("", "Z")
        assert _running_within(p.pid, 10)
    finally:
        p.kill()
        srv.kill()


def test_remote_fork_signal_for_the_borrowed_thread(tmp_path: Path) -> None:
    """A signal waiting for the process when the borrowed thread is let run (sent while the
    server holds it) reaches that thread before any handler: the fork is abandoned at that
    stop, the copy is taken stopped (said in a warning), and the signal is delivered once,
    to the program's own state, at the detach (``snap_signals`` counts its deliveries)."""
    need("gdbserver", "ss")
    from conftest import SAMPLES, build_sample, require_plugin
    require_plugin()
    from mappedtrace.target.remote import attach_remote, capture_remote
    exe = build_sample(SAMPLES / "snap_signals.c", "-O2", tmp_path / "snap_signals")
    p = _start(Path(exe))
    port = random.randrange(20000, 60000)
    srv = subprocess.Popen(["gdbserver", "--once", "--multi", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.1)
        rt = attach_remote(f"127.0.0.1:{port}", p.pid, fork_events=True)
        os.kill(p.pid, signal.SIGUSR1)          # pending: every thread is held by the server
        time.sleep(0.1)
        ct = capture_remote(rt, mode="fork")
        assert ct.meta["mode"] == "stop-copy", ct.meta
        assert any("(number 30 in gdb's numbering) reached the borrowed thread" in w    # 30: SIGUSR1
                   for w in ct.warnings), ct.warnings
        srv.wait(timeout=20)
        assert _readline(p, 10) == "1"          # delivered once, after the detach
        os.kill(p.pid, signal.SIGUSR1)
        assert _readline(p, 10) == "2"          # and it runs on as before
        ct.close()
    finally:
        p.kill()
        srv.kill()


def _readline(p: subprocess.Popen, seconds: float) -> str:
    import select
    r, _, _ = select.select([p.stdout], [], [], seconds)
    return p.stdout.readline().strip() if r else "(nothing)"
