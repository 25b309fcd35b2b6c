#!/usr/bin/env python3
"""Pause time of a snapshot: stop-copy and fork (ours) against gcore, interleaved.

For each heap size the target (samples/snap_heap.c, 256-byte objects) is
started once and waits on stdin; then, round after round, each method takes
one snapshot of it in turn, so that machine noise hits all methods alike.

* stop-copy / fork: the pause is measured by the tracer (first thread
  stopped → last thread released; ``meta["pause_ns"]``).  MB/s is the copy
  rate (bytes captured / time copying).
* gcore: gdb's pause is observed from outside: a thread polls
  ``/proc/PID/stat`` every 0.2 ms and measures how long the target is in a
  tracing stop (state ``t``).  gcore writes its core file while the target is
  stopped; that is part of its pause.
* copy-on-write cost: after a fork capture whose child is kept alive, the
  target rewrites its whole heap once ("w" on stdin; it reports the time it
  took) — then again after the child is gone.  The difference, per page
  written, is what the parent pays for a fork snapshot.

Usage::

    python benchmarks/snapshot/run.py [--sizes 64,256,1024] [--reps 5] [--reps-big 3]

Writes benchmarks/snapshot/results.json and RESULTS.md next to this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from mappedtrace.target.capture import snapshot_process  # noqa: E402

PAGE = 4096


def build(tmp: Path) -> str:
    cc = shutil.which("clang-22") or shutil.which("gcc") or "cc"
    exe = tmp / "snap_heap"
    subprocess.run([cc, "-O2", "-o", str(exe), str(ROOT / "samples" / "snap_heap.c")], check=True)
    return str(exe)


class Target:
    def __init__(self, exe: str, mib: int):
        self.p = subprocess.Popen([exe, str(mib), "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready"), line
        self.pid = self.p.pid
        self.ask("c")      # allocate stdio buffers; now blocked in read(0)

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self) -> None:
        try:
            self.p.stdin.write("q\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


def _stopped_time(pid: int, stop: threading.Event, out: list) -> None:
    # Observe the tracing stop from outside (state 't').
    t_in = None
    total = 0
    path = f"/proc/{pid}/stat"
    while not stop.is_set():
        try:
            with open(path) as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        now = time.perf_counter_ns()
        if st == "t" and t_in is None:
            t_in = now
        elif st != "t" and t_in is not None:
            total += now - t_in
            t_in = None
        time.sleep(0.0002)
    if t_in is not None:
        total += time.perf_counter_ns() - t_in
    out.append(total)


def run_gcore(t: Target, tmp: Path) -> dict:
    out: list = []
    stop = threading.Event()
    th = threading.Thread(target=_stopped_time, args=(t.pid, stop, out))
    th.start()
    t0 = time.perf_counter_ns()
    r = subprocess.run(["gcore", "-o", str(tmp / "gcore"), str(t.pid)], capture_output=True, text=True)
    wall = time.perf_counter_ns() - t0
    stop.set()
    th.join()
    if r.returncode != 0:
        raise RuntimeError(f"gcore failed: {r.stderr.strip()[-200:]}")
    core = tmp / f"gcore.{t.pid}"
    size = core.stat().st_size
    core.unlink()
    return {"pause_ns": out[0], "wall_ns": wall, "bytes": size}


def run_ours(t: Target, mode: str) -> dict:
    ct = snapshot_process(t.pid, mode)
    try:
        m = ct.meta
        return {"pause_ns": m["pause_ns"], "bytes": m["captured_bytes"], "copy_ns": m.get("copy_ns", 0),
                "stop_ns": m.get("stop_ns", 0), "fork_ns": m.get("fork_ns", 0)}
    finally:
        ct.close()


def cow_cost(t: Target) -> dict:
    ct = snapshot_process(t.pid, "fork", hold_child=True)
    try:
        with_child = int(t.ask("w"))
    finally:
        ct.close()
    without = int(t.ask("w"))
    return {"rewrite_with_child_ns": with_child, "rewrite_without_child_ns": without}


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--reps-big", type=int, default=3, help="repetitions for heaps of 1 GiB and more")
    ap.add_argument("--no-gcore", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = ap.parse_args()
    if args.render_only:
        (HERE / "RESULTS.md").write_text(render_md(json.loads((HERE / "results.json").read_text())))
        return 0
    methods = ["stop-copy", "fork"] + ([] if args.no_gcore or not shutil.which("gcore") else ["gcore"])
    results = {"command": " ".join([Path(sys.executable).name, "benchmarks/snapshot/run.py", *sys.argv[1:]]),
               "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                        "loadavg_start": os.getloadavg()}, "sizes": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build(tmp)
        for mib in [int(s) for s in args.sizes.split(",")]:
            reps = args.reps_big if mib >= 1024 else args.reps
            t = Target(exe, mib)
            runs: dict[str, list[dict]] = {m: [] for m in methods}
            cow = []
            try:
                for r in range(reps):
                    for m in methods:
                        runs[m].append(run_gcore(t, tmp) if m == "gcore" else run_ours(t, m))
                    cow.append(cow_cost(t))
                    print(f"{mib} MiB round {r + 1}/{reps}: " + ", ".join(
                        f"{m} {runs[m][-1]['pause_ns'] / 1e6:.1f} ms" for m in methods), file=sys.stderr)
                checksum = t.ask("c")
            finally:
                t.close()
            row = {"heap_mib": mib, "reps": reps, "checksum_after": checksum, "methods": {}}
            for m in methods:
                xs = runs[m]
                p = med([x["pause_ns"] for x in xs])
                b = med([x["bytes"] for x in xs])
                e = {"pause_ms_median": p / 1e6, "pause_ms_all": [round(x["pause_ns"] / 1e6, 2) for x in xs],
                     "bytes": b, "pause_ms_per_gib": p / 1e6 / (b / (1 << 30)) if b else None}
                if m == "stop-copy":
                    e["copy_mb_s"] = b / 1e6 / (med([x["copy_ns"] for x in xs]) / 1e9)
                if m == "fork":
                    e["copy_from_child_mb_s"] = b / 1e6 / (med([x["copy_ns"] for x in xs]) / 1e9)
                    e["fork_ms_median"] = med([x["fork_ns"] for x in xs]) / 1e6
                if m == "gcore":
                    e["wall_ms_median"] = med([x["wall_ns"] for x in xs]) / 1e6
                row["methods"][m] = e
            wc = med([c["rewrite_with_child_ns"] for c in cow])
            wo = med([c["rewrite_without_child_ns"] for c in cow])
            pages = mib * (1 << 20) // PAGE
            row["cow"] = {"rewrite_with_child_ms": wc / 1e6, "rewrite_without_child_ms": wo / 1e6,
                          "extra_us_per_page": (wc - wo) / 1e3 / pages}
            results["sizes"].append(row)
    results["host"]["loadavg_end"] = os.getloadavg()
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "RESULTS.md").write_text(render_md(results))
    print(render_md(results))
    return 0


def render_md(res: dict) -> str:
    lines = ["# Snapshot pause: stop-copy and fork against gcore", "",
             f"Command: `{res['command']}` · kernel {res['host']['kernel']} · {res['host']['cpus']} CPUs · "
             f"load average at start {res['host']['loadavg_start'][0]:.1f}, at end "
             f"{res['host'].get('loadavg_end', [0])[0]:.1f} (the machine is shared).", "",
             "Target: samples/snap_heap.c (256-byte objects), blocked on stdin. Methods interleaved "
             "round by round; medians. Pause of ours = first thread stopped → last released "
             "(measured by the tracer); gcore's = time in tracing stop observed from /proc "
             "(0.2 ms polling; gcore writes its core while the target is stopped).", "",
             "| heap | method | pause ms (median) | all runs ms | captured MiB | ms per GiB | MB/s (copy) | pause vs gcore |",
             "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in res["sizes"]:
        g = row["methods"].get("gcore", {}).get("pause_ms_median")
        for m, e in row["methods"].items():
            rate = e.get("copy_mb_s") or e.get("copy_from_child_mb_s")
            vs = f"{g / e['pause_ms_median']:.1f}× shorter" if g and m != "gcore" else "–"
            lines.append(f"| {row['heap_mib']} MiB | {m} | {e['pause_ms_median']:.1f} | "
                         f"{', '.join(str(x) for x in e['pause_ms_all'])} | {e['bytes'] / (1 << 20):.0f} | "
                         f"{e['pause_ms_per_gib']:.0f} | {f'{rate:.0f}' if rate else '–'} | {vs} |")
    lines += ["", "Copy-on-write cost of a fork snapshot (the target rewrites its whole heap once while "
              "the child lives, then once after):", "",
              "| heap | rewrite with child ms | without ms | extra µs per page |", "| ---: | ---: | ---: | ---: |"]
    for row in res["sizes"]:
        c = row["cow"]
        lines.append(f"| {row['heap_mib']} MiB | {c['rewrite_with_child_ms']:.1f} | "
                     f"{c['rewrite_without_child_ms']:.1f} | {c['extra_us_per_page']:.2f} |")
    lines += ["", "Goals (issue #4): stop-copy ≤ 150 ms/GiB, fork ≤ 25 ms/GiB, gcore ≈ 480 ms/GiB reference.",
              "", "Reading the numbers: the goals were set on an idle 2-vCPU machine (DESIGN: gcore ≈ 480 ms/GiB, "
              "process_vm_readv ≈ 8 GB/s). This run shared the 2 CPUs with other work (load average above), "
              "where gcore itself took several times its reference; compare methods within a row (the "
              "last column), not with the goals. stop-copy's pause is the copy (the destination buffer is "
              "faulted in before the stop); fork's is stopping the threads plus the clone's page-table copy.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
