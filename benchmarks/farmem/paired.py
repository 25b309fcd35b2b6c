#!/usr/bin/env python3
"""Far memory, paired runs of two checkouts and the kernel's swap, interleaved, on the checksum workload.

    PYTHONPATH=. .venv/bin/python benchmarks/farmem/paired.py --before DIR [--share 0.5] [--rounds 3]
                                                                [--seconds 6] [--json out.json]

On a loaded machine the unpaged rate of the program moves 2-4× within minutes,
so rows measured minutes apart (``run.py``) cannot be compared.  Here every
paged run is paired with an unpaged run just before it, and the kinds take
turns within each round: the pager of ``--before`` (another checkout, e.g. a
``git worktree`` or ``git archive`` of main), this checkout's pager with and
without ``--no-readahead``, and Linux's own swap (zram + a memory cgroup,
set up and torn down as in ``run.py``).  Per kind: the median of the rounds'
slowdowns (unpaged ÷ paged passes/s) and the worst.  Every run must end with
zero mismatches (``run.py``'s ``one_run`` checks).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def _load(tree: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, tree / "benchmarks" / "farmem" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ROOT = tree                     # its pager runs from its own checkout...
    return mod


def _in(tree: Path, fn, *args, **kw):
    """``fn`` with ``tree`` as the working directory (``python -m`` puts it first on sys.path)."""
    old = os.getcwd()
    os.chdir(tree)
    try:
        return fn(*args, **kw)
    finally:
        os.chdir(old)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="another checkout whose pager is compared")
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--no-kswap", action="store_true")
    ap.add_argument("--json", default=str(HERE.with_name("results-paired.json")))
    a = ap.parse_args()
    after = _load(HERE.parents[2], "run_after")
    before = _load(Path(a.before).resolve(), "run_before")
    tmp = tempfile.mkdtemp(prefix="farmem-paired-")
    exe = os.path.join(tmp, "farmem_checksum")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, str(HERE.parents[2] / "samples" / "farmem_checksum.c")],
                   check=True)
    args = ["32", "2", str(a.seconds * 10)]
    heap = int(re.search(r"heap=(\d+)", subprocess.run([exe, "32", "2", "0"], capture_output=True,
                                                         text=True).stdout).group(1))
    budget = int(heap * a.share)
    redis, swap_on = None, False
    kinds = ["before", "after", "after --no-readahead"] + ([] if a.no_kswap else ["kswap"])
    out: dict[str, list] = {k: [] for k in kinds}
    try:
        redis, store = after.start_redis(tmp)
        overhead = 0
        if not a.no_kswap:
            after.zram_swap_on()
            swap_on = True
            base_cg = after.one_run(exe, args, min(a.seconds, 4), None, None, cgroup_limit=0)
            overhead = max(0, base_cg["status"]["max_usage_bytes"] - heap)
        for rnd in range(a.rounds):
            for kind in kinds:
                ref = after.one_run(exe, args, a.seconds, None, None)
                if kind == "kswap":
                    r = after.one_run(exe, args, a.seconds, None, None,
                                      cgroup_limit=budget + overhead + after.KSWAP_SLACK)
                elif kind == "before":
                    r = _in(before.ROOT, before.one_run, exe, args, a.seconds, budget, store)
                else:
                    r = _in(after.ROOT, after.one_run, exe, args, a.seconds, budget, store,
                            extra=["--no-readahead"] if "no-readahead" in kind else [])
                st = r["status"] or {}
                row = {"round": rnd, "unpaged_passes_per_s": ref["passes_per_s"],
                       "passes_per_s": r["passes_per_s"],
                       "slowdown": ref["passes_per_s"] / max(r["passes_per_s"], 1e-9),
                       **{k: st.get(k) for k in ("faults", "readahead", "pages_evicted", "pages_sent",
                                                 "pages_dropped_clean", "faults_waited_for_room",
                                                 "faults_over_budget", "resident_after_evict_max_bytes",
                                                 "resident_scan_max_bytes", "evict_seconds",
                                                 "fault_latency_median_us", "pgmajfault", "swap_bytes",
                                                 "oom_killed")}}
                out[kind].append(row)
                print(kind, json.dumps(row), flush=True)
    finally:
        if redis:
            redis.terminate()
            redis.wait()
        if swap_on:
            after.zram_swap_off()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {k: {"median": statistics.median(r["slowdown"] for r in v), "worst": max(r["slowdown"] for r in v),
                   "all": [round(r["slowdown"], 2) for r in v]} for k, v in out.items() if v}
    print(json.dumps(summary, indent=1))
    with open(a.json, "w") as f:
        json.dump({"heap_bytes": heap, "budget": budget, "args": vars(a), "summary": summary, "runs": out}, f,
                  indent=1)


if __name__ == "__main__":
    sys.exit(main())
