#!/usr/bin/env python3
"""Relocation passes every second for a while on the self-checking workload.

    PYTHONPATH=. .venv/bin/python benchmarks/relocate/soak.py [--seconds 120] [--limit 2000]

samples/relocate_workload.c (3 threads, ``--rounds`` rounds with 1 ms sleeps,
then idle until told) gets a ``relocate`` pass of up to ``--limit`` objects
every second (``{"select": "all"}``: objects moved before move again) for
``--seconds``; then it checks its structures once more and prints its digests,
which must equal an unrelocated run's, with no MISMATCH line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from mappedtrace.errors import MappedTraceError  # noqa: E402
from mappedtrace.relocate.mover import relocate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "w"
        subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-g", "-o", str(exe),
                        str(ROOT / "samples" / "relocate_workload.c")], check=True)
        p = subprocess.Popen([str(exe), "3", str(a.rounds), "1000", "wait"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("ready")
        t_end = time.time() + a.seconds
        passes, moved, pauses, errors = 0, 0, [], []
        while time.time() < t_end:
            t0 = time.time()
            try:
                res = relocate(p.pid, "all", limit=a.limit)
                passes += 1
                moved += len(res.moved)
                pauses.append(res.timings.get("pause", 0) * 1000)
            except MappedTraceError as e:
                errors.append(e.message)
            time.sleep(max(0.0, 1.0 - (time.time() - t0)))
        out, err = p.communicate("", timeout=3600)
        ref = subprocess.run([str(exe), "3", str(a.rounds), "0"], capture_output=True, text=True).stdout
        res_lines = lambda s: [x for x in s.splitlines() if x.startswith(("result", "mismatches"))]
        summary = {"seconds": a.seconds, "passes": passes, "objects_moved": moved,
                   "pause_ms_median": round(statistics.median(pauses), 1) if pauses else None,
                   "pause_ms_max": round(max(pauses), 1) if pauses else None,
                   "failed_passes": len(errors), "errors": sorted(set(errors))[:5],
                   "mismatch_lines": err.count("MISMATCH"), "digests_identical": res_lines(out) == res_lines(ref),
                   "exit_code": p.returncode}
        print(json.dumps(summary, indent=1))
        return 0 if summary["digests_identical"] and not summary["mismatch_lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
