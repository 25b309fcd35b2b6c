"""Run-time overhead of the pointer maps on binary_trees.c (-O2).

Builds the benchmark with plain clang-22 and with ``mappedtrace cc`` in two
codegen variants (deopt values kept in callee-saved registers, the default;
or spilled to the stack at every call: MAPPEDTRACE_DEOPT_IN_REGS=0), runs the
variants interleaved N times and prints the median wall time of each.

    .venv/bin/python benchmarks/overhead/run.py [--depth 18] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from mappedtrace import toolchain as tc  # noqa: E402
from mappedtrace.driver import cc_command  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--src", default=str(HERE / "binary_trees.c"))
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="mt-overhead-"))
    clang = tc.require_tool("clang-22")
    variants = {
        "clang -O2": ([clang, "-O2", "-o", str(out / "plain"), a.src], {}),
        "clang -O2 -fno-omit-frame-pointer": ([clang, "-O2", "-fno-omit-frame-pointer", "-o",
                                               str(out / "plainfp"), a.src], {}),
        "mappedtrace cc -O2 (regs)": (cc_command(["-O2", "-o", str(out / "regs"), a.src]), {}),
        "mappedtrace cc -O2 (spill)": (cc_command(["-O2", "-o", str(out / "spill"), a.src]),
                                       {"MAPPEDTRACE_DEOPT_IN_REGS": "0"}),
    }
    exes = {}
    for name, (cmd, env) in variants.items():
        subprocess.run(cmd, check=True, env=dict(os.environ, **env))
        exes[name] = cmd[cmd.index("-o") + 1]
    times: dict[str, list[float]] = {n: [] for n in exes}
    for _ in range(a.runs):
        for name, exe in exes.items():
            t0 = time.perf_counter()
            subprocess.run([exe, str(a.depth)], check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["clang -O2"])
    for name, ts in times.items():
        m = statistics.median(ts)
        size = os.path.getsize(exes[name])
        print(f"{name:36s} median {m:7.3f} s  ({(m / base - 1) * 100:+6.1f} %)  binary {size} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
