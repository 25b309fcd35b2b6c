"""Reading a copy-on-write fork child: process_vm_readv against /proc/PID/mem (issue #13).

    .venv/bin/python benchmarks/trace/bench_fork_read.py --objects 20000000 \
        [--methods vm,mem,mem1g,mem2t,memhuge,live,touch] [--repeat 2]

Builds benchmarks/trace/fork_read.c with the system C compiler and runs it:
a target of N malloc'd objects (64–128 B) forks a sleeping child per method,
and the child's whole [heap] is read with each method (see the C file's
header).  Each line gives the reader's wall and CPU time, seconds per GiB, and
how much the read process's private memory (``Private_Clean`` + ``Private_Dirty``) grew: process_vm_readv pins
pages, and a pinned read of an anonymous page still shared after a fork
copies it into the read process first (``gup_must_unshare``, Linux 5.19 and
later).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4_000_000)
    ap.add_argument("--methods", default="touch,vm,mem,mem1g,mem2t,memhuge,live")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    if cc is None:
        print("no C compiler", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fork_read.") as d:
        exe = Path(d) / "fork_read"
        subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(HERE / "fork_read.c")], check=True)
        print(f"fork_read {args.objects} objects; load {os.getloadavg()[0]:.1f}", flush=True)
        methods = ",".join([args.methods] * args.repeat)
        r = subprocess.run([str(exe), str(args.objects), methods], timeout=3600)
        print(f"load {os.getloadavg()[0]:.1f}")
        return r.returncode


if __name__ == "__main__":
    sys.exit(main())
