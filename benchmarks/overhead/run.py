"""Run-time overhead of the pointer maps: ``clang-22 -O2`` against ``mappedtrace cc -O2``.

Workloads (issue #3): benchmarks/programs/binary_trees.c (allocation and
recursion), hash_table.c (chained hash table of strings), list_walk.c (a
call-free hot loop: a zero-byte loop map point), SQLite's speedtest1
(``--memdb``) and the Lua 5.4 interpreter running benchmarks/programs/bench.lua.  SQLite and Lua come
from the Debian source packages (``benchmarks/setup.sh``) and are built by
benchmarks/accuracy/builds.py, cached per pass build.

Variants: ``plain`` (clang-22 -O2, the issue's baseline), ``nopie`` (clang-22
-O2 -g -fno-pie -no-pie: what the driver adds, without the pass, so that the
pass's own cost shows apart from the non-PIE link) and ``maps`` (mappedtrace cc
-O2, the default: recorded values stay where the register allocator puts them).  With
``--spill``, the single-file workloads also get ``maps-spill``
(MAPPEDTRACE_DEOPT_IN_REGS=0: every recorded value stored to the stack at every
call), the alternative the issue asks to compare.

Every round runs each variant of each workload once, in a rotating order;
the figure is the median over rounds of the program's CPU time (user + sys,
from wait4) and of its wall time.  The CPU ratio to ``plain`` is the median of
the per-round ratios (each variant against ``plain`` of the same round, so a
slow spell of the shared machine hits both), with a distribution-free 95 %
confidence interval of that median from the order statistics (binomial).  ``--ir`` adds the instruction count of one
run under Valgrind's callgrind (deterministic: no noise from the shared
machine) at a smaller size.  Code size is the ``.text`` section; map size is
``.llvm_stackmaps`` + ``.mtmap``.

    .venv/bin/python benchmarks/overhead/run.py [--runs 7] [--ir] [--spill]
        [--only binary_trees,hash_table,list_walk,speedtest1,lua] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from math import comb
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent / "accuracy"))

import builds  # noqa: E402
from mappedtrace.formats import elf  # noqa: E402

PROGRAMS = ROOT / "benchmarks" / "programs"

#: name -> (arguments for the timed runs, arguments for the callgrind run)
WORKLOADS = {
    "binary_trees": (["17"], ["14"]),
    "hash_table": (["20"], ["2"]),
    "list_walk": (["200"], ["10"]),
    "speedtest1": (["--memdb", "--size", "50"], ["--memdb", "--size", "5"]),
    "lua": ([str(PROGRAMS / "bench.lua"), "10"], [str(PROGRAMS / "bench.lua"), "1"]),
}


def build(workload: str, variant: str) -> Path:
    """The executable of *workload* built as *variant* (plain, maps or maps-spill)."""
    if workload == "speedtest1":
        return builds.speedtest1(variant)
    if workload == "lua":
        return builds.lua(variant)
    src = PROGRAMS / "binary_trees.c" if workload == "binary_trees" else HERE / f"{workload}.c"
    if variant == "maps-spill":
        out = builds.vdir("maps") / "spill" / workload
        out.parent.mkdir(parents=True, exist_ok=True)
        if not builds._fresh(out, [src]):
            env = dict(os.environ, MAPPEDTRACE_DEOPT_IN_REGS="0")
            subprocess.run([*builds.compiler("maps"), "-o", str(out), str(src)], check=True, env=env)
        return out
    return builds.build_c(variant, [src], builds.vdir(variant) / "overhead" / workload)


def sizes(exe: Path) -> dict[str, int]:
    secs = {name: size for name, _addr, _off, size, _flags, _type in elf.section_headers(str(exe))}
    return {"text": secs.get(".text", 0),
            "maps": secs.get(".llvm_stackmaps", 0) + secs.get(".mtmap", 0)}


def run_once(exe: Path, args: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run; output discarded."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{exe} {' '.join(args)} exited with {p.returncode}")
    return ru.ru_utime + ru.ru_stime, wall


def instructions(exe: Path, args: list[str]) -> int | None:
    """Instructions executed by one run under callgrind (None without valgrind).

    Debug info is stripped from a copy first: this Valgrind cannot read the
    DWARF 5 that clang-22 writes for the maps builds."""
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / exe.name
        subprocess.run(["llvm-objcopy-22", "--strip-debug", str(exe), str(copy)], check=True)
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out",
                            str(copy), *args], capture_output=True, text=True, timeout=1800)
        m = re.search(r"Collected : (\d+)", r.stderr)
        return int(m.group(1)) if m else None


def median_ci(xs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median of *xs*.

    The interval between order statistics k and n+1-k covers the median with
    probability 1 - 2·P(Binomial(n, 1/2) < k); k is the largest rank that keeps
    that at least *level*.  Fewer than 6 values give (min, max)."""
    ys = sorted(xs)
    n = len(ys)
    cdf, k = 0.0, 0
    while True:
        cdf += comb(n, k) / 2 ** n          # P(B <= k)
        if 2 * cdf > 1 - level or k + 1 > n // 2:
            break
        k += 1
    # P(B < k) = P(B <= k-1) is the last value under the bound: rank k (1-based)
    return (ys[k - 1], ys[n - k]) if k >= 1 else (ys[0], ys[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds (each runs every variant once)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--spill", action="store_true", help="add maps-spill for the single-file workloads")
    ap.add_argument("--ir", action="store_true", help="also count instructions under callgrind")
    ap.add_argument("--json", default=str(HERE / "results.json"), help="write the figures here")
    a = ap.parse_args()
    names = [w for w in a.only.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    jobs: list[tuple[str, str, Path]] = []
    for w in names:
        for v in ("plain", "nopie", "maps") + (("maps-spill",) if a.spill and w not in ("speedtest1", "lua") else ()):
            print(f"building {w} ({v})…", file=sys.stderr, flush=True)
            jobs.append((w, v, build(w, v)))
    cpu: dict[tuple[str, str], list[float]] = {(w, v): [] for w, v, _ in jobs}
    wall: dict[tuple[str, str], list[float]] = {(w, v): [] for w, v, _ in jobs}
    for r in range(a.runs):
        k = r % len(jobs)
        for w, v, exe in jobs[k:] + jobs[:k]:
            c, t = run_once(exe, WORKLOADS[w][0])
            cpu[(w, v)].append(c)
            wall[(w, v)].append(t)
    load = os.getloadavg()[0]
    rows = []
    for w, v, exe in jobs:
        s = sizes(exe)
        row = {"workload": w, "variant": v, "args": WORKLOADS[w][0], "exe": str(exe),
               "cpu_s": cpu[(w, v)], "wall_s": wall[(w, v)],
               "cpu_median": statistics.median(cpu[(w, v)]), "wall_median": statistics.median(wall[(w, v)]),
               "text_bytes": s["text"], "map_bytes": s["maps"]}
        if a.ir:
            row["ir_args"] = WORKLOADS[w][1]
            row["instructions"] = instructions(exe, WORKLOADS[w][1])
        rows.append(row)
    base = {r["workload"]: r for r in rows if r["variant"] == "plain"}
    nopie = {r["workload"]: r for r in rows if r["variant"] == "nopie"}
    print(f"\nload average {load:.1f}; {a.runs} rounds; medians; ratio = variant / plain "
          f"(in brackets: / nopie); CPU × is the median of per-round ratios, with its 95 % interval\n")
    print("| workload | variant | CPU s | CPU × | CPU × 95 % | wall s | wall × |" + (" instructions × |" if a.ir else "")
          + " .text bytes | .text × | map bytes |")
    print("| --- | --- | ---: | ---: | :---: | ---: | ---: |" + (" ---: |" if a.ir else "") + " ---: | ---: | ---: |")
    for r in rows:
        b = base[r["workload"]]
        paired = [c / cb for c, cb in zip(r["cpu_s"], b["cpu_s"])]
        r["cpu_ratio"] = statistics.median(paired)
        r["cpu_ratio_ci95"] = median_ci(paired)
        r["wall_ratio"] = r["wall_median"] / b["wall_median"]
        r["text_ratio"] = r["text_bytes"] / b["text_bytes"]
        n = nopie[r["workload"]]
        r["cpu_ratio_nopie"] = statistics.median(c / cn for c, cn in zip(r["cpu_s"], n["cpu_s"]))
        ir = ""
        if a.ir:
            r["ir_ratio"] = (r["instructions"] / b["instructions"]
                             if r.get("instructions") and b.get("instructions") else None)
            r["ir_ratio_nopie"] = (r["instructions"] / n["instructions"]
                                   if r.get("instructions") and n.get("instructions") else None)
            ir = (f" {r['ir_ratio']:.3f} ({r['ir_ratio_nopie']:.3f}) |" if r["ir_ratio"] and r["ir_ratio_nopie"]
                  else " – |")
        print(f"| {r['workload']} `{' '.join(Path(x).name if '/' in x else x for x in r['args'])}` | "
              f"{r['variant']} | {r['cpu_median']:.3f} | {r['cpu_ratio']:.3f} ({r['cpu_ratio_nopie']:.3f}) | "
              f"{r['cpu_ratio_ci95'][0]:.3f}–{r['cpu_ratio_ci95'][1]:.3f} | "
              f"{r['wall_median']:.3f} | {r['wall_ratio']:.3f} |{ir} {r['text_bytes']} | {r['text_ratio']:.2f} | "
              f"{r['map_bytes']} |")
    Path(a.json).write_text(json.dumps({"load_average": load, "runs": a.runs, "rows": rows}, indent=1) + "\n")
    print(f"\nwritten: {a.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
