"""Where the pause of a remote copy goes: attach, copy, and the server's CPU and run-queue wait.

Usage (root): python benchmarks/remote/attach_phases.py [MIB] [ROUNDS]   (default 256 MiB, 2 rounds)

Builds samples/snap_heap.c with a heap of MIB MiB and copies it through
``lldb-server-22 gdbserver`` on loopback (no link: the server and its CPU
alone), ROUNDS times in three ways: the server started with no process and
attached by the tracer after decoding the maps (``late-decode``: what
``mappedtrace leaks --remote`` does), attached by the tracer with nothing
decoded first (``late``), and attached by the server before the tracer came
(``server``).  For each copy it prints the attach-to-``_load`` time, the copy
time, the pause (attach to detach) and, from ``/proc/PID/schedstat``, the
seconds the server ran and the seconds it waited runnable in the run queue.
Decoded files are cached per process, so only the first ``late-decode`` of
the run decodes anything.
"""
from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mappedtrace.session import MapsCache, warm_caches  # noqa: E402
from mappedtrace.target.remote import attach_remote, capture_remote  # noqa: E402


def _sched(pid: int) -> tuple[float, float]:
    """(seconds run, seconds waited runnable) of every thread of ``pid``."""
    run = wait = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(f) as fh:
            a = fh.read().split()
        run, wait = run + int(a[0]), wait + int(a[1])
    return run / 1e9, wait / 1e9


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "samples" / "snap_heap.c")], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    t = subprocess.Popen([str(exe), str(mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        t.stdout.readline()
        for _ in range(rounds):
            for mode in ("late-decode", "late", "server"):
                port = random.randrange(20000, 60000)
                cmd = ["lldb-server-22", "gdbserver", f"127.0.0.1:{port}"]
                srv = subprocess.Popen(cmd + (["--attach", str(t.pid)] if mode == "server" else []),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
                cache = MapsCache()
                t0 = time.perf_counter()
                rt = attach_remote(f"127.0.0.1:{port}", t.pid,
                                   before_attach=(lambda x: warm_caches(x, cache)) if mode == "late-decode" else None)
                t1 = time.perf_counter()
                s0 = _sched(srv.pid)
                ct = capture_remote(rt)
                s1 = _sched(srv.pid)
                print(f"{mode:11s} connect+decode+load {t1 - t0:.2f} s, copy {ct.meta['copy_ns'] / 1e9:.2f} s, "
                      f"pause {ct.meta['pause_ns'] / 1e9:.2f} s; server ran {s1[0] - s0[0]:.2f} s, "
                      f"waited runnable {s1[1] - s0[1]:.2f} s; load {os.getloadavg()[0]:.1f}", flush=True)
                ct.close()
                srv.wait(timeout=60)
    finally:
        t.kill()


if __name__ == "__main__":
    main()
