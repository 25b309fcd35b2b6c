"""Every root area (issue #11 items 2 and 3): the argv/envp/auxv area above the
first frame, the stack above a frame the unwinder could not go past, the TLS
of every module found through the dynamic linker's link maps, and the frames
on the exit path at exit.  Each program prints what must stay reachable
(``truth kept ADDR``, tests/leak_corpus/truth.h); the right answer is always
"no leak", checked at exit (``mappedtrace run``) and live (``mappedtrace leaks
PID``), in the precise and the conservative mode."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, TRUTH, addr, need, run_mt, run_traced
from mappedtrace.target.base import Target

HERE = ROOT / "tests" / "root_areas"
CORPUS = ROOT / "tests" / "leak_corpus"


def build(src: Path, out: Path, *extra: str, opt: str = "-O2") -> Path:
    r = subprocess.run([MAPPEDTRACE, "cc", opt, "-pthread", f"-I{CORPUS}", "-o", str(out), str(src), *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def kept_of(stderr: str) -> set[int]:
    return {int(a, 16) for kind, a, _s, _h in TRUTH.findall(stderr) if kind == "kept"}


def check_at_exit(exe: Path, tmp: Path, *args: str, mode: str = "precise", code: int = 0) -> dict:
    """``mappedtrace run`` on ``exe ARGS``: no leak, every kept object reachable."""
    js = tmp / f"{exe.name}-{mode}.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--roots", mode, "--", str(exe), *args],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    kept = kept_of(r.stderr)
    assert kept, r.stderr[-2000:]
    report = json.loads(js.read_text())
    leaked = {addr(l["address"]): l for l in report["leaks"]}
    assert not leaked, (mode, [(hex(a), l["size"], l["type"]) for a, l in leaked.items()], r.stderr[-3000:])
    assert r.returncode == code, r.stderr[-2000:]
    return report


def check_live(exe: Path, tmp: Path, *args: str, mode: str = "precise") -> dict:
    """``mappedtrace leaks PID`` while ``exe ARGS`` waits on stdin: no leak, and the
    program runs on and exits normally afterwards."""
    err = tmp / f"{exe.name}-{mode}.stderr"
    with open(err, "w") as ef:
        p = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        js = tmp / f"{exe.name}-live-{mode}.json"
        r = run_mt("leaks", str(p.pid), "--roots", mode, "--json", str(js))
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(js.read_text())
    finally:
        p.stdin.close()
        p.stdout.read()
        rc = p.wait(timeout=60)
    assert rc == 0
    assert kept_of(err.read_text())
    assert report["summary"]["leaked_objects"] == 0, (mode, report["leaks"][:5])
    return report


# --------------------------------------------------------------------------
# the argv/envp/auxv area above main's caller frames

@pytest.fixture(scope="module")
def environ_copy(tmp_path_factory) -> Path:
    return build(CORPUS / "environ_copy.c", tmp_path_factory.mktemp("env") / "environ_copy")


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_setproctitle_copies_are_reachable_at_exit(environ_copy: Path, tmp_path: Path, mode: str) -> None:
    """Heap copies of argv[1..] and environ kept only in the arrays on the initial
    stack (as Redis's and nginx's setproctitle do) are not leaks."""
    report = check_at_exit(environ_copy, tmp_path, "one", "two", mode=mode)
    p = report["precision"]
    assert p["stack_above_frames_bytes"] > 0, p
    assert report["summary"]["reachable_objects"] >= 3


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_setproctitle_copies_are_reachable_live(environ_copy: Path, tmp_path: Path, mode: str) -> None:
    report = check_live(environ_copy, tmp_path, "wait", "two", mode=mode)
    assert report["precision"]["stack_above_frames_bytes"] > 0


# --------------------------------------------------------------------------
# a stack the unwinder cannot finish

@pytest.fixture(scope="module")
def unwind_stop(tmp_path_factory) -> Path:
    return build(HERE / "unwind_stop.c", tmp_path_factory.mktemp("us") / "unwind_stop")


def test_stack_above_an_unfinished_walk_is_scanned_at_exit(unwind_stop: Path, tmp_path: Path) -> None:
    """The walk stops at park() (return address 0), an exact frame: main's frame
    above it holds the only pointer to a kept structure, and is scanned."""
    js = tmp_path / "us.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", str(unwind_stop)],
                       capture_output=True, text=True, timeout=300, input="")
    assert "return address is 0" in r.stderr, r.stderr[-2000:]
    report = json.loads(js.read_text())
    assert report["summary"]["leaked_objects"] == 0, report["leaks"]
    assert len(kept_of(r.stderr)) == 2 and r.returncode == 0
    assert report["precision"]["stack_above_frames_bytes"] > 0


def test_stack_above_an_unfinished_walk_is_scanned_live(unwind_stop: Path, tmp_path: Path) -> None:
    check_live(unwind_stop, tmp_path)


# --------------------------------------------------------------------------
# exit() deep in the call stack

@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_objects_held_by_callers_of_exit_are_not_leaks(opt: str, tmp_path: Path) -> None:
    """main keeps a structure only in a local and calls fail() → exit(2): main's
    frame is scanned at exit (LeakSanitizer's rule), the program's code is kept."""
    exe = build(HERE / "exit_deep.c", tmp_path / f"exit_deep{opt}", opt=opt)
    report = check_at_exit(exe, tmp_path, code=2)
    assert report["precision"]["frames_exit_path_scanned"] >= 1, report["precision"]


def test_the_frame_calling_exit_stays_exact(tmp_path: Path) -> None:
    """The frame that calls exit() itself is decoded with the maps: its dead slot
    still does not hide stale_slot's leak (the rule is only for its callers)."""
    exe = build(CORPUS / "stale_slot.c", tmp_path / "stale_slot", opt="-O0")
    _r, report, truth, _kept = run_traced(exe, tmp_path)
    assert {addr(l["address"]) for l in report["leaks"]} == set(truth) and len(truth) == 1


def test_leaksanitizer_agrees_on_exit_deep(tmp_path: Path) -> None:
    """The reference: LeakSanitizer reports nothing on exit_deep either."""
    need("clang-22")
    exe = tmp_path / "exit_deep_lsan"
    r = subprocess.run(["clang-22", "-O2", "-g", "-fsanitize=leak", f"-I{CORPUS}", "-o", str(exe),
                        str(HERE / "exit_deep.c")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"LeakSanitizer runtime unavailable: {r.stderr[-200:]}")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(kept_of(r.stderr)) == 2, r.stderr
    assert "LeakSanitizer" not in r.stderr, r.stderr


# --------------------------------------------------------------------------
# TLS of every module, through the dynamic linker's records

@pytest.fixture(scope="module")
def tls_program(tmp_path_factory) -> tuple[Path, Path]:
    """libbig.so.1.0.4 (70 000 bytes of TLS) and libfoo.so.1.0.4, each behind a
    versioned symlink (libfoo.so.1 → libfoo.so.1.0.4), built without maps; the
    program with the maps, linked against both with an rpath."""
    need("clang-22")
    d = tmp_path_factory.mktemp("tls")
    lib = d / "lib"
    lib.mkdir()
    for name, big in (("big", 70000), ("foo", 64)):
        real = lib / f"lib{name}.so.1.0.4"
        r = subprocess.run(["clang-22", "-O2", "-g", "-fPIC", "-shared", f"-DLIB={name}", f"-DBIG={big}",
                            f"-Wl,-soname,lib{name}.so.1", "-o", str(real), str(HERE / "tls_lib.c")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (lib / f"lib{name}.so.1").symlink_to(real.name)
        (lib / f"lib{name}.so").symlink_to(f"lib{name}.so.1")
    exe = build(HERE / "tls_main.c", d / "tls_main", f"-L{lib}", "-lbig", "-lfoo", f"-Wl,-rpath,{lib}")
    return exe, lib


@pytest.mark.parametrize("mode", ["precise", "conservative"])
def test_tls_of_versioned_libraries_at_exit(tls_program, tmp_path: Path, mode: str) -> None:
    """Objects kept in the libraries' thread-locals (main thread and a worker) are
    reachable, and glibc's tcache is found through libc's exact TLS block, so the
    freed blocks in it are free, not leaks."""
    exe, _lib = tls_program
    report = check_at_exit(exe, tmp_path, mode=mode)
    p = report["precision"]
    assert p["heap_walk_exact"] and p["tls_blocks_scanned"] >= 2 * 3, p


def test_tls_of_versioned_libraries_live(tls_program, tmp_path: Path) -> None:
    exe, _lib = tls_program
    check_live(exe, tmp_path, "wait")


def test_tls_index_reads_the_link_maps(tls_program, tmp_path: Path) -> None:
    """The link-map index names libfoo by its link-map name (libfoo.so.1) and maps
    it to the file /proc/PID/maps shows (libfoo.so.1.0.4); the block it gives
    for the main thread holds the pointer the program kept in ``foo_obj``."""
    import mappedtrace
    from mappedtrace.formats import elf
    from mappedtrace.heap.glibc import GlibcHeap
    from mappedtrace.modules import ModuleMap
    exe, lib = tls_program
    err = tmp_path / "tls.stderr"
    with open(err, "w") as ef:
        p = subprocess.Popen([str(exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with mappedtrace.attach(p.pid) as t:
            mods = ModuleMap(t)
            index = mods.tls
            assert index.complete and not index.warnings, index.warnings
            foo = next(tm for tm in index.modules if tm.name.endswith("libfoo.so.1"))
            assert foo.module.path.endswith("libfoo.so.1.0.4")
            assert len({tm.modid for tm in index.modules}) == len(index.modules) >= 3    # big, foo, libc
            libc = next(tm for tm in index.modules if tm.module.name.startswith("libc.so"))
            assert libc.modid > foo.modid
            main = t.thread(p.pid)
            sym = elf.symbol(foo.module.path, "foo_obj")
            value = t.read_u64(index.block(t, main, foo) + sym.addr)
            # without libc's debug symbols the walker still names each thread's
            # tcache by the pointer in that thread's libc TLS block (70 000 bytes of
            # libbig's TLS lie between it and the thread pointer)
            heap = GlibcHeap(t, mods, use_debug_symbols=False)
            assert sorted(o for o, _ in heap.tcaches) == sorted(f"thread {th.tid}" for th in t.threads)
    finally:
        p.stdin.close()
        p.stdout.read()
        assert p.wait(timeout=60) == 0
    m = re.search(r"main foo_obj (0x[0-9a-f]+)", err.read_text())
    assert m and value == int(m.group(1), 16)


@pytest.fixture(scope="module")
def maps_lib(tls_program, tmp_path_factory) -> Path:
    """A directory with libfoo built with the maps (behind the same versioned
    symlinks) and the plain libbig."""
    _exe, lib = tls_program
    mlib = tmp_path_factory.mktemp("maps") / "lib"
    mlib.mkdir()
    real = mlib / "libfoo.so.1.0.4"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-fPIC", "-shared", "-DLIB=foo", "-DBIG=64",
                        "-Wl,-soname,libfoo.so.1", "-o", str(real), str(HERE / "tls_lib.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (mlib / "libfoo.so.1").symlink_to(real.name)
    (mlib / "libfoo.so").symlink_to("libfoo.so.1")
    for f in ("libbig.so.1.0.4", "libbig.so.1", "libbig.so"):
        os.symlink(os.path.realpath(lib / f) if f.endswith(".4") else os.readlink(lib / f), mlib / f)
    return mlib


def test_typed_tls_of_an_instrumented_library(maps_lib: Path, tmp_path: Path) -> None:
    """libfoo built with the maps: its thread-local ``foo_obj`` is a typed, exact
    root in each of the two threads (found through the link maps: before, only
    the executable's thread-locals were located)."""
    exe2 = build(HERE / "tls_main.c", tmp_path / "tls_main_maps", f"-L{maps_lib}", "-lbig", "-lfoo",
                 f"-Wl,-rpath,{maps_lib}")
    report = check_at_exit(exe2, tmp_path)
    p = report["precision"]
    assert "libfoo.so.1.0.4" in p["modules_with_maps"], p
    assert p["tls_typed"] == 2, p


@pytest.mark.parametrize("maps,mode", [(False, "precise"), (False, "conservative"), (True, "precise")])
def test_tls_of_a_dlopened_library(tls_program, maps_lib: Path, tmp_path: Path, maps: bool, mode: str) -> None:
    """A library loaded with dlopen: its TLS block is a heap chunk that only the
    main thread's DTV (in ld.so's anonymous memory next to the TCB) points to;
    the object kept in it is reachable, the block too."""
    _exe, lib = tls_program
    exe = build(HERE / "tls_dlopen.c", tmp_path / "tls_dlopen", "-ldl")
    report = check_at_exit(exe, tmp_path, str((maps_lib if maps else lib) / "libfoo.so.1"), mode=mode)
    if maps:
        assert report["precision"]["tls_typed"] == 1, report["precision"]


class _Patched(Target):
    """A real stopped process whose memory reads back with some words replaced
    (a corrupted link-map chain, generated in code)."""

    def __init__(self, live: Target, patches: dict[int, int]):
        super().__init__(pid=live.pid, threads=live.threads, mappings=live.mappings, auxv=live.auxv,
                         exe=live.exe)
        self.live, self.patches = live, patches

    def _read(self, addr: int, size: int) -> bytes:
        data = bytearray(self.live.read(addr, size))
        for a, v in self.patches.items():
            for i, b in enumerate(v.to_bytes(8, "little")):
                if addr <= a + i < addr + size:
                    data[a + i - addr] = b
        return bytes(data)


def test_corrupted_link_maps_are_warnings(tls_program, tmp_path: Path) -> None:
    """A link-map chain that loops, leads to unmapped memory, or has TLS fields
    that disagree with the module's PT_TLS: the index is bounded, says what went
    wrong, and keeps what it could read; the leak analysis still completes."""
    import mappedtrace
    from mappedtrace.modules import ModuleMap
    from mappedtrace.session import analyse
    from mappedtrace.tls import LINK_MAP_HEAD, TLS_FIELDS_2_36
    exe, _lib = tls_program
    p = subprocess.Popen([str(exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with mappedtrace.attach(p.pid) as t:
            good = ModuleMap(t).tls
            foo = next(tm for tm in good.modules if tm.name.endswith("libfoo.so.1"))
            l_next = foo.link_map + 3 * 8
            assert LINK_MAP_HEAD.size == 4 * 8
            # a loop back to libfoo's own record
            idx = ModuleMap(_Patched(t, {l_next: foo.link_map})).tls
            assert idx.complete and any("loops" in w for w in idx.warnings)
            assert [tm.name for tm in idx.modules] == \
                [tm.name for tm in good.modules[:good.modules.index(foo) + 1]]
            # into unmapped memory
            idx = ModuleMap(_Patched(t, {l_next: 0x10})).tls
            assert any("unreadable" in w for w in idx.warnings) and foo.name in [tm.name for tm in idx.modules]
            # l_tls_blocksize that is not libfoo's p_memsz: libfoo is not located, the rest are
            bad = _Patched(t, {foo.link_map + TLS_FIELDS_2_36 + 16: foo.blocksize + 4096})
            idx = ModuleMap(bad).tls
            assert any("do not match its PT_TLS" in w and "libfoo" in w for w in idx.warnings), idx.warnings
            assert foo.name not in [tm.name for tm in idx.modules] and len(idx.modules) == len(good.modules) - 1
            a = analyse(bad)
            assert any("libfoo" in w for w in a.warnings)
            assert a.heap.exact            # libc's TLS (the tcache) is still found
    finally:
        p.stdin.close()
        p.stdout.read()
        assert p.wait(timeout=60) == 0


def test_debian_jq_has_no_leaks(tmp_path: Path) -> None:
    """Plain /usr/bin/jq (no maps; libjq.so.1 → libjq.so.1.0.4 has thread-locals):
    valgrind says all heap blocks were freed, and so does the tracer."""
    need("jq")
    js = tmp_path / "jq.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", "jq", "-n", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr[-3000:]
    report = json.loads(js.read_text())
    assert report["summary"]["leaked_objects"] == 0, report["leaks"][:5]
    assert report["precision"]["heap_walk_exact"], report["precision"]
    assert "could not locate libc's TLS block" not in r.stderr


def test_debian_jq_dying_on_a_bad_option_has_no_leaks(tmp_path: Path) -> None:
    """``jq --nosuchoption .``: main → die() → exit(2); valgrind calls what main
    holds still reachable, LeakSanitizer reports nothing, nor does the tracer."""
    need("jq")
    js = tmp_path / "jq.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", "jq", "--nosuchoption", "."],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Unknown option" in r.stderr, r.stderr[-3000:]
    report = json.loads(js.read_text())
    assert report["summary"]["leaked_objects"] == 0, report["leaks"][:5]
    assert report["precision"]["frames_exit_path_scanned"] >= 1


def test_root_areas_in_a_snapshot_file(tls_program, tmp_path: Path) -> None:
    """The same answer from a snapshot (core file) as from the live process: the
    link maps, the stack above the frames and the TLS blocks are in its memory."""
    exe, _lib = tls_program
    core = tmp_path / "tls.core"
    p = subprocess.Popen([str(exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = run_mt("snapshot", str(p.pid), "-o", str(core))
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        p.stdin.close()
        p.stdout.read()
        assert p.wait(timeout=60) == 0
    js = tmp_path / "core.json"
    r = run_mt("leaks", str(core), "--json", str(js))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(js.read_text())
    assert report["summary"]["leaked_objects"] == 0, report["leaks"][:5]
    p = report["precision"]
    assert p["heap_walk_exact"] and p["tls_blocks_scanned"] >= 2 * 3 and p["stack_above_frames_bytes"] > 0, p


# --------------------------------------------------------------------------
# pointers saved as bytes in a stack buffer (SQLite's saveBuf, the map oracle)

@pytest.fixture(scope="module", params=["-O0", "-O2"])
def saved_bytes(request, tmp_path_factory) -> Path:
    return build(HERE / "saved_bytes.c", tmp_path_factory.mktemp("sb") / f"saved_bytes{request.param}",
                 opt=request.param)


def test_pointers_saved_in_a_char_buffer_are_reachable_live(saved_bytes: Path, tmp_path: Path) -> None:
    """During the call the only references are bytes of `char buf[]` in an exact
    frame: the buffer must be a slot scanned word by word (STORED)."""
    report = check_live(saved_bytes, tmp_path, "wait")
    assert report["precision"]["frames_exact"] >= 2, report["precision"]


def test_the_saved_bytes_buffer_is_a_stored_slot(saved_bytes: Path) -> None:
    """`mappedtrace maps` shows the buffer in the record of the call: a slot whose
    type has every word STORED (scanned conservatively), not a plain char[]."""
    m = json.loads(subprocess.run([MAPPEDTRACE, "maps", "--json", str(saved_bytes)], capture_output=True,
                                  text=True, check=True).stdout)
    types = {t["id"]: t for t in m["types"]}
    rec = next(r for r in m["records"] if r.get("function") == "save_restore")
    slots = [e for e in rec["entries"] if e["role"] == "slot" and e["type"].startswith("char")]
    assert len(slots) == 1, rec
    t = types[slots[0]["type_id"]]
    assert t["size"] == 32 and sum(s["count"] for s in t["slots"] if "stored" in s["flags"]) == 4, t


# --------------------------------------------------------------------------
# callee-saved registers of an uninstrumented top frame that belong to an exact caller

def _wait_in_read(pid: int, timeout: float = 30) -> None:
    """Until ``pid`` sleeps in read(2) (its top frame is libc's, not main's)."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if Path(f"/proc/{pid}/syscall").read_text().split()[0] == "0":
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} never blocked in read()")


@pytest.fixture(scope="module")
def dead_register(tmp_path_factory) -> Path:
    return build(HERE / "dead_register.c", tmp_path_factory.mktemp("dr") / "dead_register")


@pytest.mark.parametrize("model", ["off", "on"])
@pytest.mark.parametrize("mode", ["fork", "stop-copy"])
def test_a_dead_pointer_in_a_register_libc_leaves_alone_is_not_a_root(dead_register: Path, tmp_path: Path,
                                                                      mode: str, model: str) -> None:
    """read()'s frame is libc's (scanned with the glibc model off), but its CFI
    leaves r14 alone: r14 is main's, dead at main's call by main's map, so the
    list is found leaked.  With the glibc model on (a modelled glibc build),
    read() is a checked syscall wrapper with an exact caller: no register of
    it is a root at all, and the list is found leaked the same."""
    err = tmp_path / "dr.stderr"
    with open(err, "w") as ef:
        p = subprocess.Popen([str(dead_register)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef,
                             text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        _wait_in_read(p.pid)
        js = tmp_path / f"dr-{mode}.json"
        r = run_mt("leaks", str(p.pid), "--mode", mode, "--json", str(js),
                   env={"MAPPEDTRACE_GLIBC_MODEL": "off"} if model == "off" else None)
        assert r.returncode == 23, r.stderr[-3000:]
        report = json.loads(js.read_text())
    finally:
        p.stdin.close()
        p.stdout.read()
        assert p.wait(timeout=60) == 0
    truth = {int(a, 16): (int(s), h) for kind, a, s, h in TRUTH.findall(err.read_text()) if kind == "leak"}
    assert len(truth) == 3
    leaked = {addr(l["address"]) for l in report["leaks"]}
    assert leaked == set(truth), ([hex(a) for a in leaked], [hex(a) for a in truth])
    if model == "off" or report["precision"]["glibc_model"].startswith("off"):
        assert report["precision"]["registers_left_to_exact_callers"] >= 1, report["precision"]
    else:
        assert report["precision"]["frames_by_model"].get("syscall wrapper") == 1, report["precision"]
