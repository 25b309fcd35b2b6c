#!/usr/bin/env python3
"""Leak-report accuracy: MappedTrace vs LeakSanitizer vs Valgrind memcheck.

Programs: the leak corpus (tests/leak_corpus/*.c, each at -O0 and -O2;
stale_slot at -O0 only, as in tests/test_leak_corpus.py) and two real programs
from Debian's sources: SQLite's shell running benchmarks/programs/accuracy.sql,
Lua 5.4 running benchmarks/programs/accuracy.lua — each unmodified (ground
truth: no leak) and patched with a known leak (``sqlite+leak``,
``lua+leak``: see builds.py, one direct + one indirect block).

Ground truth is what the program prints about itself on stderr
(``truth leak ADDR SIZE direct|indirect``), in the same run as the tool.

* MappedTrace: ``mappedtrace run --json FILE -- PROG`` on the ``mappedtrace cc``
  build; reported leaks are compared by address.
* LeakSanitizer: ``clang-22 -fsanitize=leak`` build, ``LSAN_OPTIONS=report_objects=1``;
  the listed object addresses are compared by address.
* Valgrind: ``valgrind --leak-check=full`` on the plain ``clang-22`` build;
  Valgrind prints no block addresses, so its count of definitely + indirectly
  lost blocks is compared with the number of true leaks (found = min of the
  two, false = the excess, missed = the shortfall).

    .venv/bin/python benchmarks/accuracy/run.py [--programs dropped_list,lua] [--tools ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import builds  # noqa: E402

CORPUS_PROGRAMS = ["dropped_list", "cycle", "tree_parent", "interior", "stale_slot", "threads_tls", "no_leaks"]
OPT_LEVELS = {"stale_slot": ["-O0"]}
REAL_PROGRAMS = ["sqlite", "sqlite+leak", "lua", "lua+leak"]
TOOLS = ["mappedtrace", "lsan", "valgrind"]
TOOL_VARIANT = {"mappedtrace": "maps", "lsan": "lsan", "valgrind": "plain"}

TRUTH = re.compile(r"truth leak (0x[0-9a-f]+) (\d+) (\w+)")
LSAN_OBJ = re.compile(r"^(0x[0-9a-f]+) \((\d+) bytes\)", re.M)
VG_LOST = re.compile(r"(definitely|indirectly) lost: ([\d,]+) bytes in ([\d,]+) blocks")
TIMEOUT = 600


def cases(programs: list[str]) -> list[tuple[str, str]]:
    """(program, opt) pairs; real programs are built at -O2; ``NAME@OPT`` picks one level."""
    out = []
    for p in programs:
        if "@" in p:                    # NAME@-O2: one optimisation level only
            name, opt = p.split("@", 1)
            if name not in CORPUS_PROGRAMS + REAL_PROGRAMS:
                raise SystemExit(f"unknown program {name!r}")
            out.append((name, opt))
        elif p in REAL_PROGRAMS:
            out.append((p, "-O2"))
        elif p in CORPUS_PROGRAMS:
            out.extend((p, o) for o in OPT_LEVELS.get(p, ["-O0", "-O2"]))
        else:
            raise SystemExit(f"unknown program {p!r} (corpus: {CORPUS_PROGRAMS}, real: {REAL_PROGRAMS})")
    return out


def command_of(program: str, opt: str, variant: str) -> tuple[list[str], Path | None]:
    """(argv, stdin file) of *program* built as *variant*."""
    progs = builds.PROGRAMS
    if program.startswith("sqlite"):
        exe = builds.sqlite_shell(variant, patched=program.endswith("+leak"))
        return [str(exe), ":memory:"], progs / "accuracy.sql"
    if program.startswith("lua"):
        exe = builds.lua(variant, patched=program.endswith("+leak"))
        return [str(exe), str(progs / "accuracy.lua")], None
    return [str(builds.corpus(variant, program, opt))], None


def _truth(stderr: str) -> dict[int, tuple[int, str]]:
    return {int(a, 16): (int(s), k) for a, s, k in TRUTH.findall(stderr)}


def _run(argv: list[str], stdin: Path | None, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    with open(stdin or os.devnull, "rb") as f:
        r = subprocess.run(argv, stdin=f, capture_output=True, text=True, errors="replace",
                           timeout=TIMEOUT, env=env)
    return r, time.perf_counter() - t0


def run_mappedtrace(argv: list[str], stdin: Path | None, tmp: Path) -> dict:
    js = tmp / "mt.json"
    js.unlink(missing_ok=True)
    r, secs = _run([builds.MAPPEDTRACE, "run", "--json", str(js), "--", *argv], stdin)
    truth = _truth(r.stderr)
    if not js.exists():
        return {"error": f"no report (exit {r.returncode}): {r.stderr.strip()[-300:]}", "truth": truth}
    rep = json.loads(js.read_text())
    addrs = {a if isinstance(a, int) else int(a, 16) for a in (l["address"] for l in rep["leaks"])}
    return {"truth": truth, "reported": addrs, "exit": r.returncode, "seconds": secs, "by_address": True}


def run_lsan(argv: list[str], stdin: Path | None, tmp: Path) -> dict:
    env = dict(os.environ, LSAN_OPTIONS="report_objects=1:exitcode=23")
    r, secs = _run(argv, stdin, env)
    addrs = {int(a, 16) for a, _ in LSAN_OBJ.findall(r.stderr)}
    return {"truth": _truth(r.stderr), "reported": addrs, "exit": r.returncode, "seconds": secs,
            "by_address": True}


def run_valgrind(argv: list[str], stdin: Path | None, tmp: Path) -> dict:
    log = tmp / "vg.log"
    log.unlink(missing_ok=True)
    r, secs = _run(["valgrind", "--leak-check=full", f"--log-file={log}", *argv], stdin)
    text = log.read_text(errors="replace") if log.exists() else ""
    if "LEAK SUMMARY" not in text and "All heap blocks were freed" not in text:
        return {"error": f"no valgrind summary (exit {r.returncode}): {text[-300:]}", "truth": _truth(r.stderr)}
    blocks = sum(int(n.replace(",", "")) for _, _, n in VG_LOST.findall(text))
    return {"truth": _truth(r.stderr), "reported_count": blocks, "exit": r.returncode, "seconds": secs,
            "by_address": False}


RUNNERS = {"mappedtrace": run_mappedtrace, "lsan": run_lsan, "valgrind": run_valgrind}


def score(res: dict) -> dict:
    """found / missed / false of one tool run, against that run's own truth."""
    truth = res["truth"]
    if "error" in res:
        return {"error": res["error"], "truth": len(truth)}
    if res["by_address"]:
        rep = res["reported"]
        out = {"found": len(set(truth) & rep), "missed": len(set(truth) - rep), "false": len(rep - set(truth))}
    else:
        n = res["reported_count"]
        out = {"found": min(n, len(truth)), "missed": max(0, len(truth) - n), "false": max(0, n - len(truth))}
    out.update(truth=len(truth), seconds=round(res["seconds"], 3), exit=res["exit"], by_address=res["by_address"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", default=",".join(CORPUS_PROGRAMS + REAL_PROGRAMS))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    tools = a.tools.split(",")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="mt-accuracy-"))
    for program, opt in cases(a.programs.split(",")):
        row = {"program": program, "opt": opt, "tools": {}}
        for tool in tools:
            try:
                cmd, stdin = command_of(program, opt, TOOL_VARIANT[tool])
                row["tools"][tool] = score(RUNNERS[tool](cmd, stdin, tmp))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                row["tools"][tool] = {"error": str(e).strip().splitlines()[0][:300]}
            s = row["tools"][tool]
            print(f"{program:14} {opt:4} {tool:12} " + (
                f"truth {s['truth']:3}  found {s['found']:3}  missed {s['missed']:3}  false {s['false']:3}"
                f"  {s['seconds']:.2f} s" if "found" in s else f"ERROR {s['error']}"), flush=True)
        results.append(row)
    out = {"cases": results, "totals": builds.totals(results, tools),
           "command": " ".join(["benchmarks/accuracy/run.py", *(argv if argv is not None else sys.argv[1:])])}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    for tool, t in out["totals"].items():
        print(f"TOTAL {tool:12} truth {t['truth']}  found {t['found']}  missed {t['missed']}  "
              f"false {t['false']}  errors {t['errors']}/{t['cases']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
