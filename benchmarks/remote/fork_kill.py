"""The tracer SIGKILLed at random moments of a remote fork capture (issue #16): does the
target always run on, unchanged, with no forked child left?

Usage (root)::

    python benchmarks/remote/fork_kill.py [--kills N] [--mib M] [--seed S]

Builds samples/snap_heap.c, builds an M MiB heap (default 16), and across a link of two
network namespaces (``tests/test_remote.py``'s ``Link``, 100 Mbit/s) starts
``gdbserver --once --multi`` and ``mappedtrace leaks PID --remote … --mode fork`` N times
(default 20), each time killing the tracer (SIGKILL) a random 0–150 ms after the server
stopped the target (the attach, the load, the injected clone, the parent's detach; every
fourth kill 0.15–1.5 s on: the child being read).  After each kill: is the target out of
its stop within 10 s, is a forked child left (a live process whose parent is this
script, as the target's is: the child is made with ``CLONE_PARENT``), does the target's
heap checksum match the one before.  Where the kill landed is classified from the
outside: target still stopped (before the parent's detach), or running with the child
alive (after it).  Prints one JSON line per kill and a summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_remote import Link, _running_within, _state  # noqa: E402
from test_remote_fork import _children, _kill_tree  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT), DEBUGINFOD_URLS="")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--seed", type=int, default=16)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "samples" / "snap_heap.c")], check=True, env=ENV, cwd=ROOT)
    t = subprocess.Popen([str(exe), str(a.mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.stdout.readline()
    before = _children(os.getpid())

    def checksum() -> str:
        t.stdin.write("c\n")
        t.stdin.flush()
        return t.stdout.readline().strip()

    want = checksum()
    lk = Link(random.randrange(1, 1 << 14))
    subprocess.run(["ip", "netns", "add", lk.srv], check=True)
    ok = 0
    landed = {"stopped": 0, "child-alive": 0, "other": 0}
    try:
        lk.up()
        lk.shape("100mbit")
        for i in range(a.kills):
            delay = rng.uniform(0.15, 1.5) if i % 4 == 3 else rng.uniform(0, 0.15)
            srv, addr = lk.server(None, "gdbserver", once=True)
            tr = lk.tracer("leaks", str(t.pid), "--remote", addr, env=ENV, wait=False)
            deadline = time.monotonic() + 60
            while _state(t.pid) not in ("t", "T") and time.monotonic() < deadline and tr.poll() is None:
                time.sleep(0.0005)
            time.sleep(delay)
            where = "stopped" if _state(t.pid) in ("t", "T") else \
                "child-alive" if _children(os.getpid()) - before else "other"
            _kill_tree(tr.pid)
            tr.wait(timeout=20)
            try:
                srv.wait(timeout=20)
                server_exited = True
            except subprocess.TimeoutExpired:
                server_exited = False
                srv.kill()
            running = _running_within(t.pid, 10)
            end = time.monotonic() + 10
            while _children(os.getpid()) - before and time.monotonic() < end:
                time.sleep(0.1)
            left = sorted(_children(os.getpid()) - before)
            same = running and checksum() == want
            good = running and not left and same
            ok += good
            landed[where] += 1
            print(json.dumps({"kill": i, "delay_ms": round(delay * 1e3, 1), "landed": where,
                              "target_running": running, "children_left": left, "heap_same": same,
                              "server_exited": server_exited, "ok": good, "load": os.getloadavg()[0]}),
                  flush=True)
    finally:
        lk.down()
        t.kill()
    print(json.dumps({"summary": f"{ok}/{a.kills} kills left the target running, unchanged, no child",
                      "landed": landed}), flush=True)


if __name__ == "__main__":
    main()
