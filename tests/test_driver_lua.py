"""A real Makefile project: Lua 5.4 built with ``make CC="mappedtrace cc"``.

Slow (about a minute on 2 cores), so opt-in: set MAPPEDTRACE_LUA_SRC to an
unpacked lua-5.4.x source tree, or MAPPEDTRACE_SLOW_TESTS=1 to fetch Debian's
source with ``apt-get source lua5.4`` (needs a deb-src line; the test never
changes apt's configuration and skips when the source is unavailable).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mappedtrace import toolchain as tc

VENV_BIN = Path(sys.executable).parent
MT = str(VENV_BIN / "mappedtrace") if (VENV_BIN / "mappedtrace").exists() else "mappedtrace"

LUA_SCRIPT = """
local t = {}
for i = 1, 100000 do t[i] = {i, tostring(i)} end
local s = 0
for _, v in ipairs(t) do s = s + v[1] end
print(s, string.format("%5.2f", 3.14159))
print(pcall(function() error("boom", 0) end))
print(coroutine.wrap(function() coroutine.yield(42) end)())
print(("x"):rep(3, ","), #setmetatable({}, {__len = function() return 7 end}))
"""
LUA_EXPECTED = "5000050000\t 3.14\nfalse\tboom\n42\nx,x,x\t7\n"


def _real_warnings(bm) -> list[str]:
    # LLVM repeats spilled deopt values as GC pointer pairs (FORMAT.md §1):
    # expected, not a defect of the maps.
    return [w for w in bm.warnings if "GC pointer locations" not in w]


def _lua_source(tmp: Path) -> Path:
    env = os.environ.get("MAPPEDTRACE_LUA_SRC")
    if env:
        src = Path(env)
        if not (src / "src" / "lua.c").exists():
            pytest.skip(f"MAPPEDTRACE_LUA_SRC={env} is not a Lua source tree")
        dst = tmp / "lua"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.o", "*.a", "lua", "luac"))
        return dst
    if os.environ.get("MAPPEDTRACE_SLOW_TESTS") != "1":
        pytest.skip("slow: set MAPPEDTRACE_LUA_SRC or MAPPEDTRACE_SLOW_TESTS=1")
    if not shutil.which("apt-get") or not shutil.which("dpkg-source"):
        pytest.skip("apt-get source is not available")
    try:
        r = subprocess.run(["apt-get", "source", "lua5.4"], cwd=tmp, capture_output=True,
                           text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("apt-get source lua5.4 timed out")
    tree = next((p for p in tmp.glob("lua5.4-*") if (p / "src" / "lua.c").exists()), None)
    if r.returncode != 0 or tree is None:
        pytest.skip("Lua source unavailable (no deb-src line or no network)")
    return tree


@pytest.mark.skipif(not (tc.find_tool("clang-22") and shutil.which("make")),
                    reason="clang-22 / make not installed")
def test_make_lua_with_mappedtrace_cc(tmp_path):
    maps = pytest.importorskip("mappedtrace.formats.maps")
    tree = _lua_source(tmp_path)
    r = subprocess.run(["make", "-j2", "linux", f"CC={MT} cc", "MYCFLAGS=", "MYLDFLAGS=",
                        "MYLIBS="],
                       cwd=tree, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, MAPPEDTRACE_VERIFY="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lua = tree / "src" / "lua"
    script = tmp_path / "t.lua"
    script.write_text(LUA_SCRIPT)
    out = subprocess.run([str(lua), str(script)], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, LUA_EXPECTED), out.stderr
    assert "TEXTREL" not in subprocess.run(["readelf", "-d", str(lua)], capture_output=True,
                                           text=True).stdout
    bm = maps.BinaryMaps.load(str(lua))
    assert not _real_warnings(bm), bm.warnings[:3]
    fn = {f.name: f for f in bm.functions}
    assert fn["luaD_rawrunprotected"].status == "skipped"     # setjmp
    assert fn["luaV_execute"].status == "skipped"             # computed goto
    inst = [f for f in bm.functions if f.status != "skipped"]
    assert len(inst) > 500 and len(bm.records) > 3000
    assert "luaH_new" in fn and fn["luaH_new"].status != "skipped"
    state = next(t for t in bm.types.values() if t.name == "struct lua_State")
    assert len(state.slots) > 10
