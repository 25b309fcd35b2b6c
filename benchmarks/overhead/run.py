"""Run-time overhead of the pointer maps: ``clang-22 -O2`` against ``mappedtrace cc -O2``.

Workloads (issue #3): benchmarks/programs/binary_trees.c (allocation and
recursion), hash_table.c (chained hash table of strings), list_walk.c (a
call-free hot loop: a zero-byte loop map point), SQLite's speedtest1
(``--memdb``) and the Lua 5.4 interpreter running benchmarks/programs/bench.lua.  SQLite and Lua come
from the Debian source packages (``benchmarks/setup.sh``) and are built by
benchmarks/accuracy/builds.py, cached per pass build.

The Debian programs of benchmarks/soundness/debian.py (issue #18: bzip2, gzip,
xz, zstd, lz4, ncompress, gawk, bc; the list the soundness suite shares) run
their workloads there too: ``plain`` (clang-22 -O2 -gdwarf-4) against ``maps``
(mappedtrace cc -O2 -gdwarf-4), one row per workload (compress and decompress
apart).  ``--suite`` runs only those, ``--results`` rewrites the generated part
of RESULTS.md: every row worst first, mean and geometric mean, the functions
that grew most in the worst row (callgrind's per-function counts), and the
size table.

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
``.mtstack`` + ``.llvm_stackmaps`` + ``.mtmap`` + ``.mttypes`` (+ ``.mtsites``).  ``--sizes-only``
builds the Debian programs, Redis, SQLite, Lua and jq (each by the recipe it
already has) and reports those sizes alone (no run).

    .venv/bin/python benchmarks/overhead/run.py [--runs 7] [--ir] [--spill]
        [--only binary_trees,hash_table,list_walk,speedtest1,lua,bzip2,gawk,…] [--json FILE]
    .venv/bin/python benchmarks/overhead/run.py --suite --ir --results [--runs 5]
    .venv/bin/python benchmarks/overhead/run.py --sizes-only [--only gawk,redis,sqlite,…] [--results]
    .venv/bin/python benchmarks/overhead/run.py --redis --runs 5 [--results]
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
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent / "accuracy"))
sys.path.insert(0, str(HERE.parent / "soundness"))

import builds  # noqa: E402
import debian  # noqa: E402
import programs  # noqa: E402
import soundness  # noqa: E402
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


#: the map sections: compact stack maps (the pass's default), LLVM's stack maps
#: (older builds, or MAPPEDTRACE_LLVM_STACKMAPS=1), frames/globals (and types before
#: .mtmap version 4), the type records of version 4, allocation sites
MAP_SECTIONS = (".mtstack", ".llvm_stackmaps", ".mtmap", ".mttypes", ".mtsites")


def sizes(exe: Path) -> dict[str, int]:
    secs = {name: size for name, _addr, _off, size, _flags, _type in elf.section_headers(str(exe))}
    stack = secs.get(".mtstack", 0) + secs.get(".llvm_stackmaps", 0)
    return {"text": secs.get(".text", 0), "stackmaps": stack, "mtstack": secs.get(".mtstack", 0),
            "llvm_stackmaps": secs.get(".llvm_stackmaps", 0), "mtmap": secs.get(".mtmap", 0),
            "mttypes": secs.get(".mttypes", 0),
            "mtsites": secs.get(".mtsites", 0), "maps": sum(secs.get(n, 0) for n in MAP_SECTIONS)}


def function_sizes(exe: Path) -> dict[str, int]:
    """Bytes of code per function of ``exe`` (``STT_FUNC`` symbols in ``.text``, from
    ``.symtab``; static functions of one name in several files are summed)."""
    from elftools.elf.elffile import ELFFile
    out: dict[str, int] = {}
    with open(exe, "rb") as f:
        e = ELFFile(f)
        text = next((i for i, sec in enumerate(e.iter_sections()) if sec.name == ".text"), None)
        symtab = e.get_section_by_name(".symtab")
        if symtab is None or text is None:
            return out
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] == text and sym["st_size"]:
                out[sym.name] = out.get(sym.name, 0) + sym["st_size"]
    return out


#: functions the pass adds (calls to varargs functions go through them)
THUNK_PREFIX = "__mappedtrace_va_thunk"


def code_growth(plain: Path, maps: Path, n: int = 8) -> dict:
    """Where the maps build's ``.text`` grew: the ``n`` functions that grew most
    (bytes), the bytes of the pass's varargs thunks, and the net change over the
    functions both builds have, those only one has (inlined differently) apart."""
    a, b = function_sizes(plain), function_sizes(maps)
    both = set(a) & set(b)
    thunks = {f: z for f, z in b.items() if f.startswith(THUNK_PREFIX)}
    grew = sorted(((f, a[f], b[f]) for f in both), key=lambda r: r[1] - r[2])[:n]
    return {"functions_plain": len(a), "functions_maps": len(b),
            "common_plain": sum(a[f] for f in both), "common_maps": sum(b[f] for f in both),
            "only_plain": sum(z for f, z in a.items() if f not in b),
            "only_maps": sum(z for f, z in b.items() if f not in a and f not in thunks),
            "thunks": len(thunks), "thunk_bytes": sum(thunks.values()),
            "grew": [{"function": f, "plain": x, "maps": y} for f, x, y in grew]}


def call_sites(exe: Path) -> int:
    """Stack map records of the MappedTrace pass in ``exe`` (call sites and loop points)."""
    from mappedtrace.formats.maps import BinaryMaps
    m = BinaryMaps.load(str(exe))
    return sum(1 for t in m.tables for r in t.records if r.id >> 48 == 0x4D54)


SIZES_BEGIN, SIZES_END = "<!-- sizes:begin (written by run.py --sizes-only --results) -->", "<!-- sizes:end -->"


def _log(m: str) -> None:
    print(m, file=sys.stderr, flush=True)


def _soundness_builds(name: str) -> Callable[[], dict[str, Path]]:
    """plain and maps executables of a program of the soundness suite
    (benchmarks/soundness/programs.py: its recipe and build cache)."""
    recipe, recipe_id = {"redis": (programs._redis_recipe, programs.REDIS_RECIPE),
                         "jq": (programs._jq_recipe, programs.JQ_RECIPE)}[name]

    def exes() -> dict[str, Path]:
        src = soundness.source_tree(name)
        return {v: soundness.build(name, b, recipe, src, recipe_id, _log) for v, b in SUITE_VARIANTS.items()}
    return exes


def _accuracy_builds(build_fn: Callable[[str], Path]) -> Callable[[], dict[str, Path]]:
    """plain and maps executables of SQLite's speedtest1 or Lua (benchmarks/accuracy/builds.py)."""
    def exes() -> dict[str, Path]:
        try:
            return {v: build_fn(v) for v in ("plain", "maps")}
        except RuntimeError as e:       # sources missing: benchmarks/setup.sh not run
            raise debian.Unavailable(str(e).splitlines()[0]) from None
    return exes


#: programs measured by --sizes-only beside the Debian suite, each built by the
#: recipe it already has (no second recipe): Redis and jq from the soundness
#: suite (Debian sources, clang-22 -O2 -gdwarf-4 against mappedtrace cc), SQLite
#: (speedtest1 + the amalgamation) and Lua from benchmarks/accuracy/builds.py
#: (clang-22 -O2 against mappedtrace cc -O2)
SIZE_EXTRAS: dict[str, Callable[[], dict[str, Path]]] = {
    "redis": _soundness_builds("redis"),
    "sqlite": _accuracy_builds(builds.speedtest1),
    "lua": _accuracy_builds(builds.lua),
    "jq": _soundness_builds("jq"),
}


def size_builds(name: str) -> dict[str, Path]:
    """{"plain": exe, "maps": exe} of a Debian program or of :data:`SIZE_EXTRAS`."""
    if name in SIZE_EXTRAS:
        return SIZE_EXTRAS[name]()
    return {v: debian.PROGRAMS[name].build(b, _log) for v, b in SUITE_VARIANTS.items()}


def sizes_only(names: list[str], results: bool, argv: str) -> int:
    """Build each program plain and with the maps (cached), print each map
    section's bytes against ``.text``; with ``results``, write the table into
    RESULTS.md between the sizes markers.  No workload runs."""
    rows = []
    for name in names:
        try:
            exes = size_builds(name)
        except debian.Unavailable as e:
            print(f"{name}: left out: {e}", file=sys.stderr)
            continue
        p, m = sizes(exes["plain"]), sizes(exes["maps"])
        rows.append({"program": name, "text_plain": p["text"], "text_maps": m["text"], **m,
                     "records": call_sites(exes["maps"]), "exe": str(exes["maps"]),
                     "growth": code_growth(exes["plain"], exes["maps"])})
    if not rows:
        print("nothing built", file=sys.stderr)
        return 1
    rows.sort(key=lambda r: -r["maps"] / r["text_maps"])
    L = [SIZES_BEGIN, "",
         f"`PYTHONPATH=. .venv/bin/python benchmarks/overhead/run.py {argv}` — "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (sizes of the executables: the Debian suite, "
         "Redis's `redis-server`, SQLite's `speedtest1` with the amalgamation, Lua's `lua`, jq's `jq`; "
         "maps = every map section: `.mtstack` + `.llvm_stackmaps` + `.mtmap` + `.mttypes` + `.mtsites`; "
         "goal ≤ 50 % of `.text`).", "",
         "| program | .text plain | .text maps | .text × | records | .mtstack | B / record | .llvm_stackmaps "
         "| .mtmap | .mttypes | maps | maps / .text | .mtstack / .text | .mtmap + .mttypes / .text |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        t = r["text_maps"]
        L.append(f"| {r['program']} | {r['text_plain']:,} | {t:,} | {t / r['text_plain']:.3f} | {r['records']:,} | "
                 f"{r['mtstack']:,} | {r['stackmaps'] / max(r['records'], 1):.1f} | {r['llvm_stackmaps']:,} | "
                 f"{r['mtmap']:,} | {r.get('mttypes', 0):,} | {r['maps']:,} | {r['maps'] / t * 100:.1f} % | "
                 f"{r['stackmaps'] / t * 100:.0f} % | {(r['mtmap'] + r.get('mttypes', 0)) / t * 100:.0f} % |")
    L += ["", f"maps / .text: geometric mean {geomean([r['maps'] / r['text_maps'] for r in rows]) * 100:.0f} %, "
              f"worst {rows[0]['maps'] / rows[0]['text_maps'] * 100:.0f} % ({rows[0]['program']}); stack maps "
              f"{geomean([r['stackmaps'] / max(r['records'], 1) for r in rows]):.1f} bytes per record (geometric mean).",
          "", "Where the code grew (functions by `.symtab` size, pyelftools; code goal ≤ ×1.10): the functions "
              "both builds have, those only one has (inlined differently), the pass's varargs thunks, and the "
              "function that grew most.", "",
          "| program | .text × | common functions plain → maps | only plain | only maps | thunks | grew most |",
          "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in sorted(rows, key=lambda r: -r["text_maps"] / r["text_plain"]):
        g = r["growth"]
        top = g["grew"][0] if g["grew"] else None
        most = (f"`{top['function']}` {top['plain']:,} → {top['maps']:,}" if top else "–")
        L.append(f"| {r['program']} | {r['text_maps'] / r['text_plain']:.3f} | {g['common_plain']:,} → "
                 f"{g['common_maps']:,} ({g['common_maps'] / max(g['common_plain'], 1):.3f}) | {g['only_plain']:,} | "
                 f"{g['only_maps']:,} | {g['thunks']} ({g['thunk_bytes']:,} B) | {most} |")
    L += ["", f"Code: geometric mean ×{geomean([r['text_maps'] / r['text_plain'] for r in rows]):.3f}, worst "
              f"×{max(r['text_maps'] / r['text_plain'] for r in rows):.3f}.", "", SIZES_END]
    print("\n".join(L[2:-2]))
    (HERE / "sizes.json").write_text(json.dumps(rows, indent=1) + "\n")
    if results:
        path = HERE / "RESULTS.md"
        text = path.read_text()
        if SIZES_BEGIN in text and SIZES_END in text:
            text = text[:text.index(SIZES_BEGIN)] + "\n".join(L) + text[text.index(SIZES_END) + len(SIZES_END):]
        else:
            text = text.rstrip("\n") + "\n\n## Map sizes (issue #18 item 3)\n\n" + "\n".join(L) + "\n"
        path.write_text(text)
        print(f"written: {path}", file=sys.stderr)
    return 0


#: where the suite's inputs and callgrind out files go (outside the repository)
WORK = Path(os.environ.get("MAPPEDTRACE_OVERHEAD_WORK", Path.home() / ".cache" / "mappedtrace" / "overhead"))
#: corpus bytes of the timed runs and of the callgrind runs of the Debian programs
SUITE_SIZE, SUITE_IR_SIZE = 4 << 20, 256 << 10
#: the Debian programs' variants: this script's name -> the build's (debian.py)
SUITE_VARIANTS = {"plain": "plain", "maps": "mt"}


def run_once(cmd: Cmd) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run; output discarded."""
    argv, stdin = cmd
    t0 = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
        p = subprocess.Popen(argv, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {p.returncode}")
    return ru.ru_utime + ru.ru_stime, wall


#: callgrind's out file: "summary: N" (or "totals: N") is the instruction count of the run
_CG_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)


def callgrind(cmd: Cmd, out: Path) -> int | None:
    """Instructions executed by one run under callgrind (None without valgrind),
    counted from the out file ``out``, which is kept for :func:`per_function`.

    Debug info is stripped from a copy first: this Valgrind cannot read the
    DWARF 5 that clang-22 writes by default (the symbol table stays, so the
    per-function counts keep their names)."""
    if not shutil.which("valgrind"):
        return None
    argv, stdin = cmd
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / Path(argv[0]).name
        subprocess.run(["llvm-objcopy-22", "--strip-debug", argv[0], str(copy)], check=True)
        with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
            r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(copy), *argv[1:]],
                               stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               errors="replace", timeout=1800)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"callgrind {' '.join(argv)} failed ({r.returncode}): {r.stderr[-800:]}")
    m = _CG_TOTAL.search(out.read_text(errors="replace"))
    return int(m.group(1)) if m else None


def instructions(exe: Path, args: list[str]) -> int | None:
    """Instructions of ``exe ARGS`` under callgrind (the out file is thrown away)."""
    with tempfile.TemporaryDirectory() as d:
        return callgrind(([str(exe), *args], None), Path(d) / "cg.out")


#: one line of ``callgrind_annotate``: "12,345 (1.2%)  file:function [object]"
_CG_FN = re.compile(r"^\s*([\d,]+)\s+(?:\([\d.]+%\)\s+)?(\S.*?)(?:\s+\[[^\]]*\])?$")


def _symbolizer(exe: Path | None):
    """A function naming an address by the executable's symbol table (``nm -n``):
    callgrind leaves some functions as bare addresses (zstd's assembly loops in the
    maps build), which would not match between two builds."""
    import bisect
    syms: list[tuple[int, str]] = []
    if exe is not None and shutil.which("nm"):
        r = subprocess.run(["nm", "-n", "--defined-only", str(exe)], capture_output=True, text=True, timeout=120)
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "tTwW":
                syms.append((int(f[0], 16), f[2]))
    starts = [a for a, _ in syms]

    def name(n: str) -> str:
        if not n.startswith("0x") or not syms:
            return n
        k = bisect.bisect_right(starts, int(n, 16)) - 1
        return syms[k][1] if k >= 0 else n
    return name


def per_function(out: Path, exe: Path | None = None) -> dict[str, int]:
    """Self instructions per function of a callgrind out file (``callgrind_annotate``),
    bare addresses named from ``exe``'s symbols."""
    name = _symbolizer(exe)
    r = subprocess.run(["callgrind_annotate", "--threshold=100", str(out)], capture_output=True, text=True,
                       errors="replace", timeout=600)
    fns: dict[str, int] = {}
    started = False
    for line in r.stdout.splitlines():
        if "file:function" in line:
            started = True
            continue
        m = _CG_FN.match(line) if started else None
        if m:
            fn = name(m.group(2).split(":", 1)[-1])
            fns[fn] = fns.get(fn, 0) + int(m.group(1).replace(",", ""))
    return fns


def grew_most(plain_out: Path, maps_out: Path, plain_exe: Path | None = None, maps_exe: Path | None = None,
              n: int = 8) -> list[tuple[str, int, int]]:
    """The ``n`` functions whose self instruction count grew most from plain to
    maps: (function, plain, maps)."""
    a, b = per_function(plain_out, plain_exe), per_function(maps_out, maps_exe)
    rows = [(f, a.get(f, 0), b.get(f, 0)) for f in set(a) | set(b)]
    return sorted(rows, key=lambda r: r[1] - r[2])[:n]


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


def toy_jobs(names: list[str], spill: bool) -> list[dict]:
    """The single-file and SQLite/Lua workloads: plain, nopie, maps (and maps-spill)."""
    jobs = []
    for w in names:
        for v in ("plain", "nopie", "maps") + (("maps-spill",) if spill and w not in ("speedtest1", "lua") else ()):
            print(f"building {w} ({v})…", file=sys.stderr, flush=True)
            exe = build(w, v)
            jobs.append({"workload": w, "variant": v, "exe": exe, "args": WORKLOADS[w][0],
                         "cmd": ([str(exe), *WORKLOADS[w][0]], None), "ir_args": WORKLOADS[w][1],
                         "ir_cmd": ([str(exe), *WORKLOADS[w][1]], None)})
    return jobs


def suite_jobs(progs: list, size: int = SUITE_SIZE, ir_size: int = SUITE_IR_SIZE) -> list[dict]:
    """The Debian programs' workloads (benchmarks/soundness/debian.py), plain and maps.
    A program whose sources are missing is left out with a line on stderr."""
    jobs = []
    for prog in progs:
        try:
            exes = {v: prog.build(b, lambda m: print(m, file=sys.stderr, flush=True))
                    for v, b in SUITE_VARIANTS.items()}
        except debian.Unavailable as e:
            print(f"{prog.name}: left out: {e}", file=sys.stderr)
            continue
        files = debian.inputs(prog, size, WORK / "inputs", exes["plain"])
        ir_files = debian.inputs(prog, ir_size, WORK / "inputs", exes["plain"])
        for wl in prog.workloads:
            for v, exe in exes.items():
                cmd, ir_cmd = wl.command(exe, files), wl.command(exe, ir_files)
                jobs.append({"workload": f"{prog.name} {wl.name}", "variant": v, "exe": exe,
                             "args": [*wl.args] + ([f"< {wl.stdin}"] if wl.stdin else []),
                             "cmd": cmd, "ir_cmd": ir_cmd, "suite": True,
                             "input_bytes": size, "ir_input_bytes": ir_size})
    return jobs


def geomean(xs: list[float]) -> float:
    import math
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


#: redis-benchmark's tests, requests per test and pipeline depth (--redis)
REDIS_TESTS, REDIS_REQUESTS, REDIS_PIPELINE = "set,get,incr,lpush,lpop,sadd,hset,zadd", 1000000, 16
REDIS_BEGIN, REDIS_END = "<!-- redis:begin (written by run.py --redis --results) -->", "<!-- redis:end -->"


def redis_throughput(runs: int) -> dict:
    """Requests per second of Redis 7.0.15 built plain and with the maps (the
    soundness suite's builds), each server loaded with 2 000 keys of each type
    (programs.redis_load) and measured by the plain build's ``redis-benchmark``
    (50 parallel clients, pipelined): every round runs every test on both
    servers, in alternating order; medians over rounds, ratio maps / plain."""
    import csv
    import io
    exes = SIZE_EXTRAS["redis"]()
    bench = exes["plain"].with_name("redis-benchmark")
    procs, ports = {}, {}
    rps: dict[tuple[str, str], list[float]] = {}
    try:
        for v, exe in exes.items():
            ports[v] = soundness.free_port()
            procs[v] = programs._redis_start([str(exe)], exe, ports[v], 2000)
        for r in range(runs):
            for v in (list(exes) if r % 2 == 0 else list(exes)[::-1]):
                out = subprocess.run([str(bench), "-p", str(ports[v]), "-t", REDIS_TESTS, "-n", str(REDIS_REQUESTS),
                                      "-P", str(REDIS_PIPELINE), "-q", "--csv"], capture_output=True, text=True,
                                     timeout=900, check=True).stdout
                for row in csv.reader(io.StringIO(out)):
                    if len(row) >= 2 and row[0] != "test":
                        rps.setdefault((row[0], v), []).append(float(row[1]))
    finally:
        for v, p in procs.items():
            programs._redis_cli(exes[v], ports[v], "SHUTDOWN", "NOSAVE")
            soundness.stop(p)
    tests = list(dict.fromkeys(t for t, _ in rps))
    rows = [{"test": t, "plain": statistics.median(rps[(t, "plain")]), "maps": statistics.median(rps[(t, "maps")]),
             "plain_all": rps[(t, "plain")], "maps_all": rps[(t, "maps")]} for t in tests]
    for row in rows:
        # each round's maps figure against the same round's plain one (a busy
        # spell of the shared machine hits both), median and its 95 % interval
        paired = [m / p for m, p in zip(row["maps_all"], row["plain_all"])]
        row["ratio"], row["ratio_ci95"] = statistics.median(paired), median_ci(paired)
    doc = {"runs": runs, "load_average": os.getloadavg()[0], "rows": rows,
           "geomean": geomean([row["ratio"] for row in rows]), "exes": {v: str(e) for v, e in exes.items()}}
    doc["instructions"] = {v: redis_instructions(e, exes["plain"]) for v, e in exes.items()}
    return doc


#: keys of each type that the callgrind run loads (programs.redis_load: 6 commands a key, and TTLs)
REDIS_IR_KEYS = 20000


def redis_instructions(exe: Path, plain: Path) -> int | None:
    """Instructions ``redis-server`` executes (callgrind) from its start to
    ``SHUTDOWN NOSAVE``, loading :data:`REDIS_IR_KEYS` keys of each type through
    the plain build's ``redis-cli --pipe``: a fixed RESP stream, so the count
    hardly depends on the machine's load (only on how reads split the stream)."""
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory() as d:
        copy, out = Path(d) / "redis-server", Path(d) / "cg.out"
        subprocess.run(["llvm-objcopy-22", "--strip-debug", str(exe), str(copy)], check=True)
        port = soundness.free_port()
        p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(copy),
                              "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--daemonize", "no", "--protected-mode", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            soundness.wait_port(port, p, timeout=300)
            res = programs._redis_cli(plain, port, "--pipe", stdin=programs.redis_load(REDIS_IR_KEYS))
            if "errors: 0" not in res:
                raise RuntimeError(f"loading Redis under callgrind failed: {res[-300:]}")
        finally:
            programs._redis_cli(plain, port, "SHUTDOWN", "NOSAVE")
            soundness.stop(p)
        m = _CG_TOTAL.search(out.read_text(errors="replace")) if out.exists() else None
        return int(m.group(1)) if m else None


def write_redis_results(doc: dict, argv: str) -> None:
    """The Redis throughput table of RESULTS.md, between its markers."""
    L = [REDIS_BEGIN, "",
         f"`PYTHONPATH=. .venv/bin/python benchmarks/overhead/run.py {argv}` — "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {doc['runs']} rounds (both servers in every "
         f"round, alternating order), load average {doc['load_average']:.1f} at the end; `redis-benchmark -n "
         f"{REDIS_REQUESTS} -P {REDIS_PIPELINE}` (50 clients), requests per second, medians.", "",
         "| test | plain | maps | maps / plain (median of per-round ratios) | 95 % interval |",
         "| --- | ---: | ---: | ---: | ---: |"]
    for r in sorted(doc["rows"], key=lambda r: r["ratio"]):
        lo, hi = r["ratio_ci95"]
        L.append(f"| {r['test']} | {r['plain']:,.0f} | {r['maps']:,.0f} | **{r['ratio']:.3f}** | {lo:.2f}–{hi:.2f} |")
    worst = min(doc["rows"], key=lambda r: r["ratio"])
    L += ["", f"Throughput maps / plain: geometric mean ×{doc['geomean']:.3f}, worst ×{worst['ratio']:.3f} "
              f"({worst['test']})."]
    ir = doc.get("instructions") or {}
    if ir.get("plain") and ir.get("maps"):
        L += ["", f"Instructions of `redis-server` from start to `SHUTDOWN`, loading {REDIS_IR_KEYS:,} keys of each "
                  f"of six types (`redis-cli --pipe`, callgrind): plain {ir['plain']:,}, maps {ir['maps']:,}, "
                  f"**×{ir['maps'] / ir['plain']:.3f}**."]
    L += ["", REDIS_END]
    print("\n".join(L[2:-2]))
    path = HERE / "RESULTS.md"
    text = path.read_text()
    if REDIS_BEGIN in text and REDIS_END in text:
        text = text[:text.index(REDIS_BEGIN)] + "\n".join(L) + text[text.index(REDIS_END) + len(REDIS_END):]
    else:
        text = text.rstrip("\n") + "\n\n## Redis throughput (issue #18)\n\n" + "\n".join(L) + "\n"
    path.write_text(text)
    print(f"written: {path}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds (each runs every variant once)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated workloads ({', '.join(WORKLOADS)}) and Debian programs "
                         f"({', '.join(debian.PROGRAMS)}); default: the workloads above, --suite: the programs")
    ap.add_argument("--suite", action="store_true", help="the Debian programs (all, or those in --only)")
    ap.add_argument("--spill", action="store_true", help="add maps-spill for the single-file workloads")
    ap.add_argument("--ir", action="store_true", help="also count instructions under callgrind")
    ap.add_argument("--json", default=None, help="write the figures here (default: results.json, "
                                                "--suite: suite.json beside this script)")
    ap.add_argument("--results", action="store_true",
                    help="rewrite the generated section of RESULTS.md from these figures (with --suite)")
    ap.add_argument("--sizes-only", action="store_true",
                    help="build the Debian programs (all, or those in --only) and report the map sections' "
                         "sizes only, no run (with --results: the sizes table of RESULTS.md)")
    ap.add_argument("--redis", action="store_true",
                    help="Redis's throughput, plain against maps (redis-benchmark, --runs rounds); no other run")
    a = ap.parse_args()
    if a.redis:
        doc = redis_throughput(a.runs)
        (HERE / "redis.json").write_text(json.dumps(doc, indent=1) + "\n")
        if a.results:
            write_redis_results(doc, " ".join(sys.argv[1:]))
        else:
            for r in doc["rows"]:
                print(f"{r['test']}: plain {r['plain']:,.0f}/s, maps {r['maps']:,.0f}/s, ×{r['ratio']:.3f} "
                      f"({r['ratio_ci95'][0]:.2f}–{r['ratio_ci95'][1]:.2f})")
            print(f"geometric mean ×{doc['geomean']:.3f}; instructions {doc['instructions']}")
        return 0
    if a.sizes_only:
        names = [w for w in (a.only or "").split(",") if w]
        known = [*debian.PROGRAMS, *SIZE_EXTRAS]
        bad = [w for w in names if w not in known]
        if bad:
            ap.error(f"--sizes-only measures {', '.join(known)}; not {bad}")
        return sizes_only(names or known, a.results, " ".join(sys.argv[1:]))
    names = [w for w in (a.only or ("" if a.suite else ",".join(WORKLOADS))).split(",") if w]
    for w in names:
        if w not in WORKLOADS and w not in debian.PROGRAMS:
            ap.error(f"unknown workload {w!r} (known: {', '.join([*WORKLOADS, *debian.PROGRAMS])})")
    progs = [debian.PROGRAMS[w] for w in names if w in debian.PROGRAMS] or (
        list(debian.PROGRAMS.values()) if a.suite else [])
    jobs = toy_jobs([w for w in names if w in WORKLOADS], a.spill) + suite_jobs(progs)
    if not jobs:
        ap.error("nothing to measure")
    key = [(j["workload"], j["variant"]) for j in jobs]
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in key}
    wall: dict[tuple[str, str], list[float]] = {k: [] for k in key}
    for r in range(a.runs):
        # interleaved: every round runs every variant once, in a rotating order
        k = r % len(jobs)
        for j in jobs[k:] + jobs[:k]:
            c, t = run_once(j["cmd"])
            cpu[(j["workload"], j["variant"])].append(c)
            wall[(j["workload"], j["variant"])].append(t)
    load = os.getloadavg()[0]
    rows = []
    for j in jobs:
        w, v, exe = j["workload"], j["variant"], j["exe"]
        s = sizes(exe)
        row = {"workload": w, "variant": v, "args": j["args"], "exe": str(exe),
               "cpu_s": cpu[(w, v)], "wall_s": wall[(w, v)],
               "cpu_median": statistics.median(cpu[(w, v)]), "wall_median": statistics.median(wall[(w, v)]),
               "text_bytes": s["text"], "map_bytes": s["maps"], "stackmaps_bytes": s["stackmaps"],
               "mtmap_bytes": s["mtmap"] + s["mttypes"], "suite": j.get("suite", False)}
        for f in ("input_bytes", "ir_input_bytes"):
            if f in j:
                row[f] = j[f]
        if a.ir:
            row["ir_args"] = j["ir_cmd"][0][1:]
            if j.get("suite"):
                out = WORK / "callgrind" / f"{w.replace(' ', '-')}.{v}.out"
                row["instructions"] = callgrind(j["ir_cmd"], out)
                row["callgrind_out"] = str(out)
            else:
                row["instructions"] = callgrind(j["ir_cmd"], WORK / "callgrind" / f"{w}.{v}.out")
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
        n = nopie.get(r["workload"], b)
        paired = [c / cb for c, cb in zip(r["cpu_s"], b["cpu_s"])]
        r["cpu_ratio"] = statistics.median(paired)
        r["cpu_ratio_ci95"] = median_ci(paired)
        r["wall_ratio"] = r["wall_median"] / b["wall_median"]
        r["text_ratio"] = r["text_bytes"] / b["text_bytes"]
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
    out = Path(a.json or HERE / ("suite.json" if a.suite else "results.json"))
    doc = {"load_average": load, "runs": a.runs, "rows": rows}
    suite = [r for r in rows if r.get("suite")]
    if suite and a.ir:
        doc["worst"] = worst_explained(suite)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nwritten: {out}", file=sys.stderr)
    if a.results:
        if not (suite and a.ir):
            ap.error("--results needs --suite and --ir")
        write_results(doc, " ".join(sys.argv[1:]))
    return 0


def worst_explained(rows: list[dict]) -> dict:
    """The maps row with the highest instruction ratio, and the functions that grew
    most there (from the two callgrind out files)."""
    maps = [r for r in rows if r["variant"] == "maps" and r.get("ir_ratio")]
    w = max(maps, key=lambda r: r["ir_ratio"])
    plain = next(r for r in rows if r["workload"] == w["workload"] and r["variant"] == "plain")
    grew = grew_most(Path(plain["callgrind_out"]), Path(w["callgrind_out"]), Path(plain["exe"]), Path(w["exe"]))
    return {"workload": w["workload"], "ir_ratio": w["ir_ratio"], "plain_instructions": plain["instructions"],
            "maps_instructions": w["instructions"],
            "grew": [{"function": f, "plain": a, "maps": b} for f, a, b in grew]}


BEGIN, END = "<!-- suite:begin (written by run.py --suite --results) -->", "<!-- suite:end -->"


def write_results(doc: dict, argv: str) -> None:
    """Rewrite the generated section of RESULTS.md: the suite table worst first,
    mean and geometric mean, the worst row's functions, the size table."""
    rows = [r for r in doc["rows"] if r.get("suite")]
    maps = sorted((r for r in rows if r["variant"] == "maps"), key=lambda r: -(r.get("ir_ratio") or 0))
    plain = {r["workload"]: r for r in rows if r["variant"] == "plain"}
    irs = [r["ir_ratio"] for r in maps if r.get("ir_ratio")]
    cpus = [r["cpu_ratio"] for r in maps]
    L = [BEGIN, "",
         f"`.venv/bin/python benchmarks/overhead/run.py {argv}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{doc['runs']} interleaved rounds, load average {doc['load_average']:.1f} at the end "
         "(the machine is shared: CPU ratios are noisy, instructions are not).", "",
         "| program, workload | instructions plain | maps | instructions × | CPU s plain | CPU × (95 % interval) |",
         "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in maps:
        p = plain[r["workload"]]
        L.append(f"| {r['workload']} `{' '.join(r['args'])}` | {p.get('instructions') or 0:,} | "
                 f"{r.get('instructions') or 0:,} | **{r.get('ir_ratio') or float('nan'):.3f}** | "
                 f"{p['cpu_median']:.2f} | {r['cpu_ratio']:.3f} ({r['cpu_ratio_ci95'][0]:.2f}–"
                 f"{r['cpu_ratio_ci95'][1]:.2f}) |")
    L += ["", f"**Instructions:** mean ×{statistics.mean(irs):.3f}, geometric mean ×{geomean(irs):.3f}, "
              f"worst ×{max(irs):.3f} ({maps[0]['workload']}); goals: worst ≤ ×1.05, geometric mean ≤ ×1.02. "
              f"**CPU time:** mean ×{statistics.mean(cpus):.3f}, geometric mean ×{geomean(cpus):.3f}.", ""]
    w = doc.get("worst")
    if w:
        L += [f"Functions whose own instruction count grew most in the worst row ({w['workload']}, "
              f"{w['plain_instructions']:,} → {w['maps_instructions']:,}; `callgrind_annotate`, self counts):", "",
              "| function | plain | maps | Δ |", "| --- | ---: | ---: | ---: |"]
        for g in w["grew"]:
            L.append(f"| `{g['function']}` | {g['plain']:,} | {g['maps']:,} | {g['maps'] - g['plain']:+,} |")
        L.append("")
    L += ["**Size** (each program's executable; stack maps = `.mtstack` + `.llvm_stackmaps`, maps = those + "
          "`.mtmap` + `.mttypes` (+ `.mtsites`); goals: code ≤ ×1.10, "
          "maps ≤ 50 % of `.text`):", "",
          "| program | .text plain | .text maps | .text × | stack maps | .mtmap + .mttypes | maps / .text |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    seen = set()
    for r in sorted(maps, key=lambda r: -r["text_ratio"]):
        prog = r["workload"].split()[0]
        if prog in seen:
            continue
        seen.add(prog)
        p = plain[r["workload"]]
        L.append(f"| {prog} | {p['text_bytes']:,} | {r['text_bytes']:,} | {r['text_ratio']:.3f} | "
                 f"{r['stackmaps_bytes']:,} | {r['mtmap_bytes']:,} | {r['map_bytes'] / r['text_bytes'] * 100:.0f} % |")
    L += ["", f"Code: geometric mean ×{geomean(list({r['workload'].split()[0]: r['text_ratio'] for r in maps}.values())):.3f}; "
              f"maps / .text: geometric mean "
              f"{geomean(list({r['workload'].split()[0]: r['map_bytes'] / r['text_bytes'] for r in maps}.values())) * 100:.0f} %."]

    L += ["", END]
    path = HERE / "RESULTS.md"
    text = path.read_text()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(L) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## The Debian suite (issue #18)\n\n" + "\n".join(L) + "\n"
    path.write_text(text)
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
