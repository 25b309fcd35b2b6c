#!/usr/bin/env python3
"""The relocator SIGKILLed at random steps, then recovered: is the workload's data exact?

    PYTHONPATH=. .venv/bin/python benchmarks/relocate/bench_kill.py [--kills 50] [--limit 60] [--seed 1]

One samples/relocate_workload.c process (3 threads) runs while ``mappedtrace
relocate PID`` passes of ``--limit`` objects are killed at a random step
(``MAPPEDTRACE_RELOCATE_KILL_AFTER``: an allocator call, a copy, a pointer
write or a free) and ``mappedtrace relocate PID --recover`` follows each.
Counted: kills, processes left stopped after a kill (must be all), recoveries
by kind, and at the end whether the workload's digests equal an unrelocated
run's and it printed no MISMATCH.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MT = [sys.executable, "-m", "mappedtrace"]


def state(pid: int) -> set[str]:
    out = set()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
            out.add(s[s.rindex(")") + 2])
        except FileNotFoundError:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "w"
        subprocess.run([*MT, "cc", "-O2", "-g", "-o", str(exe), str(ROOT / "samples" / "relocate_workload.c")],
                       check=True)
        env = dict(os.environ, MAPPEDTRACE_RELOCATE_DIR=str(Path(d) / "j"))
        plan = Path(d) / "plan.json"
        plan.write_text(json.dumps({"select": "all", "limit": a.limit}))
        p = subprocess.Popen([str(exe), "3", "400", "1000", "wait"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("ready")
        counts = collections.Counter()
        t0 = time.time()
        for _ in range(a.kills):
            k = rng.randint(1, 4 * a.limit)
            r = subprocess.run([*MT, "relocate", str(p.pid), "--plan", str(plan)], capture_output=True, text=True,
                               env=dict(env, MAPPEDTRACE_RELOCATE_KILL_AFTER=str(k)))
            if r.returncode == 0:
                counts["pass completed (k beyond its steps)"] += 1
                continue
            counts["killed"] += 1
            time.sleep(0.2)
            if state(p.pid) == {"T"}:
                counts["left stopped"] += 1
            rec = subprocess.run([*MT, "relocate", str(p.pid), "--recover", "--json"], capture_output=True,
                                 text=True, env=env)
            if rec.returncode != 0:
                counts["recovery failed"] += 1
                print(rec.stderr, file=sys.stderr)
                continue
            out = json.loads(rec.stdout)["recovered"]
            counts[f"recovery: {out['action']}"] += 1
            counts["chunks leaked (never a double free)"] += out["leaked"]
        out, err = p.communicate("", timeout=600)
        ref = subprocess.run([str(exe), "3", "400", "0"], capture_output=True, text=True).stdout
        res = lambda s: [x for x in s.splitlines() if x.startswith(("result", "mismatches"))]
        summary = {"kills_asked": a.kills, "limit": a.limit, "seed": a.seed, **counts,
                   "mismatch_lines": err.count("MISMATCH"), "digests_identical": res(out) == res(ref),
                   "exit_code": p.returncode, "seconds": round(time.time() - t0, 1)}
        print(json.dumps(summary, indent=1))
        return 0 if summary["digests_identical"] and not summary["mismatch_lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
