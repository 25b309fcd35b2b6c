"""Builds shared by the head-to-head benchmarks (accuracy, tool overhead).

Every program is built in several *variants*, all with clang-22:

* ``plain``: ``clang-22 -O2`` (the baseline; also what Valgrind runs);
* ``maps``: ``mappedtrace cc -O2`` (pointer maps, no tracer attached);
* ``nopie``: ``clang-22 -O2 -g -fno-pie -no-pie`` (the flags the driver adds, without
  the pass: the overhead benchmark's second baseline);
* ``lsan``: ``clang-22 -O2 -g -fsanitize=leak``;
* ``asan``: ``clang-22 -O2 -g -fsanitize=address`` (leak detection included).

Outputs are cached under ``benchmarks/work/build/`` (gitignored) and rebuilt
when a source is newer.  The real programs come from the Debian source
packages that ``benchmarks/setup.sh`` unpacks into ``benchmarks/work/``.

The *injected leak* of the real programs (their ground truth when patched):
:func:`patched_main` inserts, as the first statement of ``main`` in lua.c and
SQLite's shell.c, a call to a function that mallocs a ``struct
mt_bench_leak`` (16 bytes) whose ``name`` field points to a second malloc'd
block (40 bytes) and drops both: one direct leak and one indirect leak.  The
function prints ``truth leak ADDR SIZE direct|indirect`` for both on stderr,
like the leak corpus (tests/leak_corpus/truth.h).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / "benchmarks" / "work"
#: MT_BENCH_BUILD moves the build cache (the test builds into its tmp_path)
BUILD = Path(os.environ.get("MT_BENCH_BUILD") or WORK / "build")
PROGRAMS = ROOT / "benchmarks" / "programs"
CORPUS = ROOT / "tests" / "leak_corpus"
MAPPEDTRACE = str(ROOT / ".venv" / "bin" / "mappedtrace")

VARIANTS = ("plain", "maps", "lsan", "asan")

INJECTED_LEAK = r"""
/* --- injected by benchmarks/accuracy/builds.py: the benchmark's known leak --- */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct mt_bench_leak { char *name; long n; };
__attribute__((noinline)) static void mt_bench_inject_leak(void) {
  struct mt_bench_leak *x = malloc(sizeof *x);
  x->name = malloc(40);
  strcpy(x->name, "dropped by the benchmark");
  x->n = 42;
  fprintf(stderr, "truth leak %p %zu direct\ntruth leak %p %zu indirect\n",
          (void *)x, malloc_usable_size(x), (void *)x->name, malloc_usable_size(x->name));
}
/* --- end of injected code --- */
"""


def compiler(variant: str, opt: str = "-O2") -> list[str]:
    """The compiler command prefix of *variant* at optimisation level *opt*."""
    if variant == "plain":
        return ["clang-22", opt]
    if variant == "maps":
        return [MAPPEDTRACE, "cc", opt]
    if variant == "nopie":      # what mappedtrace cc adds (-g, non-PIE), without the pass
        return ["clang-22", opt, "-g", "-fno-pie", "-no-pie"]
    if variant == "lsan":
        return ["clang-22", opt, "-g", "-fsanitize=leak"]
    if variant == "asan":
        return ["clang-22", opt, "-g", "-fsanitize=address"]
    raise ValueError(f"unknown variant {variant!r}")


_PLUGIN_ID: str | None = None


def plugin_id() -> str:
    """Name of the pass plugin's build (``plugin-<hash of the pass sources>``): maps builds
    are cached per plugin, so a changed pass rebuilds them."""
    global _PLUGIN_ID
    if _PLUGIN_ID is None:
        r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                            "from mappedtrace import toolchain; print(toolchain.plugin_path().parent.name)"],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"the pass plugin: {r.stderr.strip()[-300:]}")
        _PLUGIN_ID = r.stdout.strip()
    return _PLUGIN_ID


def vdir(variant: str) -> Path:
    """Build directory of *variant* (maps: one per pass plugin build)."""
    return BUILD / (f"maps-{plugin_id()}" if variant == "maps" else variant)


def _fresh(out: Path, srcs: list[Path]) -> bool:
    if not out.exists():
        return False
    t = out.stat().st_mtime
    return all(s.stat().st_mtime <= t for s in srcs)


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"build failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    if cmd[:2] == [MAPPEDTRACE, "cc"]:
        # mappedtrace cc retries by itself when the register allocator runs out of
        # registers (fewer recorded values in registers, then none): note it
        out = Path(cmd[cmd.index("-o") + 1])
        note = [l for l in r.stderr.splitlines() if "register allocator" in l]
        marker = out.with_name(out.name + ".spill")
        if note:
            marker.write_text("\n".join(note) + "\n")
        elif marker.exists():
            marker.unlink()


def build_c(variant: str, srcs: list[Path], out: Path, opt: str = "-O2",
            extra: list[str] | None = None) -> Path:
    """Build an executable from *srcs* (sources or objects) unless it is up to date."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if _fresh(out, srcs):
        return out
    _run([*compiler(variant, opt), *(extra or []), "-o", str(out), *map(str, srcs)])
    return out


def _objects(variant: str, srcs: list[Path], outdir: Path, flags: list[str]) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = []
    objs = []
    for s in srcs:
        o = outdir / (s.stem + ".o")
        objs.append(o)
        if not _fresh(o, [s]):
            jobs.append([*compiler(variant), *flags, "-c", "-o", str(o), str(s)])
    with ThreadPoolExecutor(max_workers=2) as ex:
        list(ex.map(_run, jobs))
    return objs


def patched_main(src: Path, out: Path, main_line: str) -> Path:
    """Copy *src* to *out* with the injected leak called first thing in ``main``."""
    text = src.read_text(errors="surrogateescape")
    if main_line not in text:
        raise RuntimeError(f"{src}: main not found ({main_line!r})")
    text = text.replace(main_line, main_line + " mt_bench_inject_leak();", 1)
    text = INJECTED_LEAK + text
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text(errors="surrogateescape") != text:
        out.write_text(text, errors="surrogateescape")
    return out


def _one(pattern: str) -> Path:
    found = sorted(p for p in WORK.glob(pattern) if p.is_dir())
    if not found:
        raise RuntimeError(f"{WORK}/{pattern} missing: run benchmarks/setup.sh")
    return found[0]


def lua(variant: str, patched: bool = False) -> Path:
    """The Lua 5.4 interpreter (Debian's lua5.4 source) built as *variant*."""
    src = _one("lua5.4-5*") / "src"
    lib = [p for p in sorted(src.glob("*.c")) if p.name not in ("lua.c", "luac.c")]
    inc = BUILD / "include"
    inc.mkdir(parents=True, exist_ok=True)
    hdr = inc / "lua5.4-deb-multiarch.h"   # what Debian's rules generate
    if not hdr.exists():
        hdr.write_text('#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n')
    flags = ["-DLUA_USE_LINUX", "-w", f"-I{inc}"]
    objs = _objects(variant, lib, vdir(variant) / "lua-obj", flags)
    main = src / "lua.c"
    if patched:
        main = patched_main(main, BUILD / "patched" / "lua.c", "int main (int argc, char **argv) {")
    name = "lua-leak" if patched else "lua"
    return build_c(variant, [main, *objs], vdir(variant) / name,
                   extra=[*flags, f"-I{src}", "-lm", "-ldl"])


def _sqlite_obj(variant: str) -> Path:
    amalg = WORK / "sqlite-amalg"
    if not (amalg / "sqlite3.c").exists():
        raise RuntimeError(f"{amalg}/sqlite3.c missing: run benchmarks/setup.sh")
    return _objects(variant, [amalg / "sqlite3.c"], vdir(variant) / "sqlite-obj",
                    ["-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION", "-w"])[0]


def sqlite_shell(variant: str, patched: bool = False) -> Path:
    """SQLite's command-line shell (shell.c + the amalgamation) built as *variant*."""
    amalg = WORK / "sqlite-amalg"
    obj = _sqlite_obj(variant)
    main = amalg / "shell.c"
    if patched:
        main = patched_main(main, BUILD / "patched" / "shell.c", "int SQLITE_CDECL main(int argc, char **argv){")
    name = "sqlite3-leak" if patched else "sqlite3"
    return build_c(variant, [main, obj], vdir(variant) / name,
                   extra=["-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION", "-w", f"-I{amalg}", "-lm"])


def speedtest1(variant: str) -> Path:
    """SQLite's test/speedtest1.c linked with the amalgamation, built as *variant*."""
    amalg = WORK / "sqlite-amalg"
    obj = _sqlite_obj(variant)
    return build_c(variant, [amalg / "speedtest1.c", obj], vdir(variant) / "speedtest1",
                   extra=["-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION", "-w", f"-I{amalg}", "-lm"])


def binary_trees(variant: str) -> Path:
    """benchmarks/programs/binary_trees.c built as *variant*."""
    return build_c(variant, [PROGRAMS / "binary_trees.c"], vdir(variant) / "binary_trees")


def corpus(variant: str, name: str, opt: str) -> Path:
    """A leak-corpus program (tests/leak_corpus/NAME.c) built as *variant* at *opt*."""
    out = vdir(variant) / "corpus" / f"{name}{opt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if _fresh(out, [CORPUS / f"{name}.c", CORPUS / "truth.h"]):
        return out
    _run([*compiler(variant, opt), "-pthread", f"-I{CORPUS}", "-o", str(out), str(CORPUS / f"{name}.c")])
    return out


def totals(cases: list[dict], tools=None) -> dict:
    """found/missed/false/truth per tool summed over accuracy cases; a run that
    failed counts in ``errors``. With ``tools``, every case counts for each of
    them (a tool missing from a case is an error); without, the tools the cases
    name, each over the cases that ran it."""
    names = list(tools) if tools is not None else list(dict.fromkeys(t for c in cases for t in c["tools"]))
    tot: dict = {}
    for tool in names:
        t = tot[tool] = {"found": 0, "missed": 0, "false": 0, "truth": 0, "errors": 0, "cases": 0}
        for case in cases:
            if tools is None and tool not in case["tools"]:
                continue
            s = case["tools"].get(tool, {})
            t["cases"] += 1
            if "found" not in s:
                t["errors"] += 1
                continue
            for k in ("found", "missed", "false", "truth"):
                t[k] += s[k]
    return tot


def spilled() -> list[str]:
    """Outputs for which mappedtrace cc had to retry with fewer recorded values in
    registers (relative to BUILD)."""
    d = vdir("maps")    # builds of the current pass only (older ones stay in the cache)
    return sorted(str(p.relative_to(BUILD))[:-len(".spill")] for p in d.rglob("*.spill")) if d.exists() else []


def tool_versions() -> dict[str, str]:
    """Versions of the compared tools, for RESULTS.md."""
    def first(cmd: list[str]) -> str:
        if not shutil.which(cmd[0]):
            return "missing"
        r = subprocess.run(cmd, capture_output=True, text=True)
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
    import platform
    return {
        "clang": first(["clang-22", "--version"]),
        "glibc": platform.libc_ver()[1] or first(["ldd", "--version"]),
        "kernel": os.uname().release,
        "valgrind": first(["valgrind", "--version"]),
        "gdb": first(["gdb", "--version"]),
        "python": platform.python_version(),
    }
