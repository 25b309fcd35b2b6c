"""The target survives its tracer being SIGKILLed at any point (issue #13 item 4).

regs_heartbeat (samples/) checks its own registers (rbx, r12–r15, xmm8/ymm8),
a heap pattern and the bytes it reads, and counts heartbeats; it reports
"ok" only if all stayed right.  The tracer is killed

* at each step of the fork injection, deterministically: right after the
  thread is armed (its registers borrowed), at the clone event (the child
  not yet held), and at the syscall-exit stop — with the borrowed thread
  running user code (``spin``) or interrupted in a system call (``idle``);
* at 40 random points of whole snapshots (attach, fork, copy, write:
  benchmarks/trace/bench_kill.py, which runs 200).

After each kill the target runs on, unstopped, no copy of it runs, and a
snapshot file is either complete or absent.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import have_c_compiler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks" / "trace"))

import bench_kill  # noqa: E402

#: a tracer that dies at one step of capture.inject_clone (the kernel and the
#: target are real; only the point of death is chosen)
DIE_AT = """
import os, signal, sys
from mappedtrace.target import capture
from mappedtrace.target.live import LiveTarget

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

step = sys.argv[2]
if step == "armed":             # registers borrowed, the clone not yet run
    capture._run_injected = lambda live, tid: die()
elif step == "clone":           # the clone done, its child not yet held (no EXITKILL)
    capture._hold_child = lambda child: (print("child", child, flush=True), die())
elif step == "exit":            # at the clone's syscall-exit stop, registers still borrowed
    run = capture._run_injected
    capture._run_injected = lambda live, tid: (run(live, tid), die())
lt = LiveTarget(int(sys.argv[1]))
t = capture._pick_thread(lt)
print("borrowed", t.tid, "in_syscall", int(t.regs["orig_rax"] != (1 << 64) - 1), flush=True)
capture.inject_clone(lt)
die()                           # "done": the thread parked again, every thread still held
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    if not have_c_compiler():
        pytest.skip("no C compiler")
    return bench_kill.build(tmp_path_factory.mktemp("kill") / "regs_heartbeat")


def _start(exe: Path, variant: str) -> subprocess.Popen:
    p = subprocess.Popen([str(exe), variant], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("ready")
    return p


def _finish(p: subprocess.Popen) -> str:
    p.stdin.write("stop\n")
    p.stdin.close()
    out = p.stdout.read()
    assert p.wait(timeout=60) == 0, out
    return out


@pytest.mark.parametrize("variant", ["spin", "idle"])
@pytest.mark.parametrize("step", ["armed", "clone", "exit", "done"])
def test_tracer_dies_during_the_fork_injection(exe, variant, step):
    p = _start(exe, variant)
    try:
        time.sleep(0.05)
        for _ in range(3):
            r = subprocess.run([sys.executable, "-c", DIE_AT, str(p.pid), step], capture_output=True,
                               text=True, timeout=60, cwd=str(ROOT))
            assert r.returncode == -signal.SIGKILL, r.stderr[-800:]
            assert f"in_syscall {int(variant == 'idle')}" in r.stdout, r.stdout
            time.sleep(0.05)
            assert p.poll() is None, f"the target died ({p.returncode}) after its tracer died at {step!r}"
            assert bench_kill.process_state(p.pid) in ("R", "S"), bench_kill.process_state(p.pid)
            for _ in range(100):        # the child, left without its tracer, exits by itself
                if not bench_kill.live_copies(exe, p.pid):
                    break
                time.sleep(0.01)
            assert bench_kill.live_copies(exe, p.pid) == []
        out = _finish(p)
        assert out.startswith("ok "), out
        iters, beats = map(int, out.split()[1:3])
        assert beats > 0 and (iters > 0 or variant == "idle")
    finally:
        p.kill()


@pytest.mark.parametrize("mode", ["fork", "stop-copy"])
def test_tracer_killed_at_random_points(exe, tmp_path, mode):
    r = bench_kill.kill_rounds(exe, "spin", mode, kills=40 if mode == "fork" else 10, seed=13,
                               work=tmp_path / "out")
    assert r["problems"] == [], r
    assert r["final"].startswith("ok ")


def test_snapshot_file_complete_or_absent(tmp_path):
    """fileio.write_private: nothing under the final name until the file is
    whole (an old file stays as it was), no name to plant, mode 0600."""
    from mappedtrace.errors import MappedTraceError
    from mappedtrace.fileio import write_private

    def private_output(path):
        return write_private(path, binary=True)
    out = tmp_path / "s.core"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with private_output(str(out)) as f:
            f.write(b"partial" * 1000)
            f.flush()
            assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["s.core"]
            raise RuntimeError("the writer fails midway")
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["s.core"]
    with private_output(str(out)) as f:
        f.write(b"new")
    assert out.read_bytes() == b"new" and out.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["s.core"]
    with private_output(str(tmp_path / "n.core")) as f:     # a new name: linked in place at once
        f.write(b"fresh")
    assert (tmp_path / "n.core").read_bytes() == b"fresh" and sorted(os.listdir(tmp_path)) == ["n.core", "s.core"]
    with pytest.raises(MappedTraceError, match="does not exist"):
        with private_output(str(tmp_path / "no" / "such" / "dir.core")) as f:
            pass
