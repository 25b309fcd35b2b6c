#!/usr/bin/env python3
"""Run-time overhead of each tool, as ratios to the plain ``clang-22 -O2`` build.

Variants of each workload (builds: benchmarks/accuracy/builds.py):

* ``plain``: ``clang-22 -O2`` — the baseline;
* ``maps``: ``mappedtrace cc -O2``, no tracer attached;
* ``maps+snapshot/s``: the same, with ``mappedtrace snapshot PID -o FILE --mode fork``
  launched when the program starts and then every second until it exits
  (the tracer's own CPU is not counted in the target's CPU time);
* ``lsan``: ``clang-22 -O2 -g -fsanitize=leak`` (leak check at exit);
* ``asan``: ``clang-22 -O2 -g -fsanitize=address`` (leak check at exit);
* ``valgrind``: ``valgrind -q --leak-check=full`` on the plain build.

Workloads: benchmarks/programs/binary_trees.c; SQLite's speedtest1 (test/speedtest1.c
+ the amalgamation, ``--memdb --size N``); Lua 5.4 running benchmarks/programs/bench.lua.

Each round runs every variant once, in an order rotated from round to round
(interleaved: machine noise hits all variants alike).  Per run, under GNU time
(/usr/bin/time): wall time, CPU time (user + sys of the program) and max RSS.
Reported: medians, and each median divided by plain's median.  A variant whose
first run took over 30 s (Valgrind) runs in the first 3 rounds only.

    .venv/bin/python benchmarks/overhead_tools/run.py [--runs 5] [--quick] [--out FILE]
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
sys.path.insert(0, str(HERE.parent / "accuracy"))

import builds  # noqa: E402

VARIANTS = ["plain", "maps", "maps+snapshot/s", "lsan", "asan", "valgrind"]
#: workload -> (builder, full args, quick args)
WORKLOADS = {
    "binary_trees": (builds.binary_trees, ["17"], ["15"]),
    "speedtest1": (builds.speedtest1, ["--memdb", "--size", "50"], ["--memdb", "--size", "10"]),
    "lua": (builds.lua, [str(builds.PROGRAMS / "bench.lua"), "10"], [str(builds.PROGRAMS / "bench.lua"), "2"]),
}
RUN_TIMEOUT = 600
#: runs longer than this (on the first round) are repeated 3 times instead of --runs
LONG_RUN_S = 30.0


def _snapshot_loop(pid: int, done: threading.Event, out: Path, log: dict) -> None:
    """``mappedtrace snapshot PID -o FILE --mode fork`` launched as soon as the program
    starts, then once a second (launch to launch) until it exits.  The command's own
    start-up (a Python process, ~0.5 s) overlaps the program's run."""
    for _ in range(RUN_TIMEOUT):
        t0 = time.perf_counter()
        r = subprocess.run([builds.MAPPEDTRACE, "snapshot", str(pid), "-o", str(out), "--mode", "fork"],
                           capture_output=True, text=True, timeout=120)
        log["taken"] += 1
        log["ok"] += r.returncode == 0
        if r.returncode == 0:
            log["seconds"].append(round(time.perf_counter() - t0, 3))
        elif r.stderr.strip():
            log["last_error"] = r.stderr.strip().splitlines()[0][:200]
        out.unlink(missing_ok=True)
        if done.wait(max(0.0, 1.0 - (time.perf_counter() - t0))):
            return


def _child_of(pid: int) -> int | None:
    """The first child of *pid* (GNU time's child: the measured program), or None."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _snapshot_target(time_pid: int, done: threading.Event, out: Path, log: dict) -> None:
    for _ in range(1000):                       # ≤ 1 s to see GNU time's child appear
        pid = _child_of(time_pid)
        if pid is not None or done.wait(0.001):
            break
    if pid is not None:
        _snapshot_loop(pid, done, out, log)


def run_once(argv: list[str], snap: bool, tmp: Path) -> dict:
    """One run under GNU time: wall s, CPU s (user+sys), max RSS KiB (+ the snapshot log).

    GNU time (a small C program) forks and execs the program and reads its rusage:
    measuring from Python instead would count the Python process's RSS before exec.
    """
    log = {"taken": 0, "ok": 0, "seconds": []}
    done = threading.Event()
    tf = tmp / "time.out"
    tf.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%U %S %M %x", "-o", str(tf), *argv], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    th = None
    if snap:
        th = threading.Thread(target=_snapshot_target, args=(p.pid, done, tmp / f"snap.{p.pid}", log))
        th.start()
    killer = threading.Timer(RUN_TIMEOUT, p.kill)   # bounds the read below
    killer.start()
    try:
        # stderr is read to EOF (the end of the process), then the process is reaped
        err = p.stderr.read()
        p.wait()
        wall = time.perf_counter() - t0
    finally:
        killer.cancel()
        done.set()
        if p.returncode is None:
            p.kill()
            p.wait()
        if th is not None:
            th.join()
    fields = tf.read_text().split() if tf.exists() else []
    if p.returncode != 0 or len(fields) < 4:
        raise RuntimeError(f"{argv[0]} exited with {p.returncode}: {err.decode(errors='replace')[-400:]}")
    user, sys_, rss, _ = fields[-4:]
    return {"wall": wall, "cpu": float(user) + float(sys_), "rss_kib": int(rss), "snap": log}


def _rel(arg: str) -> str:
    root = str(builds.ROOT) + "/"
    return arg[len(root):] if arg.startswith(root) else arg


def argv_of(variant: str, workload: str, quick: bool) -> tuple[list[str], bool]:
    builder, full, small = WORKLOADS[workload]
    args = small if quick else full
    if variant == "valgrind":
        return ["valgrind", "-q", "--leak-check=full", str(builder("plain")), *args], False
    build = "maps" if variant.startswith("maps") else variant
    return [str(builder(build)), *args], variant == "maps+snapshot/s"


def bench(workload: str, variants: list[str], runs: int, quick: bool, tmp: Path) -> dict:
    cmds = {v: argv_of(v, workload, quick) for v in variants}
    raw: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(runs):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            # a variant whose first run took over 30 s gets 3 runs, not 5 (the rule)
            if r >= 3 and raw[v] and raw[v][0]["wall"] > LONG_RUN_S:
                continue
            raw[v].append(run_once(cmds[v][0], cmds[v][1], tmp))
        print(f"  {workload} round {r + 1}/{runs}: " + ", ".join(
            f"{v} {raw[v][r]['wall']:.2f}s" if len(raw[v]) > r else f"{v} –" for v in variants), flush=True)
    res = {"command": {v: " ".join(Path(c).name if i == 0 else _rel(c) for i, c in enumerate(cmds[v][0]))
                       for v in variants}, "variants": {}}
    med = {v: {k: statistics.median(x[k] for x in raw[v]) for k in ("wall", "cpu", "rss_kib")} for v in variants}
    base = med.get("plain")
    for v in variants:
        row = {"wall_s_median": round(med[v]["wall"], 4), "cpu_s_median": round(med[v]["cpu"], 4),
               "rss_kib_median": med[v]["rss_kib"],
               "wall_s_all": [round(x["wall"], 4) for x in raw[v]],
               "cpu_s_all": [round(x["cpu"], 4) for x in raw[v]],
               "rss_kib_all": [x["rss_kib"] for x in raw[v]]}
        if base:
            row.update(wall_ratio=round(med[v]["wall"] / base["wall"], 3),
                       cpu_ratio=round(med[v]["cpu"] / base["cpu"], 3),
                       rss_ratio=round(med[v]["rss_kib"] / base["rss_kib"], 3))
        if v == "maps+snapshot/s":
            row["snapshots_taken"] = [x["snap"]["taken"] for x in raw[v]]
            row["snapshots_ok"] = [x["snap"]["ok"] for x in raw[v]]
            errs = [x["snap"]["last_error"] for x in raw[v] if "last_error" in x["snap"]]
            if errs:
                row["snapshot_last_error"] = errs[-1]
            secs = [s for x in raw[v] for s in x["snap"]["seconds"]]
            row["snapshot_command_s_median"] = round(statistics.median(secs), 3) if secs else None
        res["variants"][v] = row
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small workload sizes")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    variants = a.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="mt-overhead-tools-"))
    out = {"runs": a.runs, "quick": a.quick, "loadavg_start": os.getloadavg(), "workloads": {}}
    for w in a.workloads.split(","):
        t0 = time.perf_counter()
        out["workloads"][w] = bench(w, variants, a.runs, a.quick, tmp)
        out["workloads"][w]["args"] = [_rel(x) for x in WORKLOADS[w][2 if a.quick else 1]]
        out["workloads"][w]["seconds"] = round(time.perf_counter() - t0, 1)
        for v, row in out["workloads"][w]["variants"].items():
            print(f"{w:13} {v:16} wall {row['wall_s_median']:8.3f} s x{row.get('wall_ratio', 0):6.2f}  "
                  f"cpu x{row.get('cpu_ratio', 0):6.2f}  rss {row['rss_kib_median'] / 1024:7.1f} MiB "
                  f"x{row.get('rss_ratio', 0):5.2f}", flush=True)
    out["loadavg_end"] = os.getloadavg()
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
