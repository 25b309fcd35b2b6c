"""Heaps as glibc sees them, and heaps that are damaged.

samples/heap_layouts.c makes main heaps that ``/proc/PID/maps`` shows as
several lines (grown after fork, a page made read-only, a THP-advised
middle); the walker must read each as the one range glibc's state delimits
(``mp_.sbrk_base`` to the end of the top chunk), with libc's debug symbols and
with the heuristics, and find every block the program prints.
samples/heap_overflow.c damages its own heap the way real bugs do (a buffer
overrun into the next chunk's header, into the top chunk's size) and leaks
known objects: ``mappedtrace leaks`` must still report those leaks, name the
bad chunk in a warning and count the damaged bytes in the precision figures.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import mappedtrace
from conftest import build_sample, need, require_plugin, run_mt
from mappedtrace.heap.glibc import GlibcHeap
from mappedtrace.modules import ModuleMap
from test_heap_glibc import CC, MODES, Program, _libc_debug_file, _need_trace

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    need("cc")
    _need_trace()
    exe = tmp_path_factory.mktemp("layouts") / "heap_layouts"
    subprocess.run([CC, "-O1", "-g", "-pthread", "-o", str(exe), str(SAMPLES / "heap_layouts.c")],
                   check=True, capture_output=True, timeout=60)
    return exe


def _heap_lines(pid: int) -> int:
    with open(f"/proc/{pid}/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith("[heap]"))


def _thp_or_skip() -> None:
    try:
        mode = re.search(r"\[(\w+)\]", THP.read_text()).group(1)
    except (OSError, AttributeError):
        pytest.skip("this kernel has no transparent huge pages")
    if mode == "never":
        pytest.skip("transparent huge pages are off on this host ([never]); not changed by tests")


@pytest.mark.parametrize("debug", MODES)
@pytest.mark.parametrize("mode,lines", [("fork", 2), ("mprotect", 3), ("mprotect-back", 1), ("thp", 2),
                                        ("thread", 1)])
def test_split_main_heap_is_one_range(layouts, mode, lines, debug):
    if mode == "thp":
        _thp_or_skip()
    if debug and _libc_debug_file() is None:
        pytest.skip("libc6-dbg is not installed")
    prog = Program(layouts, mode)
    try:
        pid = int(prog.records("pid")[0][0])        # fork: the child, which holds the records
        assert _heap_lines(pid) >= lines
        with mappedtrace.attach(pid) as t:
            heap = GlibcHeap(t, ModuleMap(t), use_debug_symbols=debug)
        assert heap.corrupted == [] and not [w for w in heap.warnings if not w.startswith("heuristic")], \
            heap.warnings
        live = prog.records("live")
        assert len(live) > 20000
        for addr, usable in live:
            c = heap.find(int(addr, 16))
            assert c is not None and (c.address, c.size, c.state) == (int(addr, 16), int(usable), "in-use"), \
                (addr, usable, c)
        mi = {k: int(v) for k, v in (kv.split("=") for kv in prog.records("mallinfo2")[0])}
        for key in ("arena", "uordblks", "fordblks"):
            assert heap.stats[key] == mi[key], key
        if mode == "thread":        # the worker's arena: one heap_info segment, read across its three mappings
            (worker,) = heap.arenas[1:]
            assert len(worker.segments) == 1 and worker.segments[0].heap_info is not None
            seg = worker.segments[0]
            with open(f"/proc/{pid}/maps") as f:
                inside = [ln for ln in f if seg.start <= int(ln.split("-")[0], 16) < seg.end]
            assert len(inside) >= 3, inside
            return
        main = heap.arenas[0]
        assert len(main.segments) == 1 and main.segments[0].end - main.segments[0].start == mi["arena"]
    finally:
        prog.close()


def test_forked_child_has_no_false_leaks(layouts, tmp_path):
    """The whole pipeline on the child whose heap grew after fork: every block reachable."""
    prog = Program(layouts, "fork", "5000")
    try:
        pid = int(prog.records("pid")[0][0])
        js = tmp_path / "r.json"
        r = run_mt("leaks", str(pid), "--json", str(js))
        assert r.returncode == 0, r.stderr[-2000:]
        rep = json.loads(js.read_text())
        assert rep["summary"]["leaked_objects"] == 0
        assert rep["summary"]["reachable_objects"] >= 5500
        assert rep["precision"].get("heap_corrupted_regions", 0) == 0
    finally:
        prog.close()


@pytest.fixture(scope="module")
def overflow_exe(tmp_path_factory) -> Path:
    _need_trace()
    require_plugin()
    d = tmp_path_factory.mktemp("overflow")
    return Path(build_sample(SAMPLES / "heap_overflow.c", "-O1", d / "heap_overflow"))


@pytest.mark.parametrize("mode,why", [("overflow", r"size 0x[0-9a-f]+ is not 16-aligned"),
                                      ("top", r"top chunk size 0x10000000000 does not reach the heap end"),
                                      ("topwrap", r"top chunk size 0xfffffffffffffff0 does not reach")])
@pytest.mark.parametrize("nleak", [3, 0])
def test_overflowed_heap_still_reports_leaks(overflow_exe, tmp_path, mode, why, nleak):
    """A real overrun into the next chunk's header or the top's size: the report is still
    made, with every leak the program made, a warning naming the bad chunk, the damaged
    bytes in the precision figures, and the exit code of leaks (0 when there are none)."""
    prog = Program(overflow_exe, mode, str(nleak))
    try:
        # "truth leak ADDR SIZE direct", "truth kept ADDR"
        truth = {int(r[1], 16): int(r[2]) for r in prog.records("truth") if r[0] == "leak"}
        kept = [int(r[1], 16) for r in prog.records("truth") if r[0] == "kept"]
        bad = int(prog.records("chunk")[0][0], 16)
        assert len(truth) == nleak
        js = tmp_path / "r.json"
        r = run_mt("leaks", str(prog.pid), "--json", str(js))
        assert r.returncode == (23 if nleak else 0), r.stderr[-2000:]
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        warn = [ln for ln in r.stderr.splitlines() if f"corrupted chunk at {bad:#x}" in ln]
        assert len(warn) == 1 and re.search(why, warn[0]), r.stderr[-2000:]
        rep = json.loads(js.read_text())
        found = {int(l["address"], 16) if isinstance(l["address"], str) else l["address"]: l["size"]
                 for l in rep["leaks"]}
        assert found == truth
        assert rep["precision"]["heap_corrupted_regions"] == 1
        region = rep["precision"]["heap_corrupted_bytes"]
        # overflow: the damaged 80-byte chunk (the walk goes on at the next one); top: its header
        assert region == (0x50 if mode == "overflow" else 16)
        assert "corrupted heap: 1 region" in r.stdout
        # what only the damaged chunk points at is not a false leak (the region is a root)
        assert all(k not in found for k in kept) and (mode != "overflow" or kept)
        assert prog.p.poll() is None                    # the program runs on
    finally:
        prog.close()


@pytest.mark.parametrize("debug", MODES)
def test_bad_top_size_in_every_arena(tmp_path, debug):
    """Top-chunk sizes made in code (too big, wrapping, 0, too small) in the main and the
    thread arenas: each a one-chunk corrupted region, every chunk still found."""
    import struct
    from test_heap_glibc import _Patched
    _need_trace()
    if debug and _libc_debug_file() is None:
        pytest.skip("libc6-dbg is not installed")
    exe = tmp_path / "heap_pattern"
    subprocess.run([CC, "-O1", "-g", "-pthread", "-o", str(exe), str(SAMPLES / "heap_pattern.c")],
                   check=True, capture_output=True, timeout=60)
    prog = Program(exe, "2")
    try:
        with mappedtrace.attach(prog.pid) as t:
            mods = ModuleMap(t)
            good = GlibcHeap(t, mods, use_debug_symbols=debug)
            assert len(good.arenas) == 3 and good.corrupted == []
            for a in good.arenas:
                for v in ((1 << 40) | 1, 0xFFFFFFFFFFFFFFF1, 0, 0x21):
                    h = GlibcHeap(_Patched(t, {a.top + 8: struct.pack("<Q", v)}), mods, use_debug_symbols=debug)
                    assert [(r.chunk, r.start, r.end) for r in h.corrupted] == [(a.top, a.top, a.top + 16)], \
                        (a.label, hex(v), h.corrupted)
                    assert re.search("top chunk size 0x[0-9a-f]+ does not reach the heap end", h.corrupted[0].reason)
                    assert list(h.headers) == list(good.headers)
                    top = h.find(a.top + 16)
                    assert top.free_list == "top" and top.chunk_size == good.find(a.top + 16).chunk_size
    finally:
        prog.close()
