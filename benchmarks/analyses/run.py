#!/usr/bin/env python3
"""Heap analyses on a big heap: dominators and retained sizes, a ``why`` query,
``diff`` of two snapshots, the ``view`` page (written and opened in Chromium).

    .venv/bin/python benchmarks/analyses/run.py [--objects 4000000] [--size 248] [--repeat 3]

Builds benchmarks/trace/bench_heap.c with ``mappedtrace cc``, starts it,
takes two fork snapshots of it (the heap does not change between them: the
diff's cost, not its answer, is measured), then times each step on the
snapshot (medians of ``--repeat`` runs, with min and max).  The graph itself
(heap walk and marking) is built once per snapshot and not counted: it is
what every command pays first (benchmarks/trace/RESULTS.md measures it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "benchmarks" / "trace"))
from bench_mark import start_heap  # noqa: E402

from mappedtrace.analyses.diff import HeapState, diff  # noqa: E402
from mappedtrace.analyses.dominators import by_holder, by_type, dominator_tree  # noqa: E402
from mappedtrace.analyses.heapview import view_data  # noqa: E402
from mappedtrace.analyses.paths import PathFinder  # noqa: E402
from mappedtrace.reporters import html_view  # noqa: E402
from mappedtrace.session import analyse  # noqa: E402
from mappedtrace.target.capture import snapshot_process  # noqa: E402
from mappedtrace.target.core import open_core, write_core  # noqa: E402


def timed(fn, repeat: int):
    ts, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return out, ts


def fmt(ts: list[float]) -> str:
    return f"{statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f}, n={len(ts)})"


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1200,900", "--dump-dom"]


def open_in_chromium(url: str, profile: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", url], capture_output=True, text=True,
                       timeout=300)
    dt = time.perf_counter() - t0
    if 'data-ready="1"' not in r.stdout and "about:blank" not in url:
        raise RuntimeError("the page did not finish its script")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=4_000_000)
    ap.add_argument("--size", type=int, default=248)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_analyses_"))
    exe = tmp / "bench_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "benchmarks" / "trace" / "bench_heap.c")], check=True)
    proc, _ = start_heap(exe, args.objects, args.size)
    cores = []
    try:
        for k in range(2):
            path = tmp / f"s{k}.core"
            with snapshot_process(proc.pid, "fork") as ct:
                write_core(ct, str(path))
            cores.append(path)
    finally:
        proc.kill()
        proc.wait()
    print(f"heap: {args.objects} objects of {args.size} B; snapshots {[os.path.getsize(c) >> 20 for c in cores]} MiB")
    states = []
    for c in cores:
        t = open_core(str(c))
        t0 = time.perf_counter()
        a = analyse(t, leaks=False)
        print(f"graph of {c.name}: {len(a.graph)} objects in {time.perf_counter() - t0:.2f} s (not counted below)")
        states.append(a)
    g = states[0].graph
    t0 = time.perf_counter()
    _ = g.edges
    print(f"edges made: {len(g.edges)} in {time.perf_counter() - t0:.2f} s (not counted below)")
    dom, ts = timed(lambda: dominator_tree(g), args.repeat)
    print(f"dominators + retained sizes: {fmt(ts)}")
    _, ts = timed(lambda: (by_type(g, dom), by_holder(g, dom)), args.repeat)
    print(f"top tables (by type, by holder): {fmt(ts)}")
    pf, ts = timed(lambda: PathFinder(g), 1)
    print(f"why: path finder set-up (once per graph): {fmt(ts)}")
    import numpy as np
    rng = np.random.default_rng(1)
    picks = rng.choice(np.flatnonzero(g.reached), 5, replace=False)
    qs = []
    for i in picks:
        t0 = time.perf_counter()
        pf.paths(int(i), 3)
        qs.append(time.perf_counter() - t0)
    print(f"why: one query (5 random reachable objects): {fmt(qs)}")
    sa = HeapState(g, dom, states[0].target.pid, states[0].target.exe, "s0")
    _, ts = timed(lambda: diff(sa, HeapState.of(states[1], "s1")), args.repeat)
    print(f"diff of two snapshots (second's dominators included): {fmt(ts)}")
    page = tmp / "heap.html"

    def write_page():
        data = view_data(g, dom, title="bench", precision={})
        with open(page, "w") as f:
            html_view.render(data, f)
    _, ts = timed(write_page, 1)
    print(f"view: page written in {fmt(ts)}, {page.stat().st_size >> 10} KiB")
    prof = str(tmp / "chromium")
    base = [open_in_chromium("about:blank", prof) for _ in range(args.repeat)]
    opened = [open_in_chromium(f"file://{page}", prof) for _ in range(args.repeat)]
    print(f"view: Chromium headless opens the page and runs its script in {fmt(opened)}; "
          f"an empty page takes {fmt(base)} (the browser's own start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
