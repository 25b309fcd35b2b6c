"""What ``mappedtrace cc --alloc-sites`` costs and what it buys (issue #11 item 6).

* **instructions** of ``benchmarks/programs/binary_trees.c`` (pure malloc/free
  and recursion, the worst case: every object is one allocation) under
  Valgrind's callgrind, built ``mappedtrace cc -O2`` (``maps``) and
  ``mappedtrace cc --alloc-sites -O2`` (``sites``), interleaved over
  ``--rounds`` rounds (callgrind counts are deterministic; rounds show it);
* **bytes per object**: ``sizes.c`` allocates every request size 1..1024 and
  sums glibc's chunk sizes, with and without ``--alloc-sites`` (and the
  16-byte binary-trees node alone);
* **heap bytes typed** on live programs, with and without ``--alloc-sites``:
  the Lua 5.4 interpreter holding 20 000 tables (tests/real_programs/hold.lua)
  the SQLite shell holding a 20 000-row in-memory table (hold.sql), and jq
  1.6 in the middle of parsing a 20 000-element array (``sites`` names jq's
  allocation wrappers with ``--alloc-fn``), each analysed by ``mappedtrace
  leaks PID --json`` while it waits.

    PYTHONPATH=. .venv/bin/python benchmarks/alloc_sites/run.py [--rounds 3] [--depth 14]
        [--live lua,sqlite,jq] [--json FILE]

Lua and SQLite come from the Debian sources (scripts/fetch_sources.sh; SQLite's
amalgamation from the real-program tests' cache, or made with tclsh).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "benchmarks" / "overhead"))
from run import instructions  # noqa: E402  (benchmarks/overhead/run.py: callgrind on a debug-stripped copy)

MT = [sys.executable, "-m", "mappedtrace"]
SRC = Path(os.environ.get("MAPPEDTRACE_SRC", Path.home() / ".cache" / "mappedtrace" / "src"))
LUA_CFLAGS = ["-O2", "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX"]
SQLITE_CFLAGS = ["-O2", "-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION"]


#: Lua 5.4's allocation wrappers: every object comes from luaC_newobj (its caller
#: knows the type) or a luaM_* vector function, through l_alloc (a function pointer)
LUA_ALLOC_FNS = "luaC_newobj:wrapper,luaM_*:wrapper"
#: SQLite's: sqlite3Malloc & co. return the chunk + 8 (sqlite3MemMalloc's size word)
SQLITE_ALLOC_FNS = ("sqlite3Malloc*:wrapper,sqlite3DbMalloc*:wrapper,sqlite3Realloc:wrapper,"
                    "sqlite3DbRealloc*:wrapper,sqlite3_malloc*:wrapper,sqlite3_realloc*:wrapper")


#: the builds compared: without sites, with sites, with compact sites (no chunk grows)
VARIANTS = ("maps", "sites", "compact")
SITE_FLAGS = {"maps": [], "sites": ["--alloc-sites"], "compact": ["--alloc-sites=compact"]}


def cc(variant: str, fns: str = "") -> list[str]:
    return [*MT, "cc", *SITE_FLAGS[variant], *([f"--alloc-fn={fns}"] if variant != "maps" and fns else [])]


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 3600) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def build(variant: str, srcs: list[Path], out: Path, flags: list[str], libs: list[str] = (),
          fns: str = "") -> Path:
    """Objects one by one (two at a time), then the link (kept: a --work
    directory reuses what it built)."""
    if out.exists():
        return out
    od = out.parent / f"obj-{variant}"
    od.mkdir(parents=True, exist_ok=True)
    objs, procs = [], []
    for s in srcs:
        o = od / (s.stem + ".o")
        objs.append(o)
        procs.append(subprocess.Popen([*cc(variant, fns), *flags, "-c", "-o", str(o), str(s)],
                                      stderr=subprocess.PIPE, text=True))
        if len(procs) == 2:
            for p in procs:
                if p.wait() != 0:
                    raise RuntimeError(p.stderr.read()[-2000:])
            procs = []
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read()[-2000:])
    run([*cc(variant, fns), "-o", str(out), *map(str, objs), *libs])
    return out


def bench_instructions(work: Path, rounds: int, depth: int) -> dict:
    src = ROOT / "benchmarks" / "programs" / "binary_trees.c"
    exes = {v: work / f"binary_trees-{v}" for v in ("maps", "sites")}
    for v, exe in exes.items():
        run([*cc(v), "-O2", "-o", str(exe), str(src)])
    counts: dict[str, list[int]] = {v: [] for v in exes}
    for r in range(rounds):
        for v in (("maps", "sites") if r % 2 == 0 else ("sites", "maps")):
            n = instructions(exes[v], [str(depth)])
            if n is None:
                raise RuntimeError("valgrind is not installed")
            counts[v].append(n)
            print(f"  round {r + 1} {v}: {n} instructions", flush=True)
    med = {v: sorted(c)[len(c) // 2] for v, c in counts.items()}
    return {"depth": depth, "rounds": rounds, "instructions": counts, "median": med,
            "overhead_pct": round(100.0 * (med["sites"] / med["maps"] - 1), 2)}


def bench_sizes(work: Path) -> dict:
    out = {}
    for v in VARIANTS:
        exe = work / f"sizes-{v}"
        run([*cc(v), "-O2", "-o", str(exe), str(HERE / "sizes.c")])
        text = run([str(exe)])
        a = int(re.search(r"sizes 1\.\.(\d+): (\d+) chunk bytes", text).group(2))
        n = int(re.search(r"node: (\d+) chunk bytes", text).group(1))
        out[v] = {"chunk_bytes_1_1024": a, "node_chunk_bytes": n}
    out["extra_bytes_per_object_1_1024"] = round((out["sites"]["chunk_bytes_1_1024"]
                                                  - out["maps"]["chunk_bytes_1_1024"]) / 1024, 2)
    out["extra_bytes_per_node"] = out["sites"]["node_chunk_bytes"] - out["maps"]["node_chunk_bytes"]
    out["extra_bytes_per_object_1_1024_compact"] = round((out["compact"]["chunk_bytes_1_1024"]
                                                          - out["maps"]["chunk_bytes_1_1024"]) / 1024, 2)
    return out


def _tree(prefix: str) -> Path:
    found = sorted(d for d in SRC.glob(f"{prefix}-*/") if (d / "debian").is_dir())
    if not found:
        raise RuntimeError(f"{prefix} sources not in {SRC}: run scripts/fetch_sources.sh")
    return found[-1]


def lua_exe(work: Path, variant: str) -> Path:
    src = _tree("lua5.4") / "src"
    inc = work / "lua-include"
    inc.mkdir(exist_ok=True)
    (inc / "lua5.4-deb-multiarch.h").write_text('#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n')
    files = sorted(p for p in src.glob("*.c") if p.name != "luac.c")
    return build(variant, files, work / f"lua-{variant}" / "lua", [*LUA_CFLAGS, f"-I{src}", f"-I{inc}"],
                 ["-lm", "-ldl"], LUA_ALLOC_FNS)


def sqlite_exe(work: Path, variant: str) -> Path:
    cands = sorted(Path(tempfile.gettempdir()).glob("mappedtrace-real-programs/sqlite-*/amalgamation/shell.c"))
    if cands:
        amal = cands[-1].parent
    else:
        if not shutil.which("tclsh"):
            raise RuntimeError("no SQLite amalgamation: run tests/test_real_programs.py once, or install tclsh")
        tree = work / "sqlite-tree"
        if not tree.exists():
            shutil.copytree(_tree("sqlite3"), tree, symlinks=True,
                            ignore=shutil.ignore_patterns("www", "test", "doc", "art"))
            (tree / "test").mkdir(exist_ok=True)
            run(["./configure", "--disable-tcl", "--disable-readline", "--disable-editline"], tree)
            run(["make", "sqlite3.c", "shell.c"], tree)
        amal = tree
    return build(variant, [amal / "sqlite3.c", amal / "shell.c"], work / f"sqlite-{variant}" / "sqlite3",
                 [*SQLITE_CFLAGS, f"-I{amal}"], ["-lm"], SQLITE_ALLOC_FNS)


#: jq's allocation wrappers (src/jv_alloc.h): freed by jv_mem_free, without their size
JQ_ALLOC_FNS = ("jv_mem_alloc,jv_mem_alloc_unguarded,jv_mem_calloc:calloc,jv_mem_calloc_unguarded:calloc,"
                "jv_mem_realloc:realloc")


def jq_exe(work: Path, variant: str, wrappers: bool = True) -> Path:
    """jq 1.6 (Debian source) as benchmarks/soundness builds it; ``sites`` also
    names jq's allocation wrappers (``--alloc-fn``)."""
    tree = work / f"jq-{variant}"
    if not tree.exists():
        shutil.copytree(_tree("jq"), tree, symlinks=True)
    cc_ = " ".join(cc(variant) + ([f"--alloc-fn={JQ_ALLOC_FNS}"] if variant != "maps" and wrappers else []))
    run(["autoreconf", "-fi"], tree)
    run(["./configure", "--disable-shared", "--enable-static", "--disable-docs", "--disable-maintainer-mode",
         "--disable-valgrind", "--with-oniguruma=yes", f"CC={cc_}", "CFLAGS=-O2"], tree)
    run(["make", "-j2", "src/builtin.inc", "src/version.h"], tree)
    run(["make", "-j2", "jq"], tree)
    return tree / "jq"


#: Redis 7.0's (src/zmalloc.c): with MALLOC=libc on glibc no prefix word, the
#: size from malloc_usable_size
REDIS_ALLOC_FNS = "zmalloc*:wrapper,zcalloc*:wrapper,zrealloc*:wrapper,ztry*:wrapper"
REDIS_KEYS = 20000


def redis_exe(work: Path, variant: str) -> Path:
    """Redis 7.0.15 (Debian source) as benchmarks/soundness builds it
    (``make MALLOC=libc OPTIMIZATION=-O2``); ``sites`` names its wrappers."""
    tree = work / f"redis-{variant}"
    exe = tree / "src" / "redis-server"
    if exe.exists():
        return exe
    if not tree.exists():
        shutil.copytree(_tree("redis"), tree, symlinks=True)
    cc_ = " ".join(cc(variant, REDIS_ALLOC_FNS))
    run(["make", "-j2", "MALLOC=libc", f"CC={cc_}", "OPTIMIZATION=-O2", "BUILD_TLS=no", "USE_SYSTEMD=no"], tree)
    return exe


def redis_live(exe: Path, work: Path, name: str, keys: int = REDIS_KEYS) -> dict:
    """redis-server with ``keys`` keys of each of six types loaded
    (benchmarks/soundness's load), checked live while it serves."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "soundness"))
    from programs import _redis_cli, _redis_start  # noqa: E402
    from soundness import free_port  # noqa: E402
    port = free_port()
    p = _redis_start([str(exe)], exe, port, keys)
    try:
        js = work / f"{name}.json"
        r = subprocess.run([*MT, "leaks", str(p.pid), "--json", str(js)], capture_output=True, text=True,
                           timeout=1800)
        if not js.exists():
            raise RuntimeError(f"leaks {name}: {r.stderr[-2000:]}")
        rep = json.loads(js.read_text())
        if _redis_cli(exe, port, "PING").strip() != "PONG":
            raise RuntimeError("Redis does not answer after the check")
    finally:
        p.kill()
        p.wait()
    return _figures(rep)


def jq_live(exe: Path, work: Path, name: str) -> dict:
    """jq in the middle of parsing a 20 000-element array (benchmarks/soundness's
    live-parse case): blocked in read(), holding ~140 000 jv objects."""
    p = subprocess.Popen([str(exe), "-c", ".[0]"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        p.stdin.write(b"[" + b",".join(json.dumps({f"k{i}": [i, "s" * (i % 40), {"x": i * 1.5, "y": None}]}).encode()
                                       for i in range(20000)) + b",")
        p.stdin.flush()
        time.sleep(3)
        js = work / f"{name}.json"
        r = subprocess.run([*MT, "leaks", str(p.pid), "--json", str(js)], capture_output=True, text=True,
                           timeout=1800)
        if not js.exists():
            raise RuntimeError(f"leaks {name}: {r.stderr[-2000:]}")
        rep = json.loads(js.read_text())
        out, _ = p.communicate(b"1]\n", timeout=600)
        if not out.startswith(b'{"k0":'):
            raise RuntimeError(f"jq's output after the check is wrong: {out[:80]!r}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return _figures(rep)


def _figures(rep: dict) -> dict:
    pr = rep["precision"]
    keys = ("objects", "objects_typed", "heap_bytes", "heap_bytes_typed", "objects_with_site",
            "objects_with_site_type", "objects_typed_by_site", "heap_bytes_typed_by_site",
            "objects_bytes_by_site", "heap_bytes_bytes_by_site", "untyped_pointer_writes",
            "objects_named_by_site", "heap_bytes_named_by_site")
    out = {k: pr.get(k, 0) for k in keys}
    # typed for scanning (the marker skipped what the type says), and typed or
    # named (a site names the object, it is scanned conservatively)
    out["typed_pct"] = round(100.0 * pr["heap_bytes_typed"] / max(1, pr["heap_bytes"]), 2)
    out["typed_or_named_pct"] = round(100.0 * (pr["heap_bytes_typed"] + pr.get("heap_bytes_named_by_site", 0))
                                      / max(1, pr["heap_bytes"]), 2)
    out["leaked_objects"] = rep["summary"]["leaked_objects"]
    return out


def live_figures(cmd: list[str], feed: str | None, work: Path, name: str) -> dict:
    """Start the program, wait for its 'ready' line, ``leaks PID --json``, let it finish."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if feed:
            p.stdin.write(feed)
            p.stdin.flush()
        deadline = time.time() + 600
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line or "ready" in line:
                break
        js = work / f"{name}.json"
        r = subprocess.run([*MT, "leaks", str(p.pid), "--json", str(js)], capture_output=True, text=True,
                           timeout=1800)
        if not js.exists():
            raise RuntimeError(f"leaks {name}: {r.stderr[-2000:]}")
        rep = json.loads(js.read_text())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return _figures(rep)


def bench_live(work: Path, which: list[str], variants: list[str]) -> dict:
    out: dict = {}
    for prog in which:
        for v in variants:
            print(f"  {prog} {v}: building", flush=True)
            if prog == "jq":
                fig = jq_live(jq_exe(work, v), work, f"jq-{v}")
            elif prog == "redis":
                fig = redis_live(redis_exe(work, v), work, f"redis-{v}")
            elif prog == "lua":
                exe = lua_exe(work, v)
                rt = ROOT / "tests" / "real_programs"
                fig = live_figures([str(exe), str(rt / "hold.lua"), str(rt / "workload.lua")], None, work,
                                   f"lua-{v}")
            else:
                exe = sqlite_exe(work, v)
                fig = live_figures([str(exe), ":memory:"], (HERE / "hold.sql").read_text(), work, f"sqlite-{v}")
            print(f"  {prog} {v}: {fig}", flush=True)
            out.setdefault(prog, {})[v] = fig
        got = out[prog]
        if "maps" in got:
            for v in variants:
                if v != "maps":
                    # what the word costs: heap bytes per object against the build without sites
                    got[v]["extra_bytes_per_object"] = round((got[v]["heap_bytes"] - got["maps"]["heap_bytes"])
                                                             / max(1, got[v]["objects"]), 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--depth", type=int, default=14, help="binary_trees depth under callgrind")
    ap.add_argument("--live", default="", help="comma-separated: lua, sqlite, jq, redis")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: maps, sites, compact")
    ap.add_argument("--skip-ir", action="store_true")
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--work", help="keep the builds in this directory (reused by the next run)")
    a = ap.parse_args()
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="mt-allocsites-") as d:
        work = Path(a.work or d)
        work.mkdir(parents=True, exist_ok=True)
        if not a.skip_ir:
            print("binary_trees under callgrind", flush=True)
            res["binary_trees"] = bench_instructions(work, a.rounds, a.depth)
        print("bytes per object", flush=True)
        res["sizes"] = bench_sizes(work)
        if a.live:
            res["live"] = bench_live(work, [x for x in a.live.split(",") if x],
                                     [x for x in a.variants.split(",") if x])
    print(json.dumps(res, indent=1))
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    os.chmod(a.json, 0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
