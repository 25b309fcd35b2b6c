#!/usr/bin/env python3
"""The head-to-head benchmarks, one command (issue #6): ``./bench.sh [--quick]``.

Runs, in this order, each as a subprocess whose JSON it collects:

* ``accuracy``: benchmarks/accuracy/run.py — leaks found / missed / false
  reports of MappedTrace, LeakSanitizer and Valgrind on the leak corpus and on
  SQLite's shell and Lua (unmodified, and with an injected leak);
* ``overhead``: benchmarks/overhead_tools/run.py — slowdown and max RSS of
  maps / maps + one snapshot a second / LSan / ASan / Valgrind vs plain clang-22 -O2;
* ``snapshot``: benchmarks/snapshot/run.py (the snapshot engineer's script,
  run with its output redirected into a temporary directory) — pause of
  stop-copy and fork vs gcore;
* ``trace``: benchmarks/trace/bench_mark.py (the tracer engineer's script,
  output parsed) for marking throughput, plus the end-to-end time of
  ``mappedtrace leaks PID`` on the same heap built with ``mappedtrace cc``.

Then writes benchmarks/results.json and benchmarks/RESULTS.md and draws
benchmarks/bench.png (benchmarks/plot.py).

    .venv/bin/python benchmarks/run.py [--quick] [--only accuracy,overhead,...]
        [--programs dropped_list,...] [--runs N] [--out-dir DIR]

``--out-dir`` writes the three outputs elsewhere (the test uses it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
sys.path.insert(0, str(HERE / "accuracy"))

import builds  # noqa: E402

sys.path.insert(0, str(HERE / "trace"))
from bench_mark import start_heap  # noqa: E402

SECTIONS = ["accuracy", "overhead", "snapshot", "trace"]
QUICK_PROGRAMS = "dropped_list,stale_slot,cycle,no_leaks,lua+leak"

#: bench_heap objects of 248 bytes are 256-byte chunks: objects per MiB
OBJ_PER_MIB = 4096


def _rel(p: str | Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _run_group(cmd: list[str], timeout: float, **kw) -> int:
    """Run *cmd* in its own process group; on timeout or interrupt the whole group is killed."""
    p = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, **kw)
    try:
        return p.wait(timeout=timeout)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise


def _json_child(cmd: list[str], out: Path, timeout: float) -> tuple[dict, str]:
    """Run a benchmark script that writes JSON to *out*; (its JSON, its command line)."""
    shown = " ".join(["python", *(_rel(c) if c.startswith(str(ROOT)) else c for c in cmd[1:])])
    print(f"\n$ {shown}", flush=True)
    rc = _run_group(cmd, timeout)
    if rc != 0 or not out.exists():
        raise RuntimeError(f"{shown} failed (exit {rc})")
    return json.loads(out.read_text()), shown


# ---------------------------------------------------------------- sections

def run_accuracy(a: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / "accuracy.json"
    cmd = [PY, str(HERE / "accuracy" / "run.py"), "--out", str(out)]
    progs = a.programs or (QUICK_PROGRAMS if a.quick else None)
    if progs:
        cmd += ["--programs", progs]
    if a.tools:
        cmd += ["--tools", a.tools]
    res, shown = _json_child(cmd, out, 1500)
    res["command"] = shown.replace(f" --out {out}", "")
    return res


def run_overhead(a: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / "overhead.json"
    runs = a.runs or (3 if a.quick else 5)
    cmd = [PY, str(HERE / "overhead_tools" / "run.py"), "--runs", str(runs), "--out", str(out)]
    if a.quick:
        cmd.append("--quick")
    res, shown = _json_child(cmd, out, 1500)
    res["command"] = shown.replace(f" --out {out}", "")
    return res


_SNAPSHOT_WRAPPER = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("snapshot_bench", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.HERE = Path(sys.argv[2])        # its results.json / RESULTS.md go here, not into its directory
sys.argv = [sys.argv[1], *sys.argv[3:]]
sys.exit(m.main())
"""


def run_snapshot(a: argparse.Namespace, tmp: Path) -> dict:
    script = HERE / "snapshot" / "run.py"
    if not script.exists():
        raise RuntimeError("benchmarks/snapshot/run.py does not exist")
    args = ["--sizes", "64", "--reps", str(a.runs or 3)] if a.quick else \
        ["--sizes", "64,256,1024", "--reps", str(a.runs or 5), "--reps-big", "3"]
    d = tmp / "snapshot"
    d.mkdir(exist_ok=True)
    print(f"\n$ python benchmarks/snapshot/run.py {' '.join(args)}", flush=True)
    rc = _run_group([PY, "-c", _SNAPSHOT_WRAPPER, str(script), str(d), *args], 1500, stdout=subprocess.DEVNULL)
    if rc != 0 or not (d / "results.json").exists():
        raise RuntimeError(f"benchmarks/snapshot/run.py failed (exit {rc})")
    res = json.loads((d / "results.json").read_text())
    res["command"] = f"python benchmarks/snapshot/run.py {' '.join(args)}"
    return res


_MARK_LINE = re.compile(r"precise\s+c\s*: mark\(\) ([\d.]+) s .*? (\d+) objects, ([\d.]+) GiB, ([\d.]+) M objects/s, "
                        r"([\d.]+) GB/s")
_FIND_LEAKS = re.compile(r"find_leaks ([\d.]+) s: (\d+) leaked")
_WALK_LINE = re.compile(r"attach ([\d.]+) s, heap walk ([\d.]+) s \((\d+) chunks\)")


def _mark_bench(objects: int, reps: int) -> dict:
    """benchmarks/trace/bench_mark.py: *reps* precise marks (C kernel) of one attached heap."""
    cmd = [PY, str(HERE / "trace" / "bench_mark.py"), "--objects", str(objects), "--size", "248",
           "--kernels", "c", "--modes", ",".join(["precise"] * reps)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    marks = []
    for line in r.stdout.splitlines():
        m, f = _MARK_LINE.search(line), _FIND_LEAKS.search(line)
        if m:
            marks.append((*m.groups(), *(f.groups() if f else ("", ""))))
    walk = _WALK_LINE.search(r.stdout)
    if r.returncode != 0 or not marks or not walk:
        raise RuntimeError(f"bench_mark.py --objects {objects} failed: {(r.stdout + r.stderr)[-400:]}")
    mark_s = [float(m[0]) for m in marks]
    leak_s = [float(m[5]) for m in marks if m[5]]
    return {"command": " ".join(["python", "benchmarks/trace/bench_mark.py", *cmd[2:]]),
            "attach_s": float(walk.group(1)), "heap_walk_s": float(walk.group(2)),
            "chunks": int(walk.group(3)), "objects": int(marks[0][1]), "heap_gib": float(marks[0][2]),
            "mark_s_all": mark_s, "mark_s_median": statistics.median(mark_s),
            "mobj_per_s_median": statistics.median(float(m[3]) for m in marks),
            "gb_per_s_median": statistics.median(float(m[4]) for m in marks),
            "find_leaks_s_median": statistics.median(leak_s) if leak_s else None,
            "leaked": int(marks[0][6]) if marks[0][6] else None}


def _e2e_leaks(exe: Path, objects: int, reps: int, tmp: Path) -> dict:
    """Wall time of ``mappedtrace leaks PID --json F`` on bench_heap built with the maps."""
    p, _info = start_heap(exe, objects, 248, timeout=300)
    try:
        with open(f"/proc/{p.pid}/status") as f:
            rss_kib = int(next(l for l in f if l.startswith("VmRSS")).split()[1])
        times, leaked, pauses = [], [], []
        js = tmp / "e2e.json"
        for _ in range(reps):
            t0 = time.perf_counter()
            r = subprocess.run([builds.MAPPEDTRACE, "leaks", str(p.pid), "--json", str(js)],
                               capture_output=True, text=True, timeout=900)
            times.append(time.perf_counter() - t0)
            if r.returncode not in (0, 23) or not js.exists():
                raise RuntimeError(f"mappedtrace leaks failed (exit {r.returncode}): {r.stderr[-300:]}")
            rep = json.loads(js.read_text())
            leaked.append(rep["summary"]["leaked_objects"])
            pauses.append((rep.get("capture") or {}).get("pause_ms"))
            js.unlink()
        return {"command": f"mappedtrace leaks PID --json FILE (bench_heap {objects} 248, built with mappedtrace cc -O2)",
                "target_rss_mib": round(rss_kib / 1024, 1), "leaks_s_all": [round(t, 3) for t in times],
                "pause_ms_all": pauses,
                "leaks_s_median": statistics.median(times), "leaked_objects": leaked[0],
                "expected_leaked_at_least": (objects + 19) // 20}
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def run_trace(a: argparse.Namespace, tmp: Path) -> dict:
    sizes = [4, 16] if a.quick else [16, 64, 256]
    exe = builds.build_c("maps", [HERE / "trace" / "bench_heap.c"], builds.vdir("maps") / "bench_heap")
    rows = []
    for mib in sizes:
        reps = a.runs or (3 if a.quick or mib >= 64 else 5)   # runs of 64 MiB+ take ~30 s
        n = mib * OBJ_PER_MIB
        print(f"\n$ python benchmarks/trace/bench_mark.py --objects {n} --size 248 (x{reps} precise marks) "
              f"+ mappedtrace leaks x{reps}", flush=True)
        row = {"heap_mib": mib, "objects_requested": n, "reps": reps}
        try:
            row["mark"] = _mark_bench(n, reps)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            row["mark_error"] = str(e)[:400]
        try:
            row["e2e"] = _e2e_leaks(exe, n, reps, tmp)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            row["e2e_error"] = str(e)[:400]
        print(f"  {mib} MiB: " + json.dumps({k: v for k, v in row.items() if k != 'mark'})[:300]
              + (f" mark {row['mark']['mark_s_median']:.3f} s" if "mark" in row else ""), flush=True)
        rows.append(row)
    return {"sizes": rows}


RUNNERS = {"accuracy": run_accuracy, "overhead": run_overhead, "snapshot": run_snapshot, "trace": run_trace}


# ---------------------------------------------------------------- machine

def machine() -> dict:
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**20, 1),
            "os": platform.platform(), "loadavg": [round(x, 1) for x in os.getloadavg()],
            "versions": {**builds.tool_versions(), "pass_plugin": builds.plugin_id()}}

# ---------------------------------------------------------------- RESULTS.md

def _f(x, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _acc_totals(acc: dict, real: bool) -> dict:
    """found/missed/false per tool over the corpus (real=False) or the real programs."""
    return builds.totals([c for c in acc.get("cases", [])
                          if c["program"].startswith(("sqlite", "lua")) == real])


def _acc_cell(t: dict | None) -> str:
    if not t or t["cases"] == 0:
        return "–"
    cell = f"{t['found']}/{t['truth']} found, {t['false']} false"
    if t["errors"]:
        cell += f", {t['errors']} runs failed"
    return cell


def _geo(xs: list[float]) -> float | None:
    xs = [x for x in xs if x]
    if not xs:
        return None
    p = 1.0
    for x in xs:
        p *= x
    return p ** (1 / len(xs))


def _ovh(ov: dict, variant: str, key: str) -> float | None:
    return _geo([w["variants"][variant].get(key) for w in ov.get("workloads", {}).values()
                 if variant in w["variants"]])


def _acc_score(t: dict | None) -> tuple[int, int] | None:
    return None if not t or t["cases"] == 0 or t["errors"] else (t["found"] - t["false"], -t["false"])


def _winner(scores: dict[str, float | tuple | None], lower: bool) -> str:
    ok = {k: v for k, v in scores.items() if v is not None}
    if not ok:
        return "–"
    best = (min if lower else max)(ok.values())
    wins = [k for k, v in ok.items() if v == best]
    return " = ".join(wins) + (" (tie)" if len(wins) > 1 else "")


def headline(res: dict) -> list[str]:
    """The short table at the top of RESULTS.md (for the README), with who wins each row."""
    sec = res["sections"]
    acc, ov, snap, tr = (sec.get(k, {}) for k in ("accuracy", "overhead", "snapshot", "trace"))
    lines = ["| Measure | MappedTrace | LeakSanitizer | ASan | Valgrind memcheck | gcore | Best |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    if acc:
        for real, label in ((False, "Leak corpus (C, -O0/-O2): true leaks found, false reports"),
                            (True, "SQLite shell + Lua, unmodified and with an injected leak"),):
            t = _acc_totals(acc, real)
            if t:
                best = _winner({"MappedTrace": _acc_score(t.get("mappedtrace")),
                                "LeakSanitizer": _acc_score(t.get("lsan")),
                                "Valgrind": _acc_score(t.get("valgrind"))}, lower=False)
                lines.append(f"| {label} | {_acc_cell(t.get('mappedtrace'))} | {_acc_cell(t.get('lsan'))} | – | "
                             f"{_acc_cell(t.get('valgrind'))} | – | {best} |")
    if ov.get("workloads"):
        g = {v: _ovh(ov, v, "wall_ratio") for v in ("maps", "maps+snapshot/s", "lsan", "asan", "valgrind")}
        best = _winner({"MappedTrace": g["maps"], "LeakSanitizer": g["lsan"], "ASan": g["asan"],
                        "Valgrind": g["valgrind"]}, lower=True)
        lines.append(f"| Slowdown vs clang-22 -O2 (geomean of {len(ov['workloads'])} workloads, wall) | "
                     f"×{_f(g['maps'])} (maps, no tracer); ×{_f(g['maps+snapshot/s'])} (+1 snapshot/s) | "
                     f"×{_f(g['lsan'])} | ×{_f(g['asan'])} | ×{_f(g['valgrind'])} | – | {best} |")
        r = {v: _ovh(ov, v, "rss_ratio") for v in ("maps", "lsan", "asan", "valgrind")}
        best = _winner({"MappedTrace": r["maps"], "LeakSanitizer": r["lsan"], "ASan": r["asan"],
                        "Valgrind": r["valgrind"]}, lower=True)
        lines.append(f"| Max RSS vs clang-22 -O2 (geomean) | ×{_f(r['maps'])} | ×{_f(r['lsan'])} | "
                     f"×{_f(r['asan'])} | ×{_f(r['valgrind'])} | – | {best} |")
    if snap.get("sizes"):
        big = max(snap["sizes"], key=lambda s: s["heap_mib"])
        m = big["methods"]

        def pm(k: str) -> float | None:
            return m.get(k, {}).get("pause_ms_median")
        best = _winner({"MappedTrace fork": pm("fork"), "MappedTrace stop-copy": pm("stop-copy"),
                        "gcore": pm("gcore")}, lower=True)
        lines.append(f"| Snapshot pause, {big['heap_mib']} MiB heap (median ms) | fork {_f(pm('fork'), '{:.0f}')}; "
                     f"stop-copy {_f(pm('stop-copy'), '{:.0f}')} | – | – | – | {_f(pm('gcore'), '{:.0f}')} | {best} |")
    rows = [r for r in tr.get("sizes", []) if "e2e" in r]
    if rows:
        big = max(rows, key=lambda r: r["heap_mib"])
        e = big["e2e"]
        lines.append(f"| Leak check of a live {big['heap_mib']} MiB heap ({e['expected_leaked_at_least']} leaks), "
                     f"end to end | {e['leaks_s_median']:.1f} s, all found: "
                     f"{'yes' if e['leaked_objects'] >= e['expected_leaked_at_least'] else 'NO'} "
                     "| – (only at exit, in process) | – (at exit) | – (at exit) | – | MappedTrace is the only one "
                     "that checks a running process; it is slow (Python) |")
    return lines


def render(res: dict) -> str:
    m = res["machine"]
    v = m["versions"]
    sec = res["sections"]
    q = " (**--quick**: small sizes, 3 runs per median — not the full benchmark)" if res["quick"] else ""
    if res.get("sources"):   # sections merged from several runs (benchmarks/run.py --merge)
        made = "Sections come from these runs (results.json beside this file): " + "; ".join(
            f"{', '.join(x['sections'])} — `{x['command']}` on {x['date']}, commit {x['commit']}"
            for x in res["sources"]) + "."
    else:
        made = (f"Generated by `{res['command']}` on {res['date']}{q}; {res['seconds'].get('total', 0):.0f} s. "
                "Every number below comes from that run (results.json beside this file).")
    L = ["# MappedTrace head to head: LeakSanitizer, ASan, Valgrind, gcore", "", made, "",
         "## Headline", ""]
    L += headline(res)
    L += ["", "## Machine", "",
          f"* {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['os']}",
          f"* load average at start {m['loadavg']}, at end {m.get('loadavg_end')} — "
          "the machine was shared with other builds and test runs while this ran: wall times are noisy, "
          "CPU times (user+sys of the target) are given beside them",
          f"* {v['clang']}; glibc {v['glibc']}; kernel {v['kernel']}; {v['valgrind']}; {v['gdb']}; Python {v['python']}; "
          f"MappedTrace pass {v.get('pass_plugin', '?')}, commit {res.get('commit', '?')}",
          ""]
    if res["errors"]:
        L += ["## Sections that failed", ""] + [f"* {k}: {e}" for k, e in res["errors"].items()] + [""]
    acc = sec.get("accuracy")
    if acc:
        L += ["## Accuracy: leaks found / missed / false reports", "",
              f"Command: `{acc['command']}`.  Builds: MappedTrace `mappedtrace cc`, LeakSanitizer "
              "`clang-22 -fsanitize=leak` (`LSAN_OPTIONS=report_objects=1`), Valgrind memcheck "
              "`--leak-check=full` (definitely + indirectly lost blocks) on the plain `clang-22` build. "
              "Ground truth: each corpus program prints its own leaks (`truth leak ADDR SIZE KIND`); "
              "SQLite's shell (`sqlite3 :memory: < benchmarks/programs/accuracy.sql`) and Lua "
              "(`lua benchmarks/programs/accuracy.lua`) unmodified have no leak; the `+leak` copies have "
              "one injected in `main` (a 16-byte struct dropped with the 40-byte string it points to: "
              "1 direct + 1 indirect; benchmarks/accuracy/builds.py). MappedTrace and LeakSanitizer are "
              "compared by address; Valgrind prints no addresses, so by count.", "",
              "| program | opt | truth | MappedTrace found/missed/false | LeakSanitizer | Valgrind |",
              "| --- | --- | ---: | --- | --- | --- |"]
        for c in acc["cases"]:
            cells = []
            truth = "?"
            for tool in ("mappedtrace", "lsan", "valgrind"):
                s = c["tools"].get(tool)
                if s is None:
                    cells.append("–")
                elif "found" in s:
                    truth = s["truth"]
                    cells.append(f"{s['found']}/{s['missed']}/{s['false']}")
                else:
                    cells.append("error: " + s["error"][:80].replace("|", "/"))
            L.append(f"| {c['program']} | {c['opt']} | {truth} | " + " | ".join(cells) + " |")
        L.append("")
    ov = sec.get("overhead")
    if ov:
        L += ["## Overhead: slowdown and memory vs plain clang-22 -O2", "",
              f"Command: `{ov['command']}`; {ov['runs']} interleaved rounds (order rotated each round; a variant "
              "whose first run took over 30 s — Valgrind — runs in the first 3 only); medians; "
              "ratio = variant median / plain median. CPU = user+sys of the program, max RSS and CPU from GNU time; "
              "`maps+snapshot/s`: `mappedtrace snapshot PID -o FILE --mode fork` launched "
              "when the program starts, then every second (the snapshot command's own CPU, on the same 2 cores, is not "
              "in the target's CPU column but does slow its wall time).", "",
              "| workload | variant | wall s | wall × | CPU × | max RSS MiB | RSS × | notes |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for w, d in ov["workloads"].items():
            for vn, r in d["variants"].items():
                note = ""
                if vn == "maps+snapshot/s":
                    note = f"snapshots per run {r.get('snapshots_taken')}, ok {r.get('snapshots_ok')}"
                    if r.get("snapshot_command_s_median"):
                        note += f"; command {r['snapshot_command_s_median']:.2f} s (median, start-up included)"
                    if r.get("snapshot_last_error"):
                        note += f"; last failure: {r['snapshot_last_error'][:100].replace('|', '/')}"
                L.append(f"| {w} `{' '.join(d['args'])}` | {vn} | {r['wall_s_median']:.3f} | "
                         f"{_f(r.get('wall_ratio'))} | {_f(r.get('cpu_ratio'))} | {r['rss_kib_median'] / 1024:.1f} | "
                         f"{_f(r.get('rss_ratio'))} | {note} |")
        L.append("")
    snap = sec.get("snapshot")
    if snap:
        L += ["## Snapshot pause: MappedTrace stop-copy and fork vs gcore", "",
              f"Command: `{snap['command']}` (benchmarks/snapshot/run.py, the snapshot engineer's script: "
              "its methodology is in its docstring; target samples/snap_heap.c, 256-byte objects, methods "
              "interleaved round by round; medians).", "",
              "| heap | method | pause ms (median) | all runs ms | ms per GiB | MB/s |",
              "| ---: | --- | ---: | --- | ---: | ---: |"]
        for s in snap["sizes"]:
            for mn, r in s["methods"].items():
                mbs = r.get("copy_mb_s") or r.get("copy_from_child_mb_s")
                L.append(f"| {s['heap_mib']} MiB | {mn} | {r['pause_ms_median']:.1f} | "
                         f"{', '.join(f'{x:.0f}' for x in r.get('pause_ms_all', []))} | "
                         f"{r.get('pause_ms_per_gib', 0):.0f} | {_f(mbs, '{:.0f}')} |")
        L.append("")
    tr = sec.get("trace")
    if tr:
        L += ["## Tracer: marking throughput and end-to-end leak check vs heap size", "",
              "Target benchmarks/trace/bench_heap.c (N objects of 248 bytes = 256-byte chunks, every 20th "
              "leaked). *mark*: `benchmarks/trace/bench_mark.py --objects N --size 248 --kernels c "
              "--modes precise,…` (the tracer engineer's script: one attach and heap walk, then repeated "
              "precise marks with the C kernel; types given by hand). *leaks*: `mappedtrace leaks PID "
              "--json FILE` on the same program built with `mappedtrace cc -O2` — the whole pipeline "
              "(attach, maps, unwinding, roots, heap walk, marking, leak report).", "",
              "| heap | objects | attach+walk s | mark s (median) | M objects/s | GB/s | `mappedtrace leaks` s (median) | all runs s | leaks reported / expected | s per 1M objects |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
        for r in tr["sizes"]:
            mk, e = r.get("mark"), r.get("e2e")
            n = r["objects_requested"]
            L.append(f"| {r['heap_mib']} MiB | {n} | "
                     + (f"{mk['attach_s'] + mk['heap_walk_s']:.2f} | {mk['mark_s_median']:.3f} | "
                        f"{mk['mobj_per_s_median']:.3f} | {mk['gb_per_s_median']:.3f} | " if mk else
                        "error | error | – | – | ")
                     + (f"{e['leaks_s_median']:.2f} | {', '.join(f'{x:.1f}' for x in e['leaks_s_all'])} | "
                        f"{e['leaked_objects']} / {e['expected_leaked_at_least']} | {e['leaks_s_median'] / n * 1e6:.1f} |"
                        if e else "error | – | – | – |"))
        L.append("")
    L += ["## Plot", "", "![pause and leak-check time vs heap size](bench.png)", "",
          "`benchmarks/plot.py` draws it from results.json (matplotlib, Agg).", "",
          "## Notes", ""] + NOTES + ([
          f"* `mappedtrace cc` had to retry with fewer recorded values in registers (the register "
          f"allocator ran out of registers): {', '.join(res.get('builds_spilled', []))}."]
          if res.get("builds_spilled") else []) + ["", "## Reproduce", "",
          "```sh", "./bench.sh            # full (≤ 30 min on 2 cores): setup + every benchmark",
          "./bench.sh --quick    # ≤ 5 min: subset of the corpus, small sizes, 3 runs per median",
          "```", "", "Per section: `.venv/bin/python benchmarks/run.py --only accuracy|overhead|snapshot|trace "
          "[--quick] [--programs a,b] [--runs N]`.", ""]
    return "\n".join(L)


NOTES = [
    "* Accuracy is deterministic per build (one run per program and tool); the numbers that vary "
    "(times, RSS) are medians of interleaved runs.",
    "* LeakSanitizer is conservative: a stale copy of a pointer in a register, a dead stack slot or "
    "a freed-but-unwiped buffer keeps its object \"reachable\", so it can miss leaks (stale_slot is "
    "built for that; on the other corpus programs it depends on what the compiler left behind). "
    "On dropped_list, for instance, it reports none of the 10 leaked nodes: a stale copy of a list "
    "pointer sits in a dead stack slot (with `LSAN_OPTIONS=use_stacks=0` it reports all 10). "
    "MappedTrace reads only live slots from the maps, so a stale word does not hide a leak.",
    "* Overhead: the `maps` rows are the cost of the maps alone. On this shared machine the time "
    "medians of identical binaries move by ±10 % from one run to the next (here speedtest1 under "
    "LeakSanitizer came out faster than plain): read the maps' cost from the instruction counts of "
    "benchmarks/overhead/RESULTS.md instead (SQLite +2.7 %, Lua −0.7 %, binary_trees +0.2 %). "
    "`maps+snapshot/s` pays for "
    "a Python process (`mappedtrace snapshot`) starting and copying every second on the same 2 "
    "cores: its wall time grows, the target's own CPU time much less.",
    "* LeakSanitizer's slowdown on binary_trees (pure malloc/free) is its allocator recording an "
    "allocation stack trace at every malloc (default `malloc_context_size=30`); ASan's memory on "
    "it is mostly its quarantine of freed blocks (default 256 MiB).",
    "* Valgrind is compared by block count only (it prints no addresses): a miss and a false "
    "report of the same size would cancel out.",
    "* Where MappedTrace loses: it checks from outside the process, in Python — a leak check costs "
    "seconds (the tracer table: about 9 s per million objects), where LeakSanitizer's in-process "
    "check at exit costs milliseconds; and `mappedtrace run` starts a Python tracer, which the "
    "accuracy table's timings include. The maps themselves cost little at run time (the `maps` "
    "rows); one snapshot a second costs the CPU of a Python process on a 2-core machine.",
]


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer runs (under 5 minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run ({','.join(SECTIONS)})")
    ap.add_argument("--programs", default=None, help="accuracy: programs to run (default: all, or a subset with --quick)")
    ap.add_argument("--tools", default=None, help="accuracy: tools to compare (default mappedtrace,lsan,valgrind)")
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 5; 3 with --quick)")
    ap.add_argument("--out-dir", default=str(HERE), help="where results.json, RESULTS.md, bench.png go")
    ap.add_argument("--merge", nargs="+", metavar="RESULTS_JSON",
                    help="take these runs' sections into OUT_DIR/results.json, then render")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: redraw RESULTS.md and bench.png from OUT_DIR/results.json")
    a = ap.parse_args(argv)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.merge:
        # replace sections of out_dir/results.json by those of other runs' results.json
        res = json.loads((out_dir / "results.json").read_text())
        sources = res.get("sources") or [{"sections": sorted(res["sections"]), "command": res["command"],
                                          "date": res["date"], "commit": res.get("commit", "?")}]
        for path in a.merge:
            new = json.loads(Path(path).read_text())
            for src in sources:
                src["sections"] = [s for s in src["sections"] if s not in new["sections"]]
            sources.append({"sections": sorted(new["sections"]), "command": new["command"],
                            "date": new["date"], "commit": new.get("commit", "?")})
            res["sections"].update(new["sections"])
            res["seconds"].update({k: v for k, v in new["seconds"].items() if k != "total"})
            res["machine"] = new["machine"]
            res["builds_spilled"] = new.get("builds_spilled", [])
        res["sources"] = [s for s in sources if s["sections"]]
        (out_dir / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        a.render_only = True
    if a.render_only:
        res = json.loads((out_dir / "results.json").read_text())
        (out_dir / "RESULTS.md").write_text(render(res))
        import plot
        plot.draw(res, out_dir / "bench.png")
        return 0
    only = a.only.split(",")
    for s in only:
        if s not in RUNNERS:
            ap.error(f"unknown section {s!r} (sections: {', '.join(SECTIONS)})")
    cmdline = "./bench.sh" + (" --quick" if a.quick else "") if argv is None and os.environ.get("MT_BENCH_SH") \
        else " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    res: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": a.quick, "commit": commit,
                 "command": cmdline, "machine": machine(), "sections": {}, "errors": {}, "seconds": {}}
    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-"))
    t_all = time.perf_counter()
    try:
        for s in SECTIONS:
            if s not in only:
                continue
            t0 = time.perf_counter()
            try:
                res["sections"][s] = RUNNERS[s](a, tmp)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                print(f"bench: {s} failed: {e}", file=sys.stderr, flush=True)
                res["errors"][s] = str(e)[:600]
            res["seconds"][s] = round(time.perf_counter() - t0, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    res["machine"]["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    res["builds_spilled"] = builds.spilled()
    (out_dir / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "RESULTS.md").write_text(render(res))
    try:
        import plot
        plot.draw(res, out_dir / "bench.png")
    except ImportError as e:
        print(f"bench: no plot ({e}): run benchmarks/setup.sh", file=sys.stderr)
    print(f"\nbench: wrote {out_dir / 'RESULTS.md'}, results.json, bench.png in {res['seconds']['total']:.0f} s")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
