#!/usr/bin/env python3
"""Batched allocator calls (issue #17): the pause of a pass, before and after, on the same heap.

    git archive BASE | tar -x -C /tmp/mt-before          # the tree before batching
    PYTHONPATH=. .venv/bin/python benchmarks/relocate/batch.py --baseline /tmp/mt-before
        [--configs 40000:15,40000:40,100000:10] [--repeat 3] [--json FILE]

For each configuration N:KEEP, samples/frag_heap.c (``mappedtrace cc -O2``, seed 11)
allocates N objects and frees a random (100 - KEEP) %.  Per repeat and per
operation (``compact PID`` and ``relocate PID --plan {"select": "all"}``), two
processes with the same heap are started side by side, and the operation is run
on one by the baseline tree's CLI and on the other by this tree's (order
alternated): a paired run on the same heap.  Per run: the pause (SIGSTOP to
SIGCONT, the tool's own ``timings_ms.pause``) and its parts, the objects moved,
the pause per 1 000 objects moved (whole pause, and the move alone: allocate +
write + free), the tracer's CPU time (the CLI child's rusage), the target's CPU
time, heap pages released (compact), the load average, and whether the
program's digests after "check" and "churn 2000" equal those of a run left alone.
Once per configuration, ``compact --trim-only`` (the program's ``malloc_trim(0)``
alone) for the pages it releases.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEED = 11

sys.path.insert(0, str(HERE))
from compact import Proc, cpu_of  # noqa: E402  (one launcher for both scripts)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_tool(tree: Path, op: str, pid: int, plan: Path) -> tuple[dict, float]:
    """The tree's CLI on ``pid``: its JSON report and its CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = {"compact": ["compact", str(pid), "--json"],
            "trim": ["compact", str(pid), "--json", "--trim-only"],
            "relocate": ["relocate", str(pid), "--plan", str(plan), "--json"]}[op]
    c0 = children_cpu()
    r = subprocess.run([sys.executable, "-m", "mappedtrace", *args], capture_output=True, text=True, env=env,
                       cwd=str(tree), timeout=1800)
    c1 = children_cpu()
    if r.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout), c1 - c0


def one(exe: Path, tree: Path, op: str, n: int, keep: int, plan: Path, ref: list[str]) -> dict:
    w = Proc(exe, n, keep)
    try:
        t0 = cpu_of(w.p.pid)
        d, tracer_cpu = run_tool(tree, op, w.p.pid, plan)
        t1 = cpu_of(w.p.pid)
        digests = [w.ask("check"), w.ask("churn 2000")]
        rc = w.close()
    finally:
        w.kill()
    t = d["timings_ms"]
    moved = len(d["moved"])
    move_ms = t.get("allocate", 0) + t.get("write", 0) + t.get("free", 0)
    c = d.get("compaction") or {}
    return {"moved": moved, "pause_ms": t.get("pause"), "parts_ms": t,
            "pause_ms_per_1000": round(t["pause"] * 1000 / moved, 1) if moved else None,
            "move_ms_per_1000": round(move_ms * 1000 / moved, 1) if moved else None,
            "batches": d.get("batches"),
            "heap_pages_released": (c.get("released") or {}).get("heap_resident_pages"),
            "tracer_cpu_s": round(tracer_cpu, 3), "target_cpu_s": round(t1 - t0, 3),
            "identical": digests == ref and rc == 0, "load": round(os.getloadavg()[0], 2)}


def med(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a tree of the code before batching")
    ap.add_argument("--configs", default="40000:15,40000:40,100000:10")
    ap.add_argument("--ops", default="compact,relocate")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=str(HERE / "batch_results.json"))
    a = ap.parse_args()
    trees = {"before": Path(a.baseline).resolve(), "after": ROOT}
    out = {"command": " ".join(sys.argv), "trees": {k: str(v) for k, v in trees.items()}, "configs": {}}
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "frag_heap"
        subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-g", "-o", str(exe),
                        str(ROOT / "samples" / "frag_heap.c")], check=True, cwd=d,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        plan = Path(d) / "all.json"
        plan.write_text('{"select": "all"}')
        for cfg in a.configs.split(","):
            n, keep = (int(x) for x in cfg.split(":"))
            r = subprocess.run([str(exe), str(n), str(keep), str(SEED)], input="check\nchurn 2000\n",
                               capture_output=True, text=True, check=True)
            ref = r.stdout.splitlines()[1:3]
            res: dict = {"trim_only": one(exe, ROOT, "trim", n, keep, plan, ref)}
            for op in a.ops.split(","):
                pairs = []
                for rep in range(a.repeat):
                    order = ("before", "after") if rep % 2 == 0 else ("after", "before")
                    pair = {which: one(exe, trees[which], op, n, keep, plan, ref) for which in order}
                    pairs.append(pair)
                    print(cfg, op, rep, {k: (v["moved"], v["pause_ms"], v["move_ms_per_1000"], v["identical"],
                                             v["load"]) for k, v in pair.items()}, flush=True)
                summ = {}
                for which in ("before", "after"):
                    xs = [p[which] for p in pairs]
                    summ[which] = {k: med([x[k] for x in xs]) for k in
                                   ("moved", "pause_ms", "pause_ms_per_1000", "move_ms_per_1000", "tracer_cpu_s",
                                    "target_cpu_s", "heap_pages_released", "batches")}
                    summ[which]["pause_ms_max"] = max(x["pause_ms"] for x in xs)
                    summ[which]["pause_ms_per_1000_max"] = max(x["pause_ms_per_1000"] or 0 for x in xs)
                    summ[which]["all_identical"] = all(x["identical"] for x in xs)
                    summ[which]["load"] = [x["load"] for x in xs]
                summ["pause_ratio_before_over_after"] = [
                    round(p["before"]["pause_ms"] / p["after"]["pause_ms"], 1) for p in pairs]
                res[op] = {"summary": summ, "pairs": pairs}
                print(cfg, op, json.dumps(summ), flush=True)
            out["configs"][cfg] = res
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
