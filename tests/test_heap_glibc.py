"""The glibc heap walker on real processes, checked against the programs' own records.

samples/heap_pattern.c prints every live block (address, malloc_usable_size),
every freed block, malloc_info() and mallinfo2(); the walker must find each
live block in use with that size, no freed block in use, and totals equal to
mallinfo2 and malloc_info per arena — with libc's debug symbols and with the
heuristics.  samples/heap_corrupt.c damages its own heap: the walker must name
the damaged chunk, quickly.  Also: several 64 MiB heaps in one arena, 1 M
chunks under a CPU bound, malloc tunables, a Rust program, a core snapshot,
programs without a brk heap, random damage to a real snapshot, and a busy
allocator stopped inside malloc (samples/heap_busy.c).
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import mappedtrace
import mappedtrace.target.base
from mappedtrace.formats import elf
from mappedtrace.heap.glibc import GlibcHeap, HeapError
from mappedtrace.modules import ModuleMap

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")

pytestmark = [pytest.mark.timeout(120)]


def _glibc_supported() -> bool:
    try:
        m = re.fullmatch(r"glibc (\d+)\.(\d+)", os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (ValueError, OSError):
        return False
    return m is not None and (2, 35) <= (int(m.group(1)), int(m.group(2))) <= (2, 37)


if CC is None:
    pytestmark.append(pytest.mark.skip(reason="no C compiler"))
elif not _glibc_supported():
    pytestmark.append(pytest.mark.skip(reason="the walker reads glibc 2.35–2.37 (Debian 12 has 2.36)"))


def _can_trace() -> bool:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return f.read().strip() == "0" or os.geteuid() == 0
    except FileNotFoundError:
        return True


def _snapshot_of(prog, tmp_path):
    """An ELF core snapshot of the running ``prog``, opened."""
    from mappedtrace.target.core import write_core
    core = tmp_path / "heap.core"
    with mappedtrace.attach(prog.pid) as t:
        write_core(t, str(core))
    return mappedtrace.open_snapshot(str(core))


def _need_trace() -> None:
    if not _can_trace():
        pytest.skip("ptrace of a child is not permitted here (Yama ptrace_scope)")


def _libc_debug_file() -> str | None:
    for path in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        if os.path.exists(path):
            return elf.debug_file_for(path)
    return None


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> dict[str, Path]:
    _need_trace()
    d = tmp_path_factory.mktemp("heap")
    out = {}
    for name in ("heap_pattern", "heap_corrupt"):
        exe = d / name
        subprocess.run([CC, "-O1", "-g", "-pthread", "-o", str(exe), str(SAMPLES / f"{name}.c")],
                       check=True, capture_output=True, timeout=60)
        out[name] = exe
    return out


class Program:
    """A sample program blocked after printing its records (killed on exit)."""

    def __init__(self, exe: Path, *args: str, env: dict | None = None):
        self.p = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=None if env is None else {**os.environ, **env})
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{exe.name} exited early: {self.p.wait()}")
            if line.startswith("ready"):
                break
            self.lines.append(line.rstrip("\n"))
        else:
            raise RuntimeError(f"{exe.name} did not get ready")
        self.pid = self.p.pid

    def records(self, kind: str) -> list[list[str]]:
        return [ln.split()[1:] for ln in self.lines if ln.startswith(kind + " ")]

    def mallinfo2(self) -> dict[str, int]:
        line = next(ln for ln in self.lines if ln.startswith("mallinfo2 "))
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}

    def malloc_info(self) -> list[dict[str, int]]:
        """Per arena (<heap nr=…> in malloc_info order): fast/rest count and size, system current."""
        text = "\n".join(self.lines)
        out = []
        for body in re.findall(r'<heap nr="\d+">(.*?)</heap>', text, re.S):
            d = {}
            for typ, cnt, size in re.findall(r'<total type="(fast|rest)" count="(\d+)" size="(\d+)"/>', body):
                d[f"{typ}_count"], d[f"{typ}_size"] = int(cnt), int(size)
            d["system"] = int(re.search(r'<system type="current" size="(\d+)"/>', body).group(1))
            out.append(d)
        return out

    def close(self) -> None:
        self.p.kill()
        self.p.wait()
        self.p.stdout.close()
        self.p.stdin.close()


@pytest.fixture
def program(bins):
    progs = []

    def start(name: str, *args: str, env: dict | None = None) -> Program:
        progs.append(Program(bins[name], *args, env=env))
        return progs[-1]
    yield start
    for pr in progs:
        pr.close()


MODES = [pytest.param(True, id="debug-symbols"), pytest.param(False, id="heuristics")]


def _walk(pid: int, debug: bool) -> GlibcHeap:
    if debug and _libc_debug_file() is None:
        pytest.skip("libc6-dbg is not installed")
    with mappedtrace.attach(pid) as t:
        return GlibcHeap(t, ModuleMap(t), use_debug_symbols=debug)


def _check_records(heap: GlibcHeap, prog: Program, freed_stay_free: bool = True) -> None:
    live = prog.records("live")
    assert len(live) > 50
    for addr, usable in live:
        c = heap.find(int(addr, 16))
        assert c is not None, f"live block {addr} not found"
        assert (c.address, c.size, c.state) == (int(addr, 16), int(usable), "in-use"), (addr, usable, c)
        assert heap.find(int(addr, 16) + int(usable) - 1) == c          # interior pointer
    freed = prog.records("freed")
    assert len(freed) > 50
    for (addr,) in freed if freed_stay_free else []:
        c = heap.find(int(addr, 16))
        assert c is not None and c.state == "free", (addr, c)


@pytest.mark.parametrize("debug", MODES)
def test_pattern_matches_program_records(program, debug):
    prog = program("heap_pattern", "3")
    heap = _walk(prog.pid, debug)
    assert heap.exact is debug
    assert heap.warnings == [] if debug else all(w.startswith("heuristic") for w in heap.warnings)
    _check_records(heap, prog)
    # four arenas: main + one per worker, each with every kind of free list
    assert [a.label for a in heap.arenas][0] == "main" and len(heap.arenas) == 4
    wheres = {c.where for c in heap.chunks() if c.state == "free"}
    for a in heap.arenas:
        for lst in ("tcache", "fastbin", "unsorted", "smallbin", "largebin", "top"):
            assert f"{a.label}/{lst}" in wheres, (a.label, lst)
    assert len(heap.tcaches) == 4               # one per thread (each made its own)
    # found through each thread's DTV, or (heuristics) as pointed at from its static TLS
    tids = sorted(int(x) for x in os.listdir(f"/proc/{prog.pid}/task"))
    assert sorted(int(o.split()[1]) for o, _ in heap.tcaches) == tids
    tc_chunks = {a - 16 for _, a in heap.tcaches}
    assert all(heap.find(a).chunk_size == 0x290 and heap.find(a).state == "in-use" for a in
               (h + 16 for h in tc_chunks))
    # totals equal to glibc's own accounting
    mi = prog.mallinfo2()
    for key in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "uordblks", "fordblks", "keepcost", "fsmblks"):
        assert heap.stats[key] == mi[key], key
    # per arena equal to malloc_info (its heaps are main first, then the ring from main_arena.next)
    info = prog.malloc_info()
    assert len(info) == len(heap.arenas)
    for a, mi_a in zip(heap.arenas, info):
        st = heap.stats["per_arena"][a.label]
        assert st["system_mem"] == mi_a["system"]
        assert st["smblks"] == mi_a["fast_count"] and st["fsmblks"] == mi_a["fast_size"]
        assert st["ordblks"] == mi_a["rest_count"]
    # every byte of every arena accounted: chunks + headers (heap_info, malloc_state) = system_mem
    for a in heap.arenas:
        cs = sum(c.chunk_size for c in heap.chunks() if c.arena == a.label)
        assert cs + heap.stats["per_arena"][a.label]["overhead"] == a.system_mem
    # mmapped chunks: 3 per thread + 2 posix_memalign'd in main (their chunk starts `lead` bytes
    # into the mapping); usable = chunk size - 16
    mm = [c for c in heap.chunks() if c.where == "mmapped"]
    assert len(mm) == 14 and all(c.size == c.chunk_size - 16 for c in mm)
    assert len(heap.mmapped_lead) == 2
    assert all((c.chunk_size + heap.mmapped_lead.get(c.header, 0)) % 4096 == 0 for c in mm)
    assert sum(hi - lo for lo, hi, what in heap.ranges() if what == "mmapped") == mi["hblkhd"]
    # sorted, in_use is the in-use subset
    addrs = [c.address for c in heap.chunks()]
    assert addrs == sorted(addrs) and len(set(addrs)) == len(addrs)
    assert len(heap.in_use()) == sum(1 for c in heap.chunks() if c.state == "in-use") == heap.stats["in_use_blks"]


def test_walk_paths_agree(program, monkeypatch):
    """The compiled chunk chain and the Python loop, lazily decoded free-list
    links and the all-chunks arrays give the same heap."""
    import numpy as np
    import mappedtrace.heap.glibc as hg
    from mappedtrace import _markkernel
    prog = program("heap_pattern", "3")
    with mappedtrace.attach(prog.pid) as t:
        a = GlibcHeap(t, ModuleMap(t))
        monkeypatch.setattr(hg, "LAZY_LINKS", 0)
        monkeypatch.setattr(_markkernel, "_loaded", None)
        monkeypatch.setattr(_markkernel, "_failed", True)       # no compiled kernel: Python loop
        b = GlibcHeap(t, ModuleMap(t))
    for k in ("headers", "usable", "state", "list_code", "arena_index"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.warnings == b.warnings and a.stats == b.stats
    # the segments as read, kept for the marker
    assert a.memory_blocks and all(len(buf) for _, buf in a.memory_blocks)
    a.release_memory()
    assert a.memory_blocks == []


def test_share_in_use_keeps_the_columns(program):
    """share_in_use (the marker's nodes) gives the in-use rows; made in the
    walk's own columns when they were never handed out, in new arrays when
    they were; either way ``headers``/``chunk_sizes`` come back unchanged,
    free chunks (every list, four arenas) and mmapped ones included."""
    import numpy as np
    from mappedtrace.heap.glibc import IN_USE
    prog = program("heap_pattern", "3")
    with mappedtrace.attach(prog.pid) as t:
        a = GlibcHeap(t, ModuleMap(t))
        b = GlibcHeap(t, ModuleMap(t))
    hdr, cs = b.headers.copy(), b.chunk_sizes.copy()           # b's columns handed out
    want_addr, want_usable = b.addresses[b.state == IN_USE], b.usable[b.state == IN_USE]
    assert (b.state != IN_USE).sum() > 50 and (b.arena_index < 0).sum() > 0
    for heap, in_place in ((a, True), (b, False)):
        addr, usable = heap.share_in_use()
        assert addr.dtype == usable.dtype == np.uint64
        assert np.array_equal(addr, want_addr.astype(np.uint64))
        assert np.array_equal(usable, want_usable.astype(np.uint64))
        # in place: views of the walk's buffers (no new column of the whole heap)
        assert (addr.base is not None) is in_place and (usable.base is not None) is in_place
        assert heap.share_in_use()[0] is addr                  # once
        assert len(heap) == len(hdr)
        assert np.array_equal(heap.headers, hdr) and np.array_equal(heap.chunk_sizes, cs)
        assert np.array_equal(addr, want_addr.astype(np.uint64))   # made again beside them, not over them
        c = heap.find(int(want_addr[7]))
        assert c is not None and c.address == int(want_addr[7]) and c.size == int(want_usable[7])


@pytest.mark.parametrize("debug", MODES)
@pytest.mark.parametrize("tunables", ["glibc.malloc.tcache_count=0", "glibc.malloc.arena_max=1",
                                      "glibc.malloc.hugetlb=2"])
def test_malloc_tunables(program, debug, tunables):
    """No tcache; every thread in the main arena (several tcaches in one arena); hugepage
    heaps (heap_max_size = 4 huge pages, a main arena made of mmapped memory)."""
    if not debug and "hugetlb=2" in tunables:
        pytest.skip("the heuristics need the brk heap, which hugetlb=2 replaces by mmap")
    prog = program("heap_pattern", "2", "0", "20000", env={"GLIBC_TUNABLES": tunables})
    heap = _walk(prog.pid, debug)
    # threads sharing one arena reuse each other's freed blocks: only the live records hold then
    _check_records(heap, prog, freed_stay_free="arena_max=1" not in tunables)
    mi = prog.mallinfo2()
    for key in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "uordblks", "fordblks", "keepcost"):
        assert heap.stats[key] == mi[key], key
    if "tcache_count=0" in tunables:
        assert heap.stats["tcache_blks"] == 0
    if "arena_max=1" in tunables:
        assert len(heap.arenas) == 1 and len(heap.tcaches) == 3


@pytest.mark.parametrize("debug", MODES)
def test_thread_arena_with_several_heaps(program, debug):
    prog = program("heap_pattern", "1", "0", "80000")      # 80 MB in the worker: two 64 MiB heaps
    heap = _walk(prog.pid, debug)
    worker = heap.arenas[1]
    assert len(worker.segments) == 2
    assert worker.segments[0].heap_info is not None and worker.segments[0].end - worker.segments[0].start == 64 << 20
    _check_records(heap, prog)
    mi = prog.mallinfo2()
    for key in ("arena", "ordblks", "smblks", "uordblks", "fordblks", "hblks", "hblkhd"):
        assert heap.stats[key] == mi[key], key


def test_big_heap_is_fast(program):
    n = 1_000_000
    prog = program("heap_pattern", "0", str(n))
    with mappedtrace.attach(prog.pid) as t:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        heap = GlibcHeap(t, ModuleMap(t), use_debug_symbols=_libc_debug_file() is not None)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    # CPU time (user + sys, the copy out of the target included): wall time on a shared machine varies
    took = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert len(heap) > n
    assert took < 10, f"walking {len(heap)} chunks took {took:.1f} s of CPU"
    _check_records(heap, prog)
    assert heap.stats["uordblks"] == prog.mallinfo2()["uordblks"]


@pytest.mark.parametrize("debug", MODES)
@pytest.mark.parametrize("mode,why", [("zero", "size field is 0"), ("huge", "runs (past|over)"),
                                      ("cycle", "cycle"), ("thread", "size field is 0"),
                                      ("fastbin", "fastbin link 0x4141414141414140 is not a chunk"),
                                      ("unsorted", "unsorted link 0x4141414141414140 is not a chunk"),
                                      ("bins", "unsorted link 0x4141414141414140 is not a chunk")])
def test_corrupted_heap_names_the_chunk(program, mode, why, debug):
    """A damaged chunk header or free list no longer stops the walk: the bad chunk
    becomes a corrupted region, named in a one-line warning; the walk resyncs after
    a bad header (the next chunk, a[4], is found again)."""
    prog = program("heap_corrupt", mode)
    bad = int(prog.records("chunk")[0][0], 16)
    t0 = time.perf_counter()
    heap = _walk(prog.pid, debug)
    assert time.perf_counter() - t0 < 10
    assert [r.chunk for r in heap.corrupted] == [bad], heap.corrupted
    region = heap.corrupted[0]
    assert re.search(why, region.reason) and region.start == bad
    warn = [w for w in heap.warnings if f"corrupted chunk at {bad:#x}" in w]
    assert len(warn) == 1 and re.search(why, warn[0]) and "\n" not in warn[0]
    if mode in ("zero", "huge", "thread"):         # a[3] of eight malloc(40): the walk goes on at a[4]
        assert region.end == bad + 0x30
        nxt = heap.find(bad + 0x30 + 16)
        assert nxt is not None and nxt.header == bad + 0x30 and nxt.state == "in-use"
        assert heap.find(bad + 16) is None
    for (hdr,) in prog.records("lost"):     # bins: the rest of the list, found from its bk end
        lost = heap.find(int(hdr, 16) + 16)
        assert lost is not None and lost.state == "free" and lost.free_list == "unsorted", lost
    if mode == "cycle":     # a[2], behind the self-linked a[3] on tcache[1]: found by glibc's tcache key
        lost = heap.find(bad - 0x30 + 16)
        assert lost is not None and lost.state == "free" and lost.free_list == "tcache", lost
        assert any("found by glibc's tcache key" in w for w in heap.warnings)


def test_not_a_glibc_program(tmp_path):
    """A static program has no libc.so mapped: a one-line HeapError, not a traceback."""
    src = tmp_path / "s.c"
    src.write_text("#include <unistd.h>\nint main(void){char c; while (read(0,&c,1)>0){} return 0;}\n")
    exe = tmp_path / "s"
    r = subprocess.run([CC, "-static", "-O1", "-o", str(exe), str(src)], capture_output=True, timeout=60)
    if r.returncode:
        pytest.skip("static linking is not available")
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE)
    try:
        time.sleep(0.2)
        with mappedtrace.attach(p.pid) as t:
            with pytest.raises(HeapError, match="no glibc"):
                GlibcHeap(t, ModuleMap(t))
    finally:
        p.kill()
        p.wait()
        p.stdin.close()


NO_MALLOC_C = r"""
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) { void *volatile p = malloc(300000); (void)p; }
    write(1, "ready\n", 6);
    char c; while (read(0, &c, 1) > 0) {}
    return 0;
}
"""


@pytest.mark.parametrize("debug", MODES)
@pytest.mark.parametrize("allocate", [False, True], ids=["no-malloc", "one-mmapped"])
def test_program_without_brk_heap(tmp_path, debug, allocate):
    """No malloc at all (main_arena never initialised), or one mmapped block plus tcache."""
    _need_trace()
    src = tmp_path / "n.c"
    src.write_text(NO_MALLOC_C)
    exe = tmp_path / "n"
    subprocess.run([CC, "-O1", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    p = subprocess.Popen([str(exe)] + (["x"] if allocate else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        heap = _walk(p.pid, debug)
    finally:
        p.kill()
        p.wait()
        p.stdin.close()
        p.stdout.close()
    if not allocate:
        assert len(heap) == 0 and heap.stats["arena"] == 0 and heap.stats["in_use_blks"] == 0
        return
    mm = [c for c in heap.chunks() if c.where == "mmapped"]
    assert len(mm) == 1 and mm[0].size >= 300000 and mm[0].chunk_size == 300000 + 16 + (-(300000 + 16)) % 4096
    # the only arena chunk in use is the main thread's tcache_perthread_struct
    assert [c.chunk_size for c in heap.in_use() if c.where == "main"] == [0x290]
    assert [(o, a) for o, a in heap.tcaches] == [(f"thread {p.pid}", heap.in_use()[0].address)]  # empty, still found
    assert heap.ranges()[-1][2] == "mmapped" or heap.ranges()[0][2] == "mmapped"


def test_walk_helper(program):
    """mappedtrace.heap.walk builds the module map itself."""
    import mappedtrace.heap
    prog = program("heap_pattern", "0")
    with mappedtrace.attach(prog.pid) as t:
        heap = mappedtrace.heap.walk(t)
    assert heap.stats["uordblks"] == prog.mallinfo2()["uordblks"]
    assert repr(heap.chunks()) == f"<{len(heap)} chunks>" and heap.chunks()[-1] == list(heap.chunks())[-1]


def test_snapshot_file(program, tmp_path):
    """The same walk on an ELF core snapshot of the program."""
    prog = program("heap_pattern", "2")
    snap = _snapshot_of(prog, tmp_path)
    try:
        heap = GlibcHeap(snap, ModuleMap(snap), use_debug_symbols=_libc_debug_file() is not None)
        _check_records(heap, prog)
        mi = prog.mallinfo2()
        for key in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "uordblks", "fordblks", "keepcost"):
            assert heap.stats[key] == mi[key], key
    finally:
        snap.close()


RUST_SRC = r"""
use std::io::Read;
use std::sync::{Arc, Barrier, Mutex};
extern "C" { fn malloc_usable_size(p: *mut u8) -> usize; }

fn record(out: &Mutex<Vec<String>>, p: *const u8) {
    let u = unsafe { malloc_usable_size(p as *mut u8) };
    out.lock().unwrap().push(format!("live {:p} {}", p, u));
}

fn work(out: &Mutex<Vec<String>>, seed: usize) -> (Vec<Box<[u8]>>, Vec<Vec<u64>>) {
    let mut boxes = Vec::new();
    let mut vecs = Vec::new();
    for i in 0..200 {
        let b = vec![seed as u8; 1 + (i * 37 + seed) % 700].into_boxed_slice();
        record(out, b.as_ptr());
        boxes.push(b);
        if i % 3 == 0 {
            let v: Vec<u64> = (0..(i as u64 % 50 + 1)).collect();
            record(out, v.as_ptr() as *const u8);
            vecs.push(v);
        }
    }
    let big = vec![1u8; 300_000].into_boxed_slice();     // mmapped
    record(out, big.as_ptr());
    boxes.push(big);
    (boxes, vecs)
}

fn main() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(Barrier::new(3));
    let hold = Arc::new(Barrier::new(3));
    let mut threads = Vec::new();
    for t in 1..3 {
        let (out, ready, hold) = (out.clone(), ready.clone(), hold.clone());
        threads.push(std::thread::spawn(move || {
            let kept = work(&out, t);
            ready.wait();
            hold.wait();                                       // never released: the test kills us
            drop(kept);
        }));
    }
    let kept = work(&out, 0);
    ready.wait();
    {
        let lines = out.lock().unwrap();
        let mut s = String::new();
        for l in lines.iter() { s.push_str(l); s.push('\n'); }
        s.push_str("ready\n");
        use std::io::Write;
        std::io::stdout().write_all(s.as_bytes()).unwrap();
        std::io::stdout().flush().unwrap();
    }
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    drop(kept);
}
"""


@pytest.mark.parametrize("debug", MODES)
def test_rust_program(tmp_path, debug):
    """Rust's System allocator is glibc malloc: Box and Vec buffers of three threads are found."""
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.skip("rustc is not installed")
    _need_trace()
    src = tmp_path / "r.rs"
    src.write_text(RUST_SRC)
    exe = tmp_path / "r"
    r = subprocess.run([rustc, "-O", "-o", str(exe), str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-300:]
    prog = Program(exe)
    try:
        heap = _walk(prog.pid, debug)
        live = prog.records("live")
        assert len(live) == 3 * (200 + 67 + 1)
        for addr, usable in live:
            c = heap.find(int(addr, 16))
            assert c is not None and (c.address, c.size, c.state) == (int(addr, 16), int(usable), "in-use"), (addr, c)
        assert len(heap.arenas) >= 2 and sum(1 for c in heap.chunks() if c.where == "mmapped") >= 3
    finally:
        prog.close()


class _Patched(mappedtrace.target.base.Target):
    """A snapshot of a real process with some bytes overwritten (malformed heaps made in code)."""

    def __init__(self, base, patches: dict[int, bytes]):
        super().__init__(pid=base.pid, threads=base.threads, mappings=base.mappings, auxv=base.auxv, exe=base.exe)
        self.base = base
        self.patches = patches

    def _read(self, addr: int, size: int) -> bytes:
        data = bytearray(self.base.read(addr, size))
        for at, b in self.patches.items():
            lo, hi = max(at, addr), min(at + len(b), addr + size)
            if lo < hi:
                data[lo - addr:hi - addr] = b[lo - at:hi - at]
        return bytes(data)


@pytest.mark.parametrize("debug", MODES)
def test_random_damage_gives_typed_errors(program, tmp_path, debug):
    """Size fields and list links overwritten at random: a result (with corrupted regions) or a
    MappedTraceError, quickly, never a crash."""
    import random
    import struct as st
    from mappedtrace.errors import MappedTraceError
    if debug and _libc_debug_file() is None:
        pytest.skip("libc6-dbg is not installed")
    prog = program("heap_pattern", "2")
    snap = _snapshot_of(prog, tmp_path)
    try:
        mods = ModuleMap(snap)
        good = GlibcHeap(snap, mods, use_debug_symbols=debug)
        chunks = list(good.chunks())
        rng = random.Random(1234)
        values = [0, 1, 8, 0x10, 0x21, 0x2000000001, 0xFFFFFFFFFFFFFFF0, 0x4141414141414140]
        outcomes = {"ok": 0, "corrupted": 0, "error": 0}
        for _ in range(80):
            c = rng.choice(chunks)
            field = rng.choice([-8, 0, 8])          # size field, fd, bk
            v = rng.choice(values + [rng.choice(chunks).header, c.header + rng.choice([8, 16, 24])])
            t0 = time.perf_counter()
            try:
                h = GlibcHeap(_Patched(snap, {c.address + field: st.pack("<Q", v)}), mods, use_debug_symbols=debug)
                outcomes["corrupted" if h.corrupted else "ok"] += 1
            except MappedTraceError as e:
                assert "\n" not in str(e)
                outcomes["error"] += 1
            assert time.perf_counter() - t0 < 5
        # damage is a walk with corrupted regions now (or, in arena state, a typed error)
        assert outcomes["corrupted"] + outcomes["error"] > 10 and outcomes["ok"] > 5, outcomes
    finally:
        snap.close()


def test_busy_allocator(bins, tmp_path):
    """Threads that malloc and free without pause, stopped at random points (inside malloc too):
    every walk ends quickly with a heap or a typed one-line error; most succeed."""
    from mappedtrace.errors import MappedTraceError
    exe = tmp_path / "heap_busy"
    subprocess.run([CC, "-O1", "-g", "-pthread", "-o", str(exe), str(SAMPLES / "heap_busy.c")],
                   check=True, capture_output=True, timeout=60)
    p = subprocess.Popen([str(exe), "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ok = errors = 0
    try:
        assert p.stdout.readline() == b"ready\n"
        for _ in range(12):
            time.sleep(0.01)
            with mappedtrace.attach(p.pid) as t:
                t0 = time.perf_counter()
                try:
                    heap = GlibcHeap(t, ModuleMap(t), use_debug_symbols=_libc_debug_file() is not None)
                    ok += 1
                    assert len(heap.arenas) == 3 and heap.stats["in_use_blks"] > 1000
                except MappedTraceError as e:
                    errors += 1
                    assert "\n" not in str(e)
                assert time.perf_counter() - t0 < 10
    finally:
        p.kill()
        p.wait()
        p.stdin.close()
        p.stdout.close()
    assert ok >= 6, (ok, errors)


FOREIGN_SBRK_C = r"""
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    void *volatile a = malloc(100);
    printf("live %p %zu\n", a, malloc_usable_size(a));
    char *f = sbrk(40960);                      /* someone else moves the brk */
    memset(f, 0x41, 40960);
    printf("foreign %p\n", (void *)f);
    for (int i = 0; i < 64; i++) {              /* the heap grows past the gap */
        void *p = malloc(4000);
        printf("live %p %zu\n", p, malloc_usable_size(p));
    }
    struct mallinfo2 mi = mallinfo2();
    printf("mallinfo2 arena=%zu uordblks=%zu fordblks=%zu\nready\n", mi.arena, mi.uordblks, mi.fordblks);
    fflush(stdout);
    char c; while (read(0, &c, 1) > 0) {}
    return 0;
}
"""


@pytest.mark.parametrize("debug", MODES)
def test_foreign_sbrk_gap(tmp_path, debug):
    """A program moves the brk itself between mallocs: glibc closes the old segment with two
    fence posts and goes on after the foreign bytes; the walk crosses the gap."""
    _need_trace()
    src = tmp_path / "f.c"
    src.write_text(FOREIGN_SBRK_C)
    exe = tmp_path / "f"
    subprocess.run([CC, "-O1", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    prog = Program(exe)
    try:
        heap = _walk(prog.pid, debug)
        live = prog.records("live")
        assert len(live) == 65
        for addr, usable in live:
            c = heap.find(int(addr, 16))
            assert c is not None and (c.address, c.size, c.state) == (int(addr, 16), int(usable), "in-use")
        foreign = int(prog.records("foreign")[0][0], 16)
        assert len(heap.main_gaps) == 1
        lo, hi = heap.main_gaps[0]
        assert lo <= foreign and foreign + 40960 <= hi and hi - lo < 40960 + 4096
        assert heap.find(foreign + 100) is None                       # the foreign bytes are no chunk
        mi = prog.mallinfo2()
        for key in ("arena", "uordblks", "fordblks"):
            assert heap.stats[key] == mi[key], key
    finally:
        prog.close()
