#!/usr/bin/env python3
"""The map-contract oracle (tests/oracle/liveness_oracle.py) on whole programs.

For each program, every source file is compiled as ``mappedtrace cc -O2``
compiles it, but printed as IR after the pass (``clang-22 -O2 -g -fno-pie
-fpass-plugin=P -S -emit-llvm``); the oracle recomputes the pointers live
after every map point and compares them with the pairs the pass wrote.
Programs: the C corpus of the tests (tests/leak_corpus, samples,
tests/pass_inputs), Lua 5.4 and the SQLite 3.40.1 amalgamation from their
Debian sources.  SQLite's one 9 MB file takes minutes: that is why it is here
and not in the tests (tests/test_map_oracle.py covers the corpus and Lua).
The corpus includes tests/skipped_frames (computed goto, setjmp).

    .venv/bin/python benchmarks/oracle/run.py [--programs corpus,lua,sqlite] [--opt=-O2,-O3] [--json FILE]

Sources: Lua from ``$MAPPEDTRACE_SRC`` or ~/.cache/mappedtrace/src
(scripts/fetch_sources.sh); the SQLite amalgamation from benchmarks/work/sqlite-amalg
(benchmarks/setup.sh) or the real-program tests' build cache, or ``--sqlite FILE``.
Results: tests/real_programs/ORACLE.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mappedtrace import toolchain as tc  # noqa: E402
from oracle import liveness_oracle as lo  # noqa: E402

SRC = Path(os.environ.get("MAPPEDTRACE_SRC", Path.home() / ".cache" / "mappedtrace" / "src"))


def emit(plugin: str, src: Path, flags: list[str], opt: str = "-O2") -> tuple[str, dict[str, str]]:
    cc = tc.require_tool("clang++-22" if src.suffix == ".cpp" else "clang-22")
    r = subprocess.run([cc, opt, "-g", "-fno-pie", f"-fpass-plugin={plugin}", *flags,
                        "-S", "-emit-llvm", "-o", "-", str(src)],
                       capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "MAPPEDTRACE_LOOP_POINTS": "1"})  # checked too
    if r.returncode != 0:
        raise SystemExit(f"oracle: {src.name} does not compile: {r.stderr[-500:]}")
    return r.stdout, lo.skipped_functions(r.stderr)


def program_sources(name: str, sqlite: str | None) -> tuple[list[Path], list[str]]:
    if name == "corpus":
        files = sorted([*(ROOT / "tests" / "leak_corpus").glob("*.c"), *(ROOT / "samples").glob("*.c"),
                        *(ROOT / "tests" / "pass_inputs").glob("*.c"),
                        *(ROOT / "tests" / "pass_inputs").glob("*.cpp"),
                        *(ROOT / "tests" / "skipped_frames").glob("*.c")])
        return files, [f"-I{ROOT / 'tests' / 'leak_corpus'}"]
    if name == "lua":
        trees = sorted(SRC.glob("lua5.4-*/src"))
        if not trees:
            raise SystemExit(f"oracle: no lua5.4 sources in {SRC} (run scripts/fetch_sources.sh)")
        inc = Path(tempfile.mkdtemp(prefix="oracle-lua-"))
        (inc / "lua5.4-deb-multiarch.h").write_text('#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n')
        return ([f for f in sorted(trees[0].glob("*.c")) if f.name != "luac.c"],
                ["-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", f"-I{inc}"])
    if name == "sqlite":
        cands = ([sqlite] if sqlite else []) + [str(ROOT / "benchmarks" / "work" / "sqlite-amalg" / "sqlite3.c")] \
            + sorted(glob.glob(os.path.join(tempfile.gettempdir(), "mappedtrace-real-programs",
                                            "sqlite-*", "amalgamation", "sqlite3.c")))
        for c in cands:
            if Path(c).is_file():
                return [Path(c)], ["-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION", f"-I{Path(c).parent}"]
        raise SystemExit("oracle: no SQLite amalgamation (run benchmarks/setup.sh, or pass --sqlite FILE)")
    raise SystemExit(f"oracle: unknown program {name!r}")


def run_program(plugin: str, name: str, sqlite: str | None, opt: str) -> tuple[lo.Report, dict]:
    files, flags = program_sources(name, sqlite)
    total, t_cc, t_check = lo.Report(), 0.0, 0.0
    for f in files:
        t0 = time.monotonic()
        ir, skipped = emit(plugin, f, flags, opt)
        t1 = time.monotonic()
        total = total + lo.check_module(ir, skipped)
        t_check += time.monotonic() - t1
        t_cc += t1 - t0
    return total, {"files": len(files), "compile_s": round(t_cc, 1), "check_s": round(t_check, 1)}


def as_json(r: lo.Report, extra: dict) -> dict:
    return {**extra, "functions": r.functions, "instrumented": r.instrumented,
            "skipped": dict(r.skipped), "call_sites": r.call_sites, "loop_points": r.loop_points,
            "live_values": r.live_values, "outcomes": dict(r.outcomes), "pairs": dict(r.pairs),
            "plain_calls": dict(r.plain_calls), "differences": dict(r.by_kind()),
            "difference_list": [str(d) for d in r.differences[:200]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", default="corpus,lua,sqlite")
    ap.add_argument("--sqlite", help="the amalgamation's sqlite3.c")
    ap.add_argument("--opt", default="-O2", help="optimisation level(s), comma-separated (-O0,-O2,-O3…)")
    ap.add_argument("--plugin", help="the pass plugin (default: built from this tree's llvm_pass)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    plugin = a.plugin or str(tc.plugin_path())
    out = {}
    for opt in a.opt.split(","):
        for name in a.programs.split(","):
            r, extra = run_program(plugin, name, a.sqlite, opt)
            key = name if opt == "-O2" else f"{name} {opt}"
            out[key] = as_json(r, {"opt": opt, **extra})
            print(f"{key}: {r.summary()}  [{extra}]", flush=True)
            for d in r.differences[:50]:
                print(f"    {d}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
        os.chmod(a.json, 0o600)
    if any(set(v["differences"]) - {"copied_slot"} for v in out.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
