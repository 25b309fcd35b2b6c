"""How long ``mappedtrace leaks PID`` pauses the process it checks.

    .venv/bin/python benchmarks/trace/bench_pause.py --objects 1000000 --size 248 --repeat 3 \
        [--before-tree DIR]

Builds bench_heap.c with ``mappedtrace cc -O2``, runs it (N objects of SIZE
bytes: 1 M × 248 B is a 256 MiB heap) and runs ``mappedtrace leaks PID`` on
it in each capture mode, ``--repeat`` times, interleaved.  The pause is
measured from outside: a thread polls ``/proc/PID/stat`` and times the span
during which the process is in a tracing stop (state ``t``); the pause the
report gives (``capture.pause_ms`` of the JSON) is printed beside it.  With
``--before-tree DIR`` (a checkout of older code, e.g. ``git archive`` of a
commit) the same command of that tree is measured too, for a before/after.
Every run's leak count is checked against the program's own (every 20th
object is leaked).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from bench_mark import start_heap  # noqa: E402


class StopWatch(threading.Thread):
    """Polls /proc/PID/stat; ``spans`` are (first, last) times seen in state t."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/stat"
        self.first = self.last = None
        self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while not self.done.is_set():
                state = os.pread(fd, 512, 0).rsplit(b")", 1)[1].split()[0]
                now = time.perf_counter()
                self.polls += 1
                if state in (b"t", b"T"):
                    if self.first is None:
                        self.first = now
                    self.last = now
        finally:
            os.close(fd)

    @property
    def paused_ms(self) -> float:
        return 0.0 if self.first is None else (self.last - self.first) * 1e3


def run_leaks(tree: Path, pid: int, mode: str | None, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "mappedtrace", "leaks", str(pid), "--json", str(out)]
    if mode:
        cmd += ["--mode", mode]
    watch = StopWatch(pid)
    watch.start()
    t0 = time.perf_counter()
    # (cwd: "python -m" puts the current directory first on sys.path)
    r = subprocess.run(cmd, env=env, cwd=str(tree), capture_output=True, text=True, timeout=1200)
    wall = time.perf_counter() - t0
    watch.done.set()
    watch.join()
    if r.returncode not in (0, 23):
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    rep = json.loads(out.read_text())
    return {"wall_s": wall, "paused_ms": watch.paused_ms, "polls": watch.polls,
            "reported_ms": (rep.get("capture") or {}).get("pause_ms"),
            "leaked": rep["summary"]["leaked_objects"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=248)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before-tree", type=Path, help="a tree of older code to measure too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pause."))
    exe = work / "bench_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe), str(HERE / "bench_heap.c")],
                   check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    proc, info = start_heap(exe, args.objects, args.size)
    want = args.objects // 20 if args.objects % 20 == 0 else (args.objects + 19) // 20
    configs = [("fork", ROOT, "fork"), ("stop-copy", ROOT, "stop-copy")]
    if args.before_tree:
        configs.insert(0, ("before", args.before_tree, None))
    rows: dict[str, list[dict]] = {c[0]: [] for c in configs}
    try:
        heap = int(open(f"/proc/{proc.pid}/status").read().split("VmRSS:")[1].split()[0]) * 1024
        print(f"bench_heap {args.objects} × {args.size} B: RSS {heap / 2**20:.0f} MiB, load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for i in range(args.repeat):
            for name, tree, mode in configs:
                r = run_leaks(tree, proc.pid, mode, work / f"{name}.json")
                # the C library's own 2 objects, held only from its globals, are not leaks
                # in the real command (libc's roots are given); accept want..want+2
                if not want <= r["leaked"] <= want + 2:
                    raise RuntimeError(f"{name}: {r['leaked']} leaked objects, expected {want}")
                rows[name].append(r)
                rep = "-" if r["reported_ms"] is None else f"{r['reported_ms']:.1f}"
                print(f"run {i + 1} {name:9} paused {r['paused_ms']:8.1f} ms (reported {rep} ms) "
                      f"wall {r['wall_s']:.2f} s, {r['leaked']} leaked, {r['polls']} polls", flush=True)
    finally:
        proc.kill()
        proc.wait()
    print("median:")
    for name, rs in rows.items():
        print(f"  {name:9} paused {statistics.median(r['paused_ms'] for r in rs):8.1f} ms, "
              f"wall {statistics.median(r['wall_s'] for r in rs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
