#!/usr/bin/env python3
"""``mappedtrace compact`` against ``malloc_trim(0)`` on a fragmented heap (issue #17).

    PYTHONPATH=. .venv/bin/python benchmarks/relocate/compact.py [--configs 40000:15,100000:10]
        [--repeat 3] [--max-occupancy 0.5] [--json FILE]

For each configuration N:KEEP, samples/frag_heap.c (built with ``mappedtrace cc
-O2``) allocates N objects of mixed sizes and frees a random (100 - KEEP) % of
them.  Two processes with the same heap are started side by side (a pair): one
gets only the program's ``malloc_trim(0)`` (injected, ``compact --trim-only``),
the other a compaction pass.  Per process: the heap's resident pages and
``RssAnon`` before and after (read from /proc here, besides the tool's own
figures), the pause (SIGSTOP to SIGCONT), the tracer's CPU time, the target's
CPU time (the injected allocator calls run there), and whether the program's
digests (after "check" and after "churn 2000") equal those of a run left alone.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from mappedtrace.relocate.compact import compact  # noqa: E402

SEED = 11


def rss_anon(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat, clock ticks)."""
    st = open(f"/proc/{pid}/stat").read()
    f = st[st.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Proc:
    def __init__(self, exe: Path, n: int, keep: int):
        self.p = subprocess.Popen([str(exe), str(n), str(keep), str(SEED)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.ready = self.p.stdout.readline().strip()

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self) -> int:
        self.p.communicate("", timeout=300)
        return self.p.returncode


def one(exe: Path, n: int, keep: int, trim_only: bool, max_occupancy: float, ref: list[str]) -> dict:
    w = Proc(exe, n, keep)
    try:
        rss0, cpu0, me0 = rss_anon(w.p.pid), cpu_of(w.p.pid), self_cpu()
        res = compact(w.p.pid, trim_only=trim_only, max_occupancy=max_occupancy)
        rss1, cpu1, me1 = rss_anon(w.p.pid), cpu_of(w.p.pid), self_cpu()
        c = res.compaction
        digests = [w.ask("check"), w.ask("churn 2000")]
        rc = w.close()
    finally:
        if w.p.poll() is None:
            w.p.kill()
            w.p.wait()
    moved = len(res.moved)
    pause = res.timings.get("pause", 0.0)
    return {"mode": c["mode"], "moved": moved, "skipped": len(res.skipped),
            "source_pages": c.get("source_pages", 0),
            "heap_pages_before": c["before"]["heap_pages"],
            "heap_resident_before": c["before"]["heap_resident_pages"],
            "heap_resident_after": c["after"]["heap_resident_pages"],
            "heap_pages_released": c["released"]["heap_resident_pages"],
            "free_whole_pages_after": c["after"]["free_whole_pages"],
            "rss_anon_before": rss0, "rss_anon_after": rss1, "rss_anon_released": rss0 - rss1,
            "pause_ms": round(pause * 1000, 1),
            "parts_ms": {k: round(v * 1000, 1) for k, v in res.timings.items() if k != "pause"},
            "pause_ms_per_1000_moved": round(pause * 1e6 / moved, 1) if moved else None,
            "tracer_cpu_s": round(me1 - me0, 3), "target_cpu_s": round(cpu1 - cpu0, 3),
            "plugs": c.get("plugs"),
            "identical": digests == ref and rc == 0, "load": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="40000:15,40000:40,100000:10")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-occupancy", type=float, default=0.5)
    ap.add_argument("--json", default=str(HERE / "compact_results.json"))
    a = ap.parse_args()
    out = {"command": " ".join(sys.argv), "max_occupancy": a.max_occupancy, "configs": {}}
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "frag_heap"
        subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-g", "-o", str(exe),
                        str(ROOT / "samples" / "frag_heap.c")], check=True, cwd=d)
        for cfg in a.configs.split(","):
            n, keep = (int(x) for x in cfg.split(":"))
            r = subprocess.run([str(exe), str(n), str(keep), str(SEED)], input="check\nchurn 2000\n",
                               capture_output=True, text=True, check=True)
            ref = r.stdout.splitlines()[1:3]
            runs = []
            for rep in range(a.repeat):
                # a pair: the baseline and the compaction on the same heap, order alternated
                order = (True, False) if rep % 2 == 0 else (False, True)
                pair = {("trim" if t else "compact"): one(exe, n, keep, t, a.max_occupancy, ref) for t in order}
                runs.append(pair)
                print(cfg, rep, {k: (v["heap_pages_released"], v["rss_anon_released"] // 1024, v["pause_ms"],
                                     v["identical"]) for k, v in pair.items()}, flush=True)
            med = lambda xs: sorted(xs)[len(xs) // 2]
            summ = {}
            for mode in ("trim", "compact"):
                xs = [p[mode] for p in runs]
                summ[mode] = {
                    "heap_resident_before_median": med([x["heap_resident_before"] for x in xs]),
                    "heap_pages_released_median": med([x["heap_pages_released"] for x in xs]),
                    "heap_pages_released_min": min(x["heap_pages_released"] for x in xs),
                    "rss_anon_before_kib_median": med([x["rss_anon_before"] for x in xs]) // 1024,
                    "rss_anon_after_kib_median": med([x["rss_anon_after"] for x in xs]) // 1024,
                    "pause_ms_median": med([x["pause_ms"] for x in xs]),
                    "pause_ms_max": max(x["pause_ms"] for x in xs),
                    "tracer_cpu_s_median": med([x["tracer_cpu_s"] for x in xs]),
                    "target_cpu_s_median": med([x["target_cpu_s"] for x in xs]),
                    "moved_median": med([x["moved"] for x in xs]),
                    "all_identical": all(x["identical"] for x in xs),
                    "load": [round(x["load"], 1) for x in xs]}
            out["configs"][cfg] = {"summary": summ, "runs": runs}
            print(json.dumps(summ, indent=1), flush=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
