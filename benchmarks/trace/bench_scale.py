"""Scale with object count and tracer memory (issue #13 items 2–3).

    .venv/bin/python benchmarks/trace/bench_scale.py --objects 20000000 [--repeat 1] \
        [--runs fork,conservative,snapshot] [--tree DIR]

Builds samples/scale_heap.c with ``mappedtrace cc -O2`` and runs it with N objects of
64–128 bytes in linked structures (trees and doubly linked lists from
globals) and 1 000 leaked chains of 3 objects; the program prints how many
objects it leaked.  Then, for each run:

``fork``          ``mappedtrace leaks PID`` (fork capture, precise roots: the default)
``conservative``  ``mappedtrace leaks --roots conservative PID``
``snapshot``      ``mappedtrace snapshot --mode fork PID -o FILE``, then ``mappedtrace leaks FILE``

Each command runs under ``/usr/bin/time -v``: wall, the tracer's maximum RSS
(and its ratio to the target's RSS, the heap in use), the pause the report
gives, and marking speed (objects / the report's ``mark_s``).  Every leak
check's answer is checked against the program's own count.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from bench_mark import start_ready  # noqa: E402


def start(exe: Path, n: int, timeout: float = 1800) -> tuple[subprocess.Popen, dict]:
    proc, out = start_ready([str(exe), str(n)], timeout)
    return proc, {l.split()[0]: int(l.split()[1]) for l in out.splitlines() if len(l.split()) == 2}


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024


def timed(cmd: list[str], tree: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    """(wall seconds, max RSS bytes, result) of ``cmd`` under /usr/bin/time -v;
    the result's ``cpu_s`` is user + system time."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, cwd=str(tree), capture_output=True,
                       text=True, timeout=3600)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    cpu = [float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", r.stderr)]
    r.cpu_s = sum(cpu)
    return wall, int(m.group(1)) * 1024 if m else 0, r


def check(r: subprocess.CompletedProcess, out: Path, want: int, what: str) -> dict:
    if r.returncode not in (0, 23):
        raise RuntimeError(f"{what}: exit {r.returncode}: {r.stderr.strip()[-600:]}")
    rep = json.loads(out.read_text())
    got = rep["summary"]["leaked_objects"]
    print(f"    {what}: {got} leaked objects (the program leaked {want})", flush=True)
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--runs", default="fork,conservative,snapshot")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the code to measure (default: this checkout)")
    ap.add_argument("--keep-snapshot", action="store_true")
    args = ap.parse_args()
    runs = args.runs.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_scale."))
    exe = work / "scale_heap"
    py = sys.executable
    subprocess.run([py, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe), str(ROOT / "samples" / "scale_heap.c")],
                   check=True, env=dict(os.environ, PYTHONPATH=str(args.tree)))
    t0 = time.perf_counter()
    proc, info = start(exe, args.objects)
    built = time.perf_counter() - t0
    rows: dict[str, list[dict]] = {r: [] for r in runs}
    try:
        heap = rss_of(proc.pid)
        print(f"bench_scale {info['objects']} objects: target RSS {heap / 2**20:.0f} MiB (built in {built:.1f} s), "
              f"{info['leaked_objects']} leaked in {info['leaked_chains']} chains; load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for i in range(args.repeat):
            for name in runs:
                out = work / f"{name}.json"
                row: dict = {}
                if name in ("fork", "conservative"):
                    cmd = [py, "-m", "mappedtrace", "leaks", str(proc.pid), "--json", str(out)]
                    if name == "conservative":
                        cmd[4:4] = ["--roots", "conservative"]
                    wall, rss, r = timed(cmd, args.tree)
                    rep = check(r, out, info["leaked_objects"], name)
                    row.update(wall_s=wall, rss=rss, cpu_s=r.cpu_s)
                else:
                    snap = work / "scale.core"
                    wall_s, rss_s, r = timed([py, "-m", "mappedtrace", "snapshot", "--mode", "fork", str(proc.pid),
                                              "-o", str(snap)], args.tree)
                    if r.returncode != 0:
                        raise RuntimeError(f"snapshot: exit {r.returncode}: {r.stderr.strip()[-600:]}")
                    wall, rss, r = timed([py, "-m", "mappedtrace", "leaks", str(snap), "--json", str(out)],
                                         args.tree)
                    rep = check(r, out, info["leaked_objects"], "leaks SNAPSHOT")
                    row.update(snapshot_wall_s=wall_s, snapshot_rss=rss_s, wall_s=wall, rss=rss, cpu_s=r.cpu_s,
                               snapshot_bytes=snap.stat().st_size)
                    if not args.keep_snapshot:
                        snap.unlink()
                prec = rep.get("precision", {})
                cap = rep.get("capture") or {}
                objs = prec.get("objects", 0)
                row.update(leaked=rep["summary"]["leaked_objects"], pause_ms=cap.get("pause_ms"),
                           mark_s=prec.get("mark_s", 0.0), objects=objs,
                           mobj_s=objs / prec["mark_s"] / 1e6 if prec.get("mark_s") else 0.0)
                rows[name].append(row)
                extra = (f"; snapshot {row['snapshot_wall_s']:.2f} s, RSS {row['snapshot_rss'] / 2**20:.0f} MiB"
                         if name == "snapshot" else "")
                pause = "-" if row["pause_ms"] is None else f"{row['pause_ms']:.1f} ms"
                print(f"run {i + 1} {name:12} wall {row['wall_s']:6.2f} s (cpu {row['cpu_s']:.2f} s), tracer max RSS "
                      f"{row['rss'] / 2**20:6.0f} MiB ({row['rss'] / heap:.2f}× the heap), pause {pause}, "
                      f"mark {row['mark_s']:.2f} s ({row['mobj_s']:.2f} M objects/s){extra}; load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        proc.kill()
        proc.wait()
    print("median:")
    for name, rs in rows.items():
        if rs:
            med = lambda k: statistics.median(r[k] for r in rs)
            print(f"  {name:12} wall {med('wall_s'):.2f} s, cpu {med('cpu_s'):.2f} s, RSS {med('rss') / 2**20:.0f} MiB "
                  f"({med('rss') / heap:.2f}×), mark {med('mobj_s'):.2f} M objects/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
