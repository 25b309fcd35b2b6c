"""Marking throughput: a live process with N objects, end to end.

    .venv/bin/python benchmarks/trace/bench_mark.py --objects 4000000 --size 248 [--repeat 3]

Builds bench_heap.c, runs it, attaches (ptrace), walks the glibc heap
(mappedtrace.heap.glibc), marks (C kernel and/or numpy, precise and/or
conservative) and finds the leaks; prints one line per run with the time of
each step and objects/s and GB/s of the marking, and checks the answer: every
20th object is leaked (plus whatever the C library holds only from its own
globals, which this benchmark does not give as roots: the stdout buffer).
Types are described from the program's layout (struct obj: next, kid).
With ``--repeat N`` the same process is traced N times (attach to leaks each
time) and the median end-to-end time is printed.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import mappedtrace  # noqa: E402
from mappedtrace.analyses.leaks import find_leaks  # noqa: E402
from mappedtrace.formats.mtmap import Slot, TypeInfo  # noqa: E402
from mappedtrace.heap.glibc import GlibcHeap  # noqa: E402
from mappedtrace.modules import ModuleMap  # noqa: E402
from mappedtrace.roots import Root  # noqa: E402
from mappedtrace.trace import mark  # noqa: E402


S, T = Slot, TypeInfo          # short names for the type tables built here


OBJ, OBJP, OBJPP = 0x11, 0x12, 0x13


def start_ready(cmd: list[str], timeout: float = 600) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` and wait for its ``ready`` line; returns the process and
    what it printed until then.  The caller kills it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"ready\n" not in buf and time.monotonic() < deadline and proc.poll() is None:
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if r:
            buf += os.read(proc.stdout.fileno(), 4096)
    if b"ready\n" not in buf:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{' '.join(map(str, cmd))} did not get ready")
    return proc, buf.decode()


def start_heap(exe: Path, n: int, size: int, timeout: float = 600) -> tuple[subprocess.Popen, dict]:
    """Start bench_heap with ``n`` objects of ``size`` bytes and wait for its
    ``ready`` line; returns the process and the ``key value`` lines it printed.
    The caller kills it."""
    proc, out = start_ready([str(exe), str(n), str(size)], timeout)
    return proc, dict(l.split()[:2] for l in out.splitlines() if len(l.split()) >= 2)


def run(n: int, size: int, kernels: list[str], modes: list[str], leaks: bool, repeat: int = 1) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_mark_"))
    exe = tmp / "bench_heap"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "bench_heap.c")], check=True)
    proc, info = start_heap(exe, n, size)
    try:
        table = int(info["table"], 16)
        types = {OBJ: T(OBJ, "struct obj", size, "struct", 0, (S(0, OBJ), S(8, OBJ))),
                 OBJP: T(OBJP, "struct obj*", 8, "pointer", 0, (S(0, OBJ),)),
                 OBJPP: T(OBJPP, "struct obj**", 8, "pointer", 0, (S(0, OBJP),))}
        roots = [Root("range", table, 8, OBJPP, True, "global table")]
        totals: list[tuple[float, float]] = []
        for rep in range(repeat):
            totals.append(trace_once(proc.pid, n, roots, types, kernels, modes, leaks))
        if repeat > 1:
            w = sorted(x[0] for x in totals)
            c = sorted(x[1] for x in totals)
            print(f"end to end (attach, walk, mark, leaks of the first mode), median of {repeat}: "
                  f"{w[len(w) // 2]:.3f} s wall, {c[len(c) // 2]:.3f} s cpu", flush=True)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def trace_once(pid: int, n: int, roots, types, kernels: list[str], modes: list[str],
               leaks: bool) -> tuple[float, float]:
    """Attach, walk, mark and find leaks once; returns the end-to-end (wall, cpu)
    seconds of the first mode and kernel (attach + walk + mark + find_leaks)."""
    t0, c0 = time.perf_counter(), time.process_time()
    e2e = None
    with mappedtrace.attach(pid) as t:
        t1, c1 = time.perf_counter(), time.process_time()
        heap = GlibcHeap(t, ModuleMap(t))
        t2, c2 = time.perf_counter(), time.process_time()
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus", flush=True)
        print(f"objects={n}: attach {t1 - t0:.3f} s, heap walk {t2 - t1:.3f} s ({len(heap)} chunks); "
              f"heap walk cpu {c2 - c1:.3f} s", flush=True)
        for mode in modes:
            for kernel in kernels:
                a, ca = time.perf_counter(), time.process_time()
                g = mark(t, heap, roots, types, mode=mode, kernel=kernel)
                b, cb = time.perf_counter(), time.process_time()
                c, cc = b, cb
                tail = ""
                if leaks:           # needs only the leaked objects' edges
                    rep = find_leaks(g, t)
                    c, cc = time.perf_counter(), time.process_time()
                    s = rep.summary
                    tail = (f"; find_leaks {c - b:.3f} s: {s['leaked_objects']} leaked ({s['direct_objects']} "
                            f"direct), expected {(n + 19) // 20} + libc's; find_leaks cpu {cc - cb:.3f} s")
                g.edges             # the whole graph (made on first use), timed with mark()
                d, cd = time.perf_counter(), time.process_time()
                mw, mc = (b - a) + (d - c), (cb - ca) + (cd - cc)
                p = g.precision
                line = (f"  {mode:12} {kernel:5}: mark() {mw:.3f} s wall, {mc:.3f} s cpu "
                        f"({p.objects / mc / 1e6:.2f} M objects/s of cpu) (read {p.read_s:.3f} s, "
                        f"kernel {p.mark_s:.3f} s, all edges {d - c:.3f} s) {p.objects} objects, "
                        f"{p.heap_bytes / 2**30:.2f} GiB, {p.objects / mw / 1e6:.2f} M objects/s, "
                        f"{p.heap_bytes / mw / 1e9:.2f} GB/s; reached {p.objects_reached}, "
                        f"typed {p.objects_typed}, edges {p.edges_exact}+{p.edges_conservative}") + tail
                if e2e is None:     # what a leak check costs: attach, walk, mark, find_leaks
                    e2e = ((t1 - t0) + (t2 - t1) + (c - a), (c1 - c0) + (c2 - c1) + (cc - ca))
                    line += f"; end to end {e2e[0]:.3f} s wall, {e2e[1]:.3f} s cpu"
                print(line, flush=True)
                del g
    return e2e or (0.0, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=248)
    ap.add_argument("--kernels", default="c")
    ap.add_argument("--modes", default="precise,conservative")
    ap.add_argument("--no-leaks", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="trace the same process this many times")
    a = ap.parse_args()
    run(a.objects, a.size, a.kernels.split(","), a.modes.split(","), not a.no_leaks, a.repeat)


if __name__ == "__main__":
    main()
