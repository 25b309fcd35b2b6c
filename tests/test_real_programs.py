"""Real programs under the leak checker: the SQLite shell and the Lua 5.4
interpreter from their Debian sources, built with ``mappedtrace cc -O2``, run on
real workloads (tests/real_programs/workload.{sql,lua}) under ``mappedtrace run``,
compared with LeakSanitizer on the same sources built with
``clang-22 -O2 -g -fsanitize=leak``; then a leak injected into a copy of each
program (tests/real_programs/*-injected-leak.patch: a struct malloc'd in main and
dropped; the program prints its address and size like tests/leak_corpus/truth.h)
must be found exactly, direct, with its struct type named.

Sources: ``$MAPPEDTRACE_SRC`` or ~/.cache/mappedtrace/src (filled by
scripts/fetch_sources.sh); the tests skip when they are not there.  Builds are
done once per session and cached across sessions in
``$TMPDIR/mappedtrace-real-programs/<key>``, the key hashing the sources, the
patches, the flags and the pass plugin.

Comparison with LeakSanitizer: both programs free everything at exit (the Lua
interpreter closes its state, the SQLite shell closes its database and frees its
buffers), so both tools must report nothing on the clean builds.  On the injected
builds both must report the injected block (LSan by its size; it runs in the
process, so its addresses differ from the traced run's — sizes are compared,
not addresses).  LSan reports the requested size, MappedTrace the usable size
of the chunk (malloc_usable_size), so the sizes are compared as
``requested <= usable < requested + 24``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, addr as _addr, have, source_tree

HERE = ROOT / "tests" / "real_programs"
TRUTH = re.compile(r"truth leak (0x[0-9a-f]+) (\d+) (\w+)")
LSAN_LEAK = re.compile(r"(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\)")
LSAN_OBJ = re.compile(r"(0x[0-9a-f]+) \((\d+) bytes\)")

LUA_CFLAGS = ["-O2", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX"]
SQLITE_CFLAGS = ["-O2", "-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION"]

#: a cold build (no cache) of both tools' binaries can exceed the default 600 s
#: per-test timeout on a loaded 2-core machine; warm runs take seconds
BUILD_TIMEOUT = 2400

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT),
              pytest.mark.skipif(not have("clang-22"), reason="clang-22 not installed")]


# -- sources and builds --------------------------------------------------------

def _hash_files(files: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.name).encode())
        h.update(f.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


def _plugin_id() -> str:
    from mappedtrace import toolchain
    try:
        return str(toolchain.plugin_path())
    except Exception as e:  # noqa: BLE001 — reported by the build itself
        return f"unavailable: {e}"


def _run(cmd: list[str], cwd: Path, timeout: float = 900, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **env) if env else None)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:6])}… failed in {cwd}:\n{r.stderr[-3000:]}")
    return r.stderr


def _cache_dir(name: str, key: str):
    """The build cache of ``name`` for ``key``, and an exclusive lock on it: the
    two xdist workers would otherwise build into it at once.  The lock is held
    while the returned file object lives."""
    d = Path(tempfile.gettempdir()) / "mappedtrace-real-programs" / f"{name}-{key}"
    d.mkdir(parents=True, exist_ok=True)
    lock = open(d / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return d, lock


def _patched(src: Path, patch: Path, out: Path) -> Path:
    """A copy of ``src`` (one file) with ``patch`` applied, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    dst = out / src.name
    shutil.copy(src, dst)
    r = subprocess.run(["patch", "-s", "--no-backup-if-mismatch", str(dst), "-i", str(patch)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{patch.name} does not apply to {src}: {r.stdout}{r.stderr}"
    return dst


def _objects(cc: list[str], flags: list[str], sources: list[Path], out: Path,
             include: Path, env: dict | None = None) -> list[Path]:
    objs = []
    for s in sources:
        o = out / (s.stem + ".o")
        if not o.exists():
            tmp = out / (s.stem + ".o.tmp")
            err = _run([*cc, *flags, f"-I{include}", "-c", str(s), "-o", str(tmp)], out, env=env)
            o.with_suffix(".stderr").write_text(err)
            tmp.rename(o)
        objs.append(o)
    return objs


def _link(cc: list[str], objs: list[Path], exe: Path, libs: list[str]) -> Path:
    if not exe.exists():
        tmp = exe.with_suffix(".tmp")
        _run([*cc, "-O2", *[str(o) for o in objs], "-o", str(tmp), *libs], exe.parent)
        tmp.rename(exe)
    return exe


TOOLS = {"mt": [MAPPEDTRACE, "cc"], "lsan": ["clang-22", "-g", "-fsanitize=leak"]}


def _both_tools(build) -> None:
    """Run ``build(tool, cc)`` for both tools at once (2 compilers: the -j2 budget)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as ex:
        for f in [ex.submit(build, tool, cc) for tool, cc in TOOLS.items()]:
            f.result()


@pytest.fixture(scope="session")
def lua_builds() -> dict[str, Path]:
    """Lua 5.4 interpreter: {mt, mt_leak, lsan, lsan_leak} executables."""
    src = source_tree("lua5.4") / "src"
    patch = HERE / "lua-injected-leak.patch"
    files = [p for p in src.glob("*.[ch]") if p.name != "luac.c"]
    key = _hash_files(files + [patch], *LUA_CFLAGS, _plugin_id())
    d, _lock = _cache_dir("lua", key)
    inc = d / "include"
    inc.mkdir(exist_ok=True)
    # Debian's luaconf.h includes a header its build generates
    (inc / "lua5.4-deb-multiarch.h").write_text('#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n')
    patched = _patched(src / "lua.c", patch, d / "patched" / "src")
    out = {}

    def build(tool: str, cc: list[str]) -> None:
        od = d / tool
        od.mkdir(exist_ok=True)
        flags = [*LUA_CFLAGS, f"-I{src}"]
        common = _objects(cc, flags, [f for f in files if f.suffix == ".c" and f.name != "lua.c"], od, inc)
        main = _objects(cc, flags, [src / "lua.c"], od, inc)
        (od / "leak").mkdir(exist_ok=True)
        main_leak = _objects(cc, flags, [patched], od / "leak", inc)
        out[tool] = _link(cc, common + main, od / "lua", ["-lm", "-ldl"])
        out[tool + "_leak"] = _link(cc, common + main_leak, od / "lua_leak", ["-lm", "-ldl"])

    _both_tools(build)
    return out


@pytest.fixture(scope="session")
def sqlite_builds() -> dict[str, Path]:
    """SQLite shell: {mt, mt_leak, lsan, lsan_leak} executables.

    The Debian package holds the canonical sources, not the amalgamation: it is
    made with ``./configure && make sqlite3.c shell.c`` (needs tclsh) in a copy.
    """
    src = source_tree("sqlite3")
    if not have("tclsh"):
        pytest.skip("tclsh missing: the SQLite amalgamation cannot be generated")
    patch = HERE / "sqlite-injected-leak.patch"
    files = [p for p in (src / "src").glob("*") if p.is_file()] + [src / "VERSION", src / "tool" / "mksqlite3c.tcl"]
    key = _hash_files(files + [patch], *SQLITE_CFLAGS, _plugin_id())
    d, _lock = _cache_dir("sqlite", key)
    amal = d / "amalgamation"
    if not (amal / "shell.c").exists():
        work = d / "tree"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(src, work, symlinks=True, ignore=shutil.ignore_patterns("www", "test", "doc", "art"))
        (work / "test").mkdir(exist_ok=True)
        _run(["./configure", "--disable-tcl", "--disable-readline", "--disable-editline"], work)
        _run(["make", "sqlite3.c", "shell.c"], work, timeout=1200)
        amal.mkdir(exist_ok=True)
        for f in ("sqlite3.c", "sqlite3.h", "shell.c"):
            shutil.copy(work / f, amal / f)
        shutil.rmtree(work)
    patched = _patched(amal / "shell.c", patch, d / "patched")
    out: dict = {}

    def build(tool: str, cc: list[str]) -> None:
        od = d / tool
        od.mkdir(exist_ok=True)
        if tool == "mt":
            lib, out["mt_O2_failure"] = _sqlite_lib_mt(cc, amal, od)
        else:
            lib = _objects(cc, SQLITE_CFLAGS, [amal / "sqlite3.c"], od, amal)
        main = _objects(cc, SQLITE_CFLAGS, [amal / "shell.c"], od, amal)
        (od / "leak").mkdir(exist_ok=True)
        main_leak = _objects(cc, SQLITE_CFLAGS, [patched], od / "leak", amal)
        out[tool] = _link(cc, lib + main, od / "sqlite3", ["-lm"])
        out[tool + "_leak"] = _link(cc, lib + main_leak, od / "sqlite3_leak", ["-lm"])

    _both_tools(build)
    return out


def _sqlite_lib_mt(cc: list[str], amal: Path, od: Path) -> tuple[list[Path], str]:
    """sqlite3.o built by ``mappedtrace cc -O2``.

    :returns: the objects, and the compiler's warnings about the register
        allocator ("" when it kept every recorded value where it wanted);
        a failed build raises.
    """
    objs = _objects(cc, SQLITE_CFLAGS, [amal / "sqlite3.c"], od, amal)
    err = objs[0].with_suffix(".stderr")
    text = err.read_text() if err.exists() else ""
    return objs, "\n".join(l for l in text.splitlines() if "register allocator" in l)


# -- running -------------------------------------------------------------------

def run_traced(exe: Path, args: list[str], tmp: Path, stdin: Path | None = None,
               name: str = "run") -> tuple[subprocess.CompletedProcess, dict]:
    js = tmp / f"{name}.json"
    with open(stdin or os.devnull, "rb") as fin:
        r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", str(exe), *args],
                           stdin=fin, capture_output=True, timeout=600)
    out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                      r.stderr.decode(errors="replace"))
    assert js.exists(), out.stderr[-3000:]
    return out, json.loads(js.read_text())


def run_lsan(exe: Path, args: list[str], stdin: Path | None = None) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Run under LeakSanitizer: (result, sizes of every leaked object reported)."""
    env = dict(os.environ, LSAN_OPTIONS="report_objects=1:exitcode=23:detect_leaks=1")
    with open(stdin or os.devnull, "rb") as fin:
        r = subprocess.run([str(exe), *args], stdin=fin, capture_output=True, timeout=600, env=env)
    out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                      r.stderr.decode(errors="replace"))
    if "LeakSanitizer has encountered a fatal error" in out.stderr or "does not work under ptrace" in out.stderr:
        pytest.skip(f"LeakSanitizer cannot run here: {out.stderr[-300:]}")
    sizes = [int(s) for _, s in LSAN_OBJ.findall(out.stderr)]
    return out, sizes


def _precision_line(name: str, report: dict) -> str:
    p = report["precision"]
    return (f"PRECISION {name}: frames {p.get('frames_exact')}/{p.get('frames_conservative')} "
            f"(glibc model {p.get('frames_by_model')}) "
            f"roots {p.get('roots_exact')}/{p.get('roots_conservative')} "
            f"heap bytes typed/conservative {p.get('heap_bytes_typed')}/{p.get('heap_bytes_conservative')} "
            f"reachable {report['summary']['reachable_objects']} objects "
            f"{report['summary']['reachable_bytes']} B")


def check_clean(name: str, mt: Path, lsan: Path, args: list[str], tmp: Path,
                stdin: Path | None, expect: str) -> None:
    r, report = run_traced(mt, args, tmp, stdin, name)
    assert expect in r.stdout, (r.stdout[-2000:], r.stderr[-3000:])
    lr, lsizes = run_lsan(lsan, args, stdin)
    assert expect in lr.stdout, lr.stderr[-2000:]
    print(_precision_line(name, report))
    leaks = report["leaks"]
    # LeakSanitizer and MappedTrace agree: same count, same sizes (usable >= requested)
    assert len(leaks) == len(lsizes), (
        f"MappedTrace {[(hex(_addr(l['address'])), l['size'], l['type']) for l in leaks[:20]]} vs "
        f"LeakSanitizer sizes {lsizes[:20]}\n{lr.stderr[-2000:]}")
    for got, want in zip(sorted(l["size"] for l in leaks), sorted(lsizes)):
        assert want <= got < want + 24, (got, want)
    assert r.returncode == (23 if leaks else 0), r.stderr[-2000:]
    p = report["precision"]
    assert p["frames_exact"] + p["frames_conservative"] > 0
    assert report["summary"]["reachable_objects"] >= 0


def check_injected(name: str, mt: Path, lsan: Path, args: list[str], tmp: Path,
                   stdin: Path | None, expect: str, type_name: str) -> None:
    r, report = run_traced(mt, args, tmp, stdin, name)
    assert expect in r.stdout, (r.stdout[-2000:], r.stderr[-3000:])
    truth = {int(a, 16): (int(s), how) for a, s, how in TRUTH.findall(r.stderr)}
    assert len(truth) == 1, r.stderr[-2000:]
    print(_precision_line(name, report))
    reported = {_addr(l["address"]): l for l in report["leaks"]}
    assert set(reported) == set(truth), (
        f"reported {[(hex(a), l['size'], l['type']) for a, l in reported.items()][:20]}, "
        f"truth {[hex(a) for a in truth]}\n{r.stderr[-2000:]}")
    (addr, (size, how)), = truth.items()
    leak = reported[addr]
    assert (leak["size"], leak["kind"]) == (size, how), leak
    assert leak["type"] == type_name, leak
    assert r.returncode == 23
    # LeakSanitizer finds it too (by size: its addresses are its own run's)
    lr, lsizes = run_lsan(lsan, args, stdin)
    lt = TRUTH.findall(lr.stderr)
    assert len(lt) == 1 and lsizes, lr.stderr[-2000:]
    assert len(lsizes) == 1 and lsizes[0] <= int(lt[0][1]) < lsizes[0] + 24, (lsizes, lt)


# -- the tests -----------------------------------------------------------------

LUA_EXPECT = "closures 5050 words 2000/4000 squares 41791750"
SQL_EXPECT = "2833|13491"


def test_lua_workload_agrees_with_leaksanitizer(lua_builds, tmp_path: Path) -> None:
    """Lua 5.4 on workload.lua: lua_close frees every object, so MappedTrace and
    LeakSanitizer both report no leak."""
    check_clean("lua", lua_builds["mt"], lua_builds["lsan"], [str(HERE / "workload.lua")],
                tmp_path, None, LUA_EXPECT)


def test_lua_injected_leak_found_with_its_type(lua_builds, tmp_path: Path) -> None:
    check_injected("lua-injected", lua_builds["mt_leak"], lua_builds["lsan_leak"],
                   [str(HERE / "workload.lua")], tmp_path, None, LUA_EXPECT, "struct mt_injected_leak")


def test_sqlite_workload_agrees_with_leaksanitizer(sqlite_builds, tmp_path: Path) -> None:
    """The SQLite shell on workload.sql (in-memory database, read from stdin):
    the shell closes the database and frees its state, so both tools report
    no leak."""
    check_clean("sqlite", sqlite_builds["mt"], sqlite_builds["lsan"], [":memory:"],
                tmp_path, HERE / "workload.sql", SQL_EXPECT)


def test_sqlite_amalgamation_builds_at_O2(sqlite_builds) -> None:
    """``mappedtrace cc -O2 -c sqlite3.c`` works at the first try: every recorded
    value stays where the register allocator puts it.  (Before pointers derived
    from another by a constant were recorded as DERIVED entries, the allocator ran
    out of registers on 19 functions of the 3.40.1 amalgamation, sqlite3InitOne
    first, and the driver had to compile again with the values spilled.)"""
    assert not sqlite_builds["mt_O2_failure"], sqlite_builds["mt_O2_failure"][-600:]


def test_sqlite_injected_leak_found_with_its_type(sqlite_builds, tmp_path: Path) -> None:
    check_injected("sqlite-injected", sqlite_builds["mt_leak"], sqlite_builds["lsan_leak"],
                   [":memory:"], tmp_path, HERE / "workload.sql", SQL_EXPECT, "struct ShellInjectedLeak")


def test_lua_live_snapshot(lua_builds, tmp_path: Path) -> None:
    """``mappedtrace leaks PID`` on a live interpreter holding 20 000 tables,
    strings and closures: nothing leaked, the heap mostly reachable, and the
    precision as it is (recorded in tests/real_programs/PRECISION.md): every
    frame of Lua's own code is exact, its interpreter loop (computed goto) and
    its setjmp frames included; the conservative frames are glibc's (the
    three of ``io.read``'s read path, the three start-up frames); Lua's objects
    hang off ``union Value`` words and are allocated through ``l_alloc``
    (realloc), so most heap bytes are scanned conservatively."""
    p = subprocess.Popen([str(lua_builds["mt"]), str(HERE / "hold.lua"), str(HERE / "workload.lua")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for _ in range(10):
            line = p.stdout.readline()
            lines.append(line)
            if line.startswith("ready") or not line:
                break
        assert lines[-1].startswith("ready"), lines
        js = tmp_path / "live.json"
        r = subprocess.run([MAPPEDTRACE, "leaks", str(p.pid), "--json", str(js)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and js.exists(), r.stderr[-3000:]
        report = json.loads(js.read_text())
        print(_precision_line("lua-live", report))
        assert report["summary"]["leaked_objects"] == 0, report["leaks"][:10]
        assert report["summary"]["reachable_objects"] > 60000   # 20 000 × (table, string, closure, …)
        prec = report["precision"]
        assert prec["frames_exact"] >= 18, prec
        if str(prec.get("glibc_model", "off")).startswith("off"):
            # glibc's frames only: read, _IO_file_underflow, _IO_default_uflow and
            # __libc_start_call_main, __libc_start_main, _start (9 while luaV_execute
            # and the two luaD_rawrunprotected frames were skipped by the pass)
            assert 0 < prec["frames_conservative"] <= 6, prec
        else:
            # the glibc model (mappedtrace/glibc_model.py) proves those six: the
            # start-up frames and the stdio read path under an exact Lua frame
            assert prec["frames_conservative"] == 0, prec
            assert prec["frames_by_model"] == {"start-up": 3, "stdio read": 2, "syscall wrapper": 1}, prec
        out, _ = p.communicate("go\n", timeout=60)
        assert "20000" in out and p.returncode == 0       # the traced process carried on, unharmed
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
