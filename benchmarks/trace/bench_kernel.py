"""Marker throughput without a process: a generated heap in memory.

    .venv/bin/python benchmarks/trace/bench_kernel.py --objects 1000000 --kernels c,numpy [--repeat 5]

N objects of 248 usable bytes (256-byte chunks) in one segment; word 0 of
each points to the next object, word 1 to a random one, the rest hold small
integers.  One typed root (a ``struct obj*``) points to object 0.  The
target is a :class:`~mappedtrace.target.base.Target` over a bytes buffer, so
the time is the marker's alone (no ptrace, no heap walk), graph with every
edge included.  Prints wall and CPU seconds (CPU time is the fairer figure
on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from mappedtrace.errors import TargetFault  # noqa: E402
from mappedtrace.formats.mtmap import Slot, TypeInfo  # noqa: E402
from mappedtrace.roots import Root  # noqa: E402
from mappedtrace.target.base import Mapping, Target  # noqa: E402
from mappedtrace.trace import mark  # noqa: E402

BASE, GLOBAL = 0x10000000, 0x1000
STRIDE, SIZE = 256, 248


S, T = Slot, TypeInfo          # short names for the type tables built here


class BufTarget(Target):
    def __init__(self, raw: bytes):
        super().__init__()
        self.raw = raw
        self.mappings = [Mapping(BASE, BASE + len(raw), "rw-p"), Mapping(GLOBAL, GLOBAL + 0x1000, "rw-p")]

    def _read(self, addr: int, size: int) -> bytes:
        o = addr - BASE
        if 0 <= o and o + size <= len(self.raw):
            return self.raw[o:o + size]
        if addr == GLOBAL and size == 8:
            return BASE.to_bytes(8, "little")
        raise TargetFault(addr, size)

    def _read_into(self, addr: int, view: memoryview) -> None:
        # one copy, as process_vm_readv makes for a live target
        o = addr - BASE
        if 0 <= o and o + len(view) <= len(self.raw):
            view[:] = memoryview(self.raw)[o:o + len(view)]
        else:
            view[:] = self._read(addr, len(view))


class Columns:
    """Column arrays shaped like mappedtrace.heap.glibc.GlibcHeap's."""

    def __init__(self, n: int):
        self.addresses = (BASE + np.arange(n, dtype=np.uint64) * STRIDE).astype(np.uint64)
        self.usable = np.full(n, SIZE, np.uint64)
        self.state = np.zeros(n, np.uint8)


def make(n: int) -> bytes:
    words = STRIDE // 8
    mem = np.zeros(n * words, np.uint64)
    idx = np.arange(n, dtype=np.uint64)
    mem[0::words] = np.where(idx + 1 < n, BASE + (idx + 1) * STRIDE, 0).astype(np.uint64)
    rnd = np.random.default_rng(1).integers(0, n, n).astype(np.uint64)
    mem[1::words] = BASE + rnd * STRIDE
    for k in range(2, SIZE // 8):
        mem[k::words] = idx + np.uint64(k)
    return mem.tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--kernels", default="c")
    ap.add_argument("--modes", default="precise,conservative")
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode and kernel (medians printed)")
    a = ap.parse_args()
    n = a.objects
    t = BufTarget(make(n))
    heap = Columns(n)
    types = {1: T(1, "struct obj", SIZE, "struct", 0, (S(0, 1), S(8, 1))),
             2: T(2, "struct obj*", 8, "pointer", 0, (S(0, 1),))}
    roots = [Root("range", GLOBAL, 8, 2, True, "global head")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus; {n} objects, "
          f"{n * STRIDE / 2**30:.2f} GiB", flush=True)
    for mode in a.modes.split(","):
        for kernel in a.kernels.split(","):
            runs = []
            for _ in range(a.repeat):
                w, c = time.perf_counter(), time.process_time()
                g = mark(t, heap, roots, types, mode=mode, kernel=kernel)
                g.edges                 # the whole graph: the C marker makes the edges on first use
                w, c = time.perf_counter() - w, time.process_time() - c
                p = g.precision
                runs.append((w, c))
                print(f"  {mode:12} {kernel:5}: {w:.3f} s wall ({n / w / 1e6:.2f} M objects/s), "
                      f"{c:.3f} s cpu ({n / c / 1e6:.2f} M objects/s, {n * STRIDE / c / 1e9:.2f} GB/s); "
                      f"read {p.read_s:.3f} s, mark {p.mark_s:.3f} s; reached {p.objects_reached}, "
                      f"edges {len(g.edges)}", flush=True)
                del g
            if a.repeat > 1:
                w = sorted(r[0] for r in runs)[len(runs) // 2]
                c = sorted(r[1] for r in runs)[len(runs) // 2]
                print(f"  {mode:12} {kernel:5}: median of {a.repeat}: {w:.3f} s wall, {c:.3f} s cpu "
                      f"({n / c / 1e6:.2f} M objects/s of cpu), load average {os.getloadavg()[0]:.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
