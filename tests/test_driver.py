"""``mappedtrace cc`` and ``mappedtrace rustc``: drop-in compilers.

Programs built through the drivers must behave exactly like the same programs
built by plain clang-22 (or rustc) and must carry pointer maps.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need, real_map_warnings as _real_warnings, run_traced  # noqa: F401 (and the plugin fixture)
from elftools.elf.elffile import ELFFile

from mappedtrace import driver
from mappedtrace.formats import maps
from mappedtrace import toolchain as tc

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "samples"
VENV_BIN = Path(sys.executable).parent
MT = str(VENV_BIN / "mappedtrace") if (VENV_BIN / "mappedtrace").exists() else "mappedtrace"

needs_llvm = pytest.mark.skipif(
    not (tc.find_tool("clang-22") and shutil.which("cmake")),
    reason="clang-22 / cmake not installed")


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess:
    e = dict(os.environ, MAPPEDTRACE_VERIFY="1")
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=e)


def _sections(binary: Path) -> set[str]:
    r = _run(["readelf", "-S", "-W", str(binary)])
    return set(re.findall(r"\]\s+(\S+)", r.stdout))


def _no_textrel(binary: Path) -> bool:
    return "TEXTREL" not in _run(["readelf", "-d", str(binary)]).stdout


@needs_llvm
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_cc_leaky_same_output_as_clang(plugin, tmp_path, opt):
    exe, ref = tmp_path / "leaky", tmp_path / "leaky_ref"
    r = _run([MT, "cc", opt, "-o", str(exe), str(SAMPLES / "leaky.c")])
    assert r.returncode == 0, r.stderr
    r = _run([tc.require_tool("clang-22"), opt, "-o", str(ref), str(SAMPLES / "leaky.c")])
    assert r.returncode == 0, r.stderr
    a, b = _run([str(exe)]), _run([str(ref)])
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
    assert {".mtmap", ".mtstack"} <= _sections(exe)
    assert ".mtmap" not in _sections(ref)
    assert _no_textrel(exe)
    # clang's own choice of PIE or not (Debian: PIE, ELF type DYN), no TEXTREL either way
    elf_type = lambda b: re.search(r"Type:\s+(\S+)", _run(["readelf", "-h", str(b)]).stdout).group(1)
    assert elf_type(exe) == elf_type(ref)


_MAKE_PROJECT = {
    "list.h": "struct item { struct item *next; char *name; };\n"
              "struct item *push(struct item *l, const char *name);\n"
              "int count(const struct item *l);\n",
    "list.c": "#include <stdlib.h>\n#include <string.h>\n#include \"list.h\"\n"
              "struct item *push(struct item *l, const char *name) {\n"
              "  struct item *i = malloc(sizeof *i); i->next = l; i->name = strdup(name); return i; }\n"
              "int count(const struct item *l) { int n = 0; for (; l; l = l->next) n++; return n; }\n",
    "main.c": "#include <stdio.h>\n#include \"list.h\"\n"
              "struct item *all;\n"
              "int main(int argc, char **argv) {\n"
              "  for (int i = 0; i < argc; i++) all = push(all, argv[i]);\n"
              "  all = push(all, \"x\");\n"
              "  printf(\"%d items, first %s\\n\", count(all), all->name);\n"
              "  return count(all) == argc + 1 ? 0 : 1; }\n",
    "Makefile": "CC ?= cc\nCFLAGS ?= -O2 -Wall\n"
                "prog: main.o list.o\n\t$(CC) $(CFLAGS) -o $@ main.o list.o\n"
                "%.o: %.c list.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
                "clean:\n\trm -f prog *.o\n",
}


@needs_llvm
def test_make_with_mappedtrace_cc(plugin, tmp_path):
    need("make")
    for name, text in _MAKE_PROJECT.items():
        (tmp_path / name).write_text(text)
    r = _run(["make", f"CC={MT} cc", "-j2"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = _run([str(tmp_path / "prog"), "a", "b"])
    assert out.returncode == 0 and out.stdout == "4 items, first x\n"
    assert {".mtmap", ".mtstack"} <= _sections(tmp_path / "prog")
    bm = maps.BinaryMaps.load(str(tmp_path / "prog"))
    names = {f.name for f in bm.functions}
    assert {"main", "push", "count"} <= names          # two translation units, two chunks
    item = next(t for t in bm.types.values() if t.name == "struct item")
    assert [(s.offset, s.target) for s in item.slots][0] == (0, item.id)
    assert any(g.name == "all" and g.type_id for g in bm.globals)


@needs_llvm
def test_cc_passthrough_modes(plugin, tmp_path):
    src = SAMPLES / "leaky.c"
    a = _run([MT, "cc", "-E", str(src)])
    b = _run([tc.require_tool("clang-22"), "-E", str(src)])
    assert a.returncode == 0 and a.stdout == b.stdout
    a = _run([MT, "cc", "-MM", str(src)])
    assert a.returncode == 0 and "leaky.o:" in a.stdout
    v = _run([MT, "cc", "--version"])
    assert v.returncode == 0 and "clang version 22" in v.stdout
    # -S and -c, then a separate link
    r = _run([MT, "cc", "-O1", "-S", "-o", str(tmp_path / "l.s"), str(src)])
    assert r.returncode == 0 and ".mtstack" in (tmp_path / "l.s").read_text()
    r = _run([MT, "cc", "-O1", "-c", "-o", str(tmp_path / "l.o"), str(src)])
    assert r.returncode == 0, r.stderr
    r = _run([MT, "cc", "-o", str(tmp_path / "l"), str(tmp_path / "l.o")])
    assert r.returncode == 0 and r.stderr == "", r.stderr   # no "unused argument" noise
    assert _run([str(tmp_path / "l")]).returncode == 0


def test_cc_command_line(tmp_path):
    # How flags are added, without running anything.
    need("clang-22")
    p = "/x/MappedTracePass.so"
    # PIE or not is the user's (or clang's default): the maps need no dynamic relocation
    pie_flags = {"-fno-pie", "-no-pie", "-fPIE", "-pie", "-fPIC"}
    cmd = driver.cc_command(["-O2", "-c", "a.c"], plugin=p)
    assert f"-fpass-plugin={p}" in cmd and "-g" in cmd and not pie_flags & set(cmd)
    cmd = driver.cc_command(["-O2", "-g1", "-o", "a", "a.c"], plugin=p)
    assert cmd.count("-g1") == 1 and "-g" not in cmd and not pie_flags & set(cmd)
    cmd = driver.cc_command(["-fPIC", "-shared", "-o", "liba.so", "a.c"], plugin=p)
    assert pie_flags & set(cmd) == {"-fPIC"}
    cmd = driver.cc_command(["-fno-pie", "-no-pie", "-o", "a", "a.c"], plugin=p)
    assert cmd.count("-no-pie") == 1 and cmd.count("-fno-pie") == 1
    cmd = driver.cc_command(["-o", "a", "a.o", "b.o"], plugin=p)
    assert not any(a.startswith("-fpass-plugin") for a in cmd) and not pie_flags & set(cmd)
    cmd = driver.cc_command(["-flto", "-o", "a", "a.c"], plugin=p)
    assert f"-Wl,--load-pass-plugin={p}" in cmd and "-fuse-ld=lld" in cmd
    cmd = driver.cc_command(["-o", "a", "a.c", "-Wl,--gc-sections"], plugin=p)
    assert "-Wl,--gc-sections" in cmd and not any("no-gc-sections" in a for a in cmd)
    assert driver.cc_command(["-E", "a.c"], plugin=p)[1:] == ["-E", "a.c"]


@needs_llvm
@pytest.mark.parametrize("lto", ["-flto", "-flto=thin"])
def test_cc_lto_runs_the_pass_in_lld(plugin, tmp_path, lto):
    need("ld.lld-22")
    exe = tmp_path / "leaky"
    r = _run([MT, "cc", "-O2", lto, "-o", str(exe), str(SAMPLES / "leaky.c")])
    assert r.returncode == 0, r.stderr
    assert _run([str(exe)]).stdout.endswith("kept by an interior pointer\n")
    bm = maps.BinaryMaps.load(str(exe))
    assert len(bm.records) > 10 and any(f.name == "leak_things" for f in bm.functions)
    # the pre-link compile did not instrument: one chunk only, from the link
    assert len(bm.functions) == len({f.name for f in bm.functions})


@needs_llvm
def test_cc_exit_code_is_the_compilers(plugin, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_thing; }\n")
    r = _run([MT, "cc", "-c", "-o", str(tmp_path / "bad.o"), str(bad)])
    assert r.returncode == 1 and "undefined_thing" in r.stderr


def test_cc_without_clang_is_a_clear_error(tmp_path):
    env = {"PATH": str(tmp_path), "MAPPEDTRACE_NO_LLVM_FALLBACK": "1"}
    r = _run([MT, "cc", "-c", "x.c"], env=env)
    assert r.returncode == 2
    assert "error: clang-22 not found" in r.stderr and "Traceback" not in r.stderr


@needs_llvm
@pytest.mark.parametrize("ld", ["bfd", "lld"])
def test_cc_gc_sections_keeps_maps(plugin, tmp_path, ld):
    """With the user's --gc-sections (not overridden): the maps stay, whole,
    and the leak check is exact; an unused function of an object built without
    the pass is collected (instrumented code is kept whole: .mtmap names it)."""
    need("ld.lld-22")
    (tmp_path / "extra.c").write_text("void unused_helper(void) { }\nint used(void) { return 1; }\n")
    r = _run(["clang-22", "-O2", "-ffunction-sections", "-c", "-o", str(tmp_path / "extra.o"),
              str(tmp_path / "extra.c")])
    assert r.returncode == 0, r.stderr
    built = {}
    for gc in ([], ["-Wl,--gc-sections"]):
        exe = tmp_path / f"leaky{len(gc)}"
        r = _run([MT, "cc", "-O2", "-ffunction-sections", f"-fuse-ld={ld}", *gc, "-o", str(exe),
                  str(SAMPLES / "leaky.c"), str(tmp_path / "extra.o")])
        assert r.returncode == 0, r.stderr
        assert {".mtmap", ".mtstack"} <= _sections(exe)
        bm = maps.BinaryMaps.load(str(exe))
        names = {s.name for s in ELFFile(open(exe, "rb")).get_section_by_name(".symtab").iter_symbols()}
        built[bool(gc)] = (len(bm.records), "unused_helper" in names)
    assert built[False] == (built[False][0], True) and built[True] == (built[False][0], False), built
    r, report, truth, _ = run_traced(tmp_path / "leaky1", tmp_path)
    assert report["summary"]["leaked_objects"] == 21 and report["precision"]["frames_conservative"] == 0, report["summary"]


@needs_llvm
def test_cc_shared_library_builds(plugin, tmp_path):
    src = tmp_path / "lib.c"
    src.write_text("#include <stdlib.h>\nvoid *keep;\nvoid *mk(int n) { keep = malloc(n); return keep; }\n")
    r = _run([MT, "cc", "-O2", "-fPIC", "-shared", "-o", str(tmp_path / "lib.so"), str(src)])
    assert r.returncode == 0, r.stderr
    assert _no_textrel(tmp_path / "lib.so") and "TEXTREL" not in r.stderr    # FORMAT.md "Addresses"


def _rust_ok() -> bool:
    return bool(tc.find_tool("rustc") and tc.find_tool("ld.lld-22") and tc.find_tool("clang-22"))


@pytest.mark.skipif(not _rust_ok(), reason="rustc / lld-22 not installed")
@pytest.mark.parametrize("opt", [["-O"], []], ids=["O", "debug"])
def test_rustc_leaks_sample(plugin, tmp_path, opt):
    exe = tmp_path / "leaks"
    r = _run([MT, "rustc", *opt, "--edition=2021", "-o", str(exe),
              str(SAMPLES / "rust" / "leaks.rs")])
    assert r.returncode == 0, r.stderr
    out = _run([str(exe)])
    assert out.returncode == 0
    assert out.stdout.splitlines()[-1] == "list sum 45, config leaked into a static (8 values)"
    assert {".mtmap", ".mtstack"} <= _sections(exe) and _no_textrel(exe)
    bm = maps.BinaryMaps.load(str(exe))
    assert not _real_warnings(bm)
    fn = {f.name: f for f in bm.functions}
    make_list = next(f for n, f in fn.items() if "make_list" in n)
    assert make_list.status != "skipped" and make_list.n_callsites >= 1
    assert sum(1 for r in bm.records.values() if r.entries) >= 5
    g = next(g for g in bm.globals if "LEAKED_CONFIG" in g.name)
    assert g.address and bm.types[g.type_id].slots
    node = next(t for t in bm.types.values() if t.name.endswith("Node") and t.kind == "struct")
    assert node.flags & maps.TYPE_RUST and node.slots
    vec = [t for t in bm.types.values() if t.name.startswith("alloc::vec::Vec<u64")]
    assert vec and vec[0].flags & maps.TYPE_ERASED
    if opt:     # loop map points: none by default, some with --settle-points (taken out of rustc's args)
        assert sum(f.n_loop_points for f in bm.functions) == 0
        pts = tmp_path / "leaks_points"
        r = _run([MT, "rustc", "--settle-points", *opt, "--edition=2021", "-o", str(pts),
                  str(SAMPLES / "rust" / "leaks.rs")])
        assert r.returncode == 0, r.stderr
        assert sum(f.n_loop_points for f in maps.BinaryMaps.load(str(pts)).functions) > 0
