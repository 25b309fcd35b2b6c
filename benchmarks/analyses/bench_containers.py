#!/usr/bin/env python3
"""Typing by holder (analyses/containers.py) on a big Rust heap: what naming
the buffers costs beside marking, and how many objects it names.

    .venv/bin/python benchmarks/analyses/bench_containers.py [--nodes 100000] [--repeat 3]

Builds tests/containers/rust_containers.rs with ``mappedtrace rustc -O``,
starts it with ``--nodes`` elements in its ``Vec<Node>`` (each owning a
``String`` and a ``Vec<u32>``: two buffers per node), snapshots it
(stop-copy), then times marking and the container pass on the snapshot
(medians of ``--repeat`` runs).  Prints the derived figures of the
precision table.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

from mappedtrace.analyses.containers import derive_types  # noqa: E402
from mappedtrace.session import analyse  # noqa: E402
from mappedtrace.target.capture import snapshot_process  # noqa: E402
from mappedtrace.target.core import open_core, write_core  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "rust_containers"
        subprocess.run([sys.executable, "-m", "mappedtrace", "rustc", "-O", "-g", "--edition=2021", "-o", str(exe),
                        str(ROOT / "tests" / "containers" / "rust_containers.rs")], check=True)
        p = subprocess.Popen([str(exe), str(a.nodes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for line in p.stdout:
                if line.startswith("ready"):
                    break
            core = Path(d) / "heap.core"
            with snapshot_process(p.pid, "stop-copy") as ct:
                write_core(ct, str(core))
        finally:
            p.stdin.close()
            p.wait()
        marks, derives = [], []
        for _ in range(a.repeat):
            t = open_core(str(core))
            an = analyse(t, leaks=False)
            marks.append(an.timings["mark"])
            t0 = time.perf_counter()
            derive_types(an.graph, t, an.modules)        # a second time, timed alone
            derives.append(time.perf_counter() - t0)
        g = an.graph
        pr = g.precision
        print(f"{len(g)} objects, {int(g.sizes.sum())} bytes")
        print(f"mark:       {statistics.median(marks):.3f} s (min {min(marks):.3f})")
        print(f"containers: {statistics.median(derives):.3f} s (min {min(derives):.3f})")
        print(f"derived: {pr.derived_objects} objects, {pr.derived_bytes} bytes; scanned by a type: "
              f"{pr.derived_objects_typed} objects, {pr.derived_bytes_typed} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
