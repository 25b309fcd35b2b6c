"""Scale and memory (issue #13 items 2–3): the heap read in place gives the
answer a copy gives, and ``--max-memory`` refuses early or lets the analysis run.

The target is samples/scale_heap.c (small linked objects, leaked 3-object
chains); it prints how many objects it made and leaked.  Speed is measured by
benchmarks/trace/bench_scale.py, not here.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import MAPPEDTRACE, SAMPLES, build_sample, require_plugin, run_mt

N_OBJECTS = 120_000
CHAINS = 50


@pytest.fixture(scope="module")
def scale_prog(tmp_path_factory):
    require_plugin()
    tmp = tmp_path_factory.mktemp("scale")
    exe = build_sample(SAMPLES / "scale_heap.c", "-O2", tmp / "scale_heap")
    proc = subprocess.Popen([exe, str(N_OBJECTS), str(CHAINS)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    buf = b""
    deadline = time.monotonic() + 120
    while b"ready\n" not in buf and time.monotonic() < deadline and proc.poll() is None:
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if r:
            buf += os.read(proc.stdout.fileno(), 4096)
    assert b"ready\n" in buf, buf
    info = {l.split()[0]: int(l.split()[1]) for l in buf.decode().splitlines() if len(l.split()) == 2}
    yield proc, info, tmp
    proc.kill()
    proc.wait()


def test_heap_in_place_equals_a_copy(scale_prog):
    """The walker reads a captured heap in place (Target.view); with the view
    refused it copies (read_into): columns, memory and the leak answer agree."""
    from mappedtrace.heap.glibc import GlibcHeap
    from mappedtrace.modules import ModuleMap
    from mappedtrace.session import analyse, capture_live
    proc, info, _ = scale_prog
    target = capture_live(proc.pid, "fork")
    try:
        in_place = GlibcHeap(target, ModuleMap(target))
        seg_addr, seg = in_place.memory_blocks[0]
        # the block is the capture's own memory, not a copy of it
        assert np.shares_memory(seg, np.frombuffer(target.view(seg_addr, len(seg)), np.uint8))
        a = analyse(target)

        class NoView(type(target)):
            def view(self, addr, size):
                return None
        target.__class__ = NoView
        copied = GlibcHeap(target, ModuleMap(target))
        assert not np.shares_memory(copied.memory_blocks[0][1], seg)
        for col in ("headers", "chunk_sizes", "addresses", "usable", "state", "list_code", "arena_index"):
            assert np.array_equal(getattr(in_place, col), getattr(copied, col)), col
        assert bytes(copied.memory_blocks[0][1]) == bytes(seg)
        b = analyse(target)
    finally:
        target.close()
    ra, rb = a.leaks, b.leaks
    assert ra.summary == rb.summary
    assert {l.address for l in ra.leaks} == {l.address for l in rb.leaks}
    assert a.graph.precision.__dict__.keys() == b.graph.precision.__dict__.keys()
    for k, v in a.graph.precision.__dict__.items():
        if not k.endswith("_s"):
            assert v == b.graph.precision.__dict__[k], k
    # and the answer is the program's: every chain it leaked, nothing else of its objects
    assert ra.summary["leaked_objects"] >= info["leaked_objects"] - 3


def test_join_pieces_makes_one_view():
    """Adjacent captured pieces that are adjacent in one buffer become one
    piece (a range read in batches); pieces of other buffers stay apart."""
    import mmap
    from mappedtrace.target.capture import Piece, _join_pieces
    buf = mmap.mmap(-1, 3 * 4096)
    buf[:] = bytes(range(256)) * 48
    mv = memoryview(buf)
    other = memoryview(bytearray(4096))
    ps = [Piece(0x10000, 4096, mv[0:4096]), Piece(0x11000, 8192, mv[4096:3 * 4096]),
          Piece(0x13000, 4096, other), Piece(0x14000, 4096, None)]
    out = _join_pieces(ps)
    assert [(p.start, p.size) for p in out] == [(0x10000, 3 * 4096), (0x13000, 4096), (0x14000, 4096)]
    assert bytes(out[0].data) == bytes(buf)
    # not adjacent in the buffer: kept apart
    gap = _join_pieces([Piece(0x10000, 4096, mv[0:4096]), Piece(0x11000, 4096, mv[8192:3 * 4096])])
    assert len(gap) == 2
    del mv, out, gap, ps


def test_max_memory_refuses_and_accepts(scale_prog):
    from mappedtrace.memory import BASE_BYTES, PER_CHUNK_BYTES
    from mappedtrace.target.capture import plan_bytes
    from mappedtrace.target.live import parse_maps
    proc, info, tmp = scale_prog
    pid = str(proc.pid)
    # below the copy alone: refused before the capture (the process is never stopped)
    r = run_mt("leaks", pid, "--max-memory", "4M")
    assert r.returncode == 3, r.stderr
    err = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(err) == 1 and "--max-memory 4.0 MiB" in err[0] and "needs at least" in err[0], r.stderr
    assert "Traceback" not in r.stderr
    # enough for the copy, not for the chunks: refused after the walk, naming the chunk count
    with open(f"/proc/{pid}/maps") as f:
        copy = plan_bytes(parse_maps(f.read()))
    limit = BASE_BYTES + copy + PER_CHUNK_BYTES * info["objects"] // 2
    r = run_mt("leaks", pid, "--max-memory", str(limit))
    assert r.returncode == 3, r.stderr
    err = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(err) == 1 and "heap chunks" in err[0], r.stderr
    chunks = int(err[0].split(" heap chunks")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert chunks >= info["objects"]
    # a limit that fits: the analysis runs and finds the program's leaks
    out = tmp / "fits.json"
    r = run_mt("leaks", pid, "--max-memory", "64G", "--json", str(out))
    assert r.returncode == 23, r.stderr
    rep = json.loads(out.read_text())
    assert rep["summary"]["leaked_objects"] >= info["leaked_objects"] - 3
    # a snapshot file: refused, then accepted
    snap = tmp / "scale.core"
    assert run_mt("snapshot", pid, "-o", str(snap)).returncode == 0
    r = run_mt("leaks", str(snap), "--max-memory", "1M")
    assert r.returncode == 3 and "--max-memory 1.0 MiB" in r.stderr, r.stderr
    r = run_mt("top", str(snap), "--max-memory", "64G")
    assert r.returncode == 0, r.stderr
    # not a size: a usage error in one line
    r = run_mt("leaks", pid, "--max-memory", "lots")
    assert r.returncode == 2 and "is not a size" in r.stderr and "Traceback" not in r.stderr, r.stderr


#: run ARGV, print its exit code and its own peak RSS (KiB, from its rusage at wait4)
_PEAK = ("import os, subprocess, sys\n"
         "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
         "_, status, usage = os.wait4(p.pid, 0)\n"
         "p.returncode = os.waitstatus_to_exitcode(status)\n"
         "print(p.returncode, usage.ru_maxrss)\n")


def _peak_of(*args: str) -> tuple[int, int, str]:
    """(exit code, peak RSS in bytes, stderr) of ``mappedtrace ARGS``, not timed.
    Started from a small intermediate Python: a process's peak RSS counts the
    memory of what exec replaced (Linux folds the old mm's high-water mark into
    it), and a child started by this test process would count its hundreds of MiB."""
    r = subprocess.run([sys.executable, "-c", _PEAK, MAPPEDTRACE, *args], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="120"), timeout=300)
    assert r.returncode == 0, r.stderr
    rc, kib = (int(x) for x in r.stdout.split())
    return rc, kib * 1024, r.stderr


@pytest.mark.parametrize("roots", ["precise", "conservative"])
def test_max_memory_estimate_against_the_peak(scale_prog, roots):
    """--max-memory just below the estimate refuses after the heap walk (one
    line naming the chunks, exit 3); well above it, the analysis runs and
    finds the program's leaks, and its measured peak RSS is within the estimate
    (the marking kernel built beforehand: its first build, once per install, is
    not part of the estimate)."""
    from mappedtrace import _markkernel, memory
    from mappedtrace.heap.glibc import GlibcHeap
    from mappedtrace.modules import ModuleMap
    from mappedtrace.session import capture_live
    proc, info, tmp = scale_prog
    pid = str(proc.pid)
    assert _markkernel.load() is not None       # (the plugin was built: a C compiler is here)
    target = capture_live(proc.pid, "fork")
    try:
        est = memory.estimate(target.captured_bytes, len(GlibcHeap(target, ModuleMap(target))))
    finally:
        target.close()
    mode = ["--roots", roots]
    rc, _, err = _peak_of("leaks", pid, *mode, "--max-memory", str(est - (1 << 20)))
    lines = [l for l in err.splitlines() if "error:" in l]
    assert rc == 3 and len(lines) == 1 and "heap chunks" in lines[0] and "Traceback" not in err, err
    assert f"--max-memory {memory.fmt_size(est - (1 << 20))}" in lines[0]
    out = tmp / f"peak_{roots}.json"
    rc, peak, err = _peak_of("leaks", pid, *mode, "--max-memory", str(2 * est), "--json", str(out))
    assert rc == 23, err
    rep = json.loads(out.read_text())
    assert rep["summary"]["leaked_objects"] >= info["leaked_objects"] - 3
    assert 0 < peak <= est, f"peak {peak / 2**20:.1f} MiB over the estimate {est / 2**20:.1f} MiB"


@pytest.mark.parametrize("text,want", [("512M", 512 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30),
                                       ("1048576", 1 << 20), ("64k", 64 << 10)])
def test_parse_size(text, want):
    from mappedtrace.memory import parse_size
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "G", "-1G", "1Q", "0"])
def test_parse_size_refuses(text):
    from mappedtrace.memory import parse_size
    with pytest.raises(ValueError):
        parse_size(text)
