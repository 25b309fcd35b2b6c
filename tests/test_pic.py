"""Shared libraries and PIE executables (issue 11, item 4; FORMAT.md "Addresses").

Built at test time with ``mappedtrace cc`` from ``tests/pic/``: a library
``-fPIC -shared`` with leaks, globals and a waiting frame of its own, a PIE
executable linked against it, and a PIE that ``dlopen``s two copies of it
(two instrumented modules at addresses ld.so picks).  Checked:

* no ``DT_TEXTREL``, no dynamic relocation into the map sections, and
  ``.mtmap``/``.mtstack`` read-only (``A``, not ``WA``);
* ``mappedtrace run`` and ``leaks PID`` report exactly the leaks the programs
  print (``tests/leak_corpus/truth.h``), and the objects held only by a
  library frame's locals are found *through the library's maps* (exact roots
  named after that frame), which needs the load bias applied to every module.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

import conftest
from conftest import MAPPEDTRACE, ROOT, TRUTH, assert_exact, need, run_mt, run_traced

PIC = ROOT / "tests" / "pic"
TRUTH_H = ROOT / "tests" / "leak_corpus"
MAP_SECTIONS = (".mtmap", ".mtstack")


def _cc(*args: str) -> None:
    r = subprocess.run([MAPPEDTRACE, "cc", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TEXTREL" not in r.stderr, r.stderr[-3000:]


@pytest.fixture(scope="module", params=["-O0", "-O2"])
def built(request, tmp_path_factory) -> dict[str, Path]:
    need("clang-22", "readelf")
    opt = request.param
    d = tmp_path_factory.mktemp(f"pic{opt}")
    lib = d / "libpic.so"
    _cc(opt, "-fPIC", "-shared", f"-I{TRUTH_H}", "-o", str(lib), str(PIC / "libpic.c"))
    shutil.copy(lib, d / "libpic2.so")            # a second module from the same file
    main = d / "pic_main"
    _cc(opt, "-fPIE", "-pie", f"-I{TRUTH_H}", "-o", str(main), str(PIC / "pic_main.c"),
        f"-L{d}", "-lpic", f"-Wl,-rpath,{d}")
    # non-PIE: ld copies the library's exported global into the executable
    # (R_X86_64_COPY), so the program uses that copy, not the library's own
    nopie = d / "pic_main_nopie"
    _cc(opt, "-fno-pie", "-no-pie", f"-I{TRUTH_H}", "-o", str(nopie), str(PIC / "pic_main.c"),
        f"-L{d}", "-lpic", f"-Wl,-rpath,{d}")
    dl = d / "pic_dlopen"
    _cc(opt, "-fPIE", "-pie", "-o", str(dl), str(PIC / "pic_dlopen.c"), "-ldl")
    return {"lib": lib, "lib2": d / "libpic2.so", "main": main, "main_nopie": nopie, "dlopen": dl}


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("what", ["lib", "main", "dlopen"])
def test_no_text_relocations_and_read_only_maps(built, what: str) -> None:
    path = str(built[what])
    assert "TEXTREL" not in _readelf("-d", path)
    assert "DYN" in _readelf("-h", path).split("Type:", 1)[1].splitlines()[0]   # PIE / shared
    sections = {}
    for line in _readelf("-S", path).splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 7 and parts[1] in MAP_SECTIONS:
            sections[parts[1]] = (int(parts[3], 16), int(parts[5], 16), parts[7])
    assert set(sections) == set(MAP_SECTIONS), sections
    for name, (_addr, _size, flags) in sections.items():
        assert "A" in flags and "W" not in flags, (name, flags)
    # and no dynamic relocation writes into them
    for line in _readelf("-r", path).splitlines():
        fields = line.split()
        if fields and all(c in "0123456789abcdef" for c in fields[0]) and len(fields[0]) >= 8:
            at = int(fields[0], 16)
            for name, (start, size, _f) in sections.items():
                assert not start <= at < start + size, f"dynamic relocation at {at:#x} in {name}: {line}"


def test_maps_decode_to_the_symbols(built) -> None:
    """Every function address of the library's maps (relative in the file) is
    its symbol's link-time address; every record lies inside its function."""
    from mappedtrace.formats import elf
    from mappedtrace.formats.maps import BinaryMaps
    bm = BinaryMaps.load(str(built["lib"]))
    assert not [w for w in bm.warnings if "relocat" in w], bm.warnings
    named = {f.name: f for f in bm.functions}
    for name in ("pic_leak_list", "pic_keep", "pic_hold_and_wait"):
        assert named[name].address == elf.symbol_address(str(built["lib"]), name), name
        assert named[name].status == "instrumented"
    for rec in bm.records.values():
        fi = bm.function_at(rec.pc)
        assert fi is not None and fi.address == rec.function_address and fi.status != "skipped"
    globs = {g.name: g.address for g in bm.globals}
    assert globs["pic_kept_list"] == elf.symbol_address(str(built["lib"]), "pic_kept_list")
    assert "pic_static_keep" in globs and globs["pic_static_keep"]


@pytest.mark.parametrize("main", ["main", "main_nopie"])
def test_run_pie_with_library_exact(built, tmp_path: Path, main: str) -> None:
    """At exit, with the library's leaks and kept objects.  Linked non-PIE,
    the library's exported list head lives in the executable's copy
    (FORMAT.md "Addresses", known imprecision): the copy is scanned with the
    executable's data, so the list stays reachable."""
    if main == "main_nopie":
        assert "R_X86_64_COPY" in _readelf("-r", str(built[main]))
    r, report, truth, kept = run_traced(built[main], tmp_path)
    assert_exact(report, truth, kept, r.stderr[-3000:])
    assert len(truth) == 4 and r.returncode == 23
    p = report["precision"]
    assert {built[main].name, "libpic.so"} <= set(p["modules_with_maps"])
    assert p["globals_typed"] >= 2          # the library's global and static, by its maps
    assert p["frames_unsettled"] == 0


def test_run_dlopen_two_copies_exact(built, tmp_path: Path) -> None:
    exe = built["dlopen"]
    js = tmp_path / "dl.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", str(exe), str(built["lib"]),
                        str(built["lib2"])], capture_output=True, text=True, timeout=300)
    truth, kept = _truth(r.stderr)
    report = json.loads(js.read_text())
    assert_exact(report, truth, kept, r.stderr[-3000:])
    assert len(truth) == 3 + 4 and r.returncode == 23
    assert {"libpic.so", "libpic2.so"} <= set(report["precision"]["modules_with_maps"])


def _truth(stderr: str) -> tuple[dict, set]:
    return conftest.truth_of(stderr)


def _start_waiting(argv: list[str], err: Path) -> subprocess.Popen:
    fh = err.open("w")
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fh)
    fh.close()
    deadline = time.monotonic() + 60
    while "ready" not in err.read_text():
        assert p.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
        time.sleep(0.02)
    return p


@pytest.mark.parametrize("how", ["linked", "dlopen"])
def test_live_leaks_and_library_frame_exact(built, tmp_path: Path, how: str) -> None:
    """``leaks PID`` while the program waits inside the library: the leak
    report is exact, and the two objects held only by the library frame's
    locals are exact roots of that frame, found through its maps at the
    address where ld.so put it."""
    import mappedtrace
    from mappedtrace import session
    if how == "linked":
        argv = [str(built["main"]), "wait"]
    else:
        argv = [str(built["dlopen"]), "wait", str(built["lib"]), str(built["lib2"])]
    err = tmp_path / "err"
    p = _start_waiting(argv, err)
    try:
        js = tmp_path / "live.json"
        r = run_mt("leaks", str(p.pid), "--json", str(js))
        assert r.returncode == 23 and "Traceback" not in r.stderr, r.stderr[-3000:]
        truth, kept = _truth(err.read_text())
        report = json.loads(js.read_text())
        assert_exact(report, truth, kept, r.stderr[-3000:])
        p_ = report["precision"]
        # main (or the dlopen driver) and the library's waiting frame, from their maps
        assert p_["frames_unsettled"] == 0 and p_["frames_exact"] >= 2, p_
        last_two = [int(a, 16) for k, a, _s, _h in TRUTH.findall(err.read_text()) if k == "kept"][-2:]
        held: dict[int, str] = {}        # pointer -> source, of the frame's exact roots
        with mappedtrace.capture(p.pid) as t:
            a = session.analyse(t, leaks=False)
            for rt in a.roots.roots:
                if "pic_hold_and_wait" not in rt.source or not rt.exact:
                    continue
                if rt.kind == "value":          # a register or spill slot (-O2)
                    held[rt.value] = rt.source
                else:                            # a stack slot (-O0): read what it holds
                    data = t.read(rt.value, rt.size)
                    for (w,) in struct.iter_unpack("<Q", data[:len(data) // 8 * 8]):
                        held[w] = rt.source
        # b (the last object printed) is live across read(); a is reachable from b
        b = last_two[1]
        assert b in held, sorted((hex(v), src) for v, src in held.items())
        p.stdin.write(b"x")
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_cxx_inline_functions_in_a_pie(tmp_path: Path) -> None:
    """Inline functions and templates of two C++ translation units are comdat
    members (one copy kept): in a PIE they are named by their own symbols,
    PC-relative (FORMAT.md "Addresses"), so still no TEXTREL, read-only maps,
    and every kept copy's map address is its symbol's."""
    need("clang++-22", "readelf")
    from mappedtrace.formats import elf
    from mappedtrace.formats.maps import BinaryMaps
    exe = tmp_path / "cxx_pie"
    r = subprocess.run([MAPPEDTRACE, "c++", "-O0", "-fPIE", "-pie", f"-I{TRUTH_H}", "-o", str(exe),
                        str(PIC / "cxx_a.cpp"), str(PIC / "cxx_b.cpp")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "TEXTREL" not in r.stderr, r.stderr[-3000:]
    assert "TEXTREL" not in _readelf("-d", str(exe))
    for line in _readelf("-S", str(exe)).splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 7 and parts[1] in MAP_SECTIONS:
            assert "W" not in parts[7], line
    bm = BinaryMaps.load(str(exe))
    inline = [f for f in bm.functions if f.name.startswith("_Z4cell") or f.name.startswith("_Z5chain")]
    assert len(inline) >= 2, [f.name for f in bm.functions]      # one entry per translation unit
    for f in inline:
        assert f.address == elf.symbol_address(str(exe), f.name), f.name
    r, report, truth, kept = run_traced(exe, tmp_path)
    assert_exact(report, truth, kept, r.stderr[-3000:])
    assert len(truth) == 5


def test_weak_and_hidden_definitions_in_a_shared_library(tmp_path: Path) -> None:
    """A weak function (outside a comdat) gets a local name, and C++ code
    built -fvisibility=hidden names its comdat members by their own (not
    preemptible) symbols: neither leaves a dynamic relocation in the maps;
    the weak function's map address is its symbol's."""
    need("clang++-22", "readelf")
    from mappedtrace.formats import elf
    from mappedtrace.formats.maps import BinaryMaps
    weak = tmp_path / "weak.c"
    weak.write_text("#include <stdlib.h>\n__attribute__((weak, noinline)) void *wmk(int n) { return malloc(n); }\n"
                    "void *use(int n) { return wmk(n); }\n")
    _cc("-O2", "-fPIC", "-shared", "-o", str(tmp_path / "libweak.so"), str(weak))
    lib = str(tmp_path / "libweak.so")
    assert "TEXTREL" not in _readelf("-d", lib)
    fn = {f.name: f for f in BinaryMaps.load(lib).functions}
    assert fn["wmk"].address == elf.symbol_address(lib, "wmk") and fn["wmk"].status == "instrumented"
    # (no libstdc++ here: its headers make namespace std default visibility)
    src = tmp_path / "hidden.cpp"
    src.write_text("#include <stdlib.h>\nstruct C { C *next; };\n"
                   "inline C *cell(C *n) { C *c = (C *)malloc(sizeof(C)); c->next = n; return c; }\n"
                   "template <class T> T *two(T *p) { return cell(cell(p)); }\n"
                   "__attribute__((visibility(\"default\"))) void *api() { return two<C>(nullptr); }\n")
    cxx = tmp_path / "libcxx.so"
    r = subprocess.run([MAPPEDTRACE, "c++", "-O0", "-fPIC", "-shared", "-fvisibility=hidden",
                        "-o", str(cxx), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "TEXTREL" not in r.stderr, r.stderr[-3000:]
    assert "TEXTREL" not in _readelf("-d", str(cxx))
    names = {f.name for f in BinaryMaps.load(str(cxx)).functions}
    assert {"_Z4cellP1C", "_Z3twoI1CEPT_S2_"} <= names, names        # out of line at -O0, comdat
    for line in _readelf("-S", str(cxx)).splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 7 and parts[1] in MAP_SECTIONS:
            assert "W" not in parts[7], line
