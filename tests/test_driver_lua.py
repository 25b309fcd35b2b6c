"""A real Makefile project: Lua 5.4 built with ``make CC="mappedtrace cc"``.

The source is $MAPPEDTRACE_LUA_SRC or the Debian source that setup fetched
(scripts/fetch_sources.sh); the test skips only when this host could not
fetch it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import real_map_warnings as _real_warnings, source_tree

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


def _lua_source(tmp: Path) -> Path:
    """A writable copy of Lua 5.4's source: $MAPPEDTRACE_LUA_SRC, or the Debian
    source that setup fetched (skips when this host could not fetch it)."""
    env = os.environ.get("MAPPEDTRACE_LUA_SRC")
    src = Path(env) if env else source_tree("lua5.4")
    if not (src / "src" / "lua.c").exists():
        pytest.skip(f"{src} is not a Lua source tree")
    dst = tmp / "lua"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.o", "*.a", "lua", "luac"))
    _unapply_debian_build_patch(dst)
    return dst


def _unapply_debian_build_patch(tree: Path) -> None:
    """Debian's patches replace Lua's own Makefiles by a libtool build and point
    luaconf.h at a multiarch header; this test is about Lua's upstream
    ``make linux``, so the patches are taken back, newest first.  quilt keeps the
    originals in ``.pc/<patch>/`` (an empty file there stands for a file the
    patch added)."""
    applied = tree / ".pc" / "applied-patches"
    if not applied.exists():
        return
    for patch in reversed(applied.read_text().split()):
        saved = tree / ".pc" / patch
        for orig in saved.rglob("*"):
            if orig.is_file():
                target = tree / orig.relative_to(saved)
                if orig.stat().st_size == 0:
                    target.unlink(missing_ok=True)
                else:
                    shutil.copy2(orig, target)


@pytest.mark.skipif(not (tc.find_tool("clang-22") and shutil.which("make")),
                    reason="clang-22 / make not installed")
def test_make_lua_with_mappedtrace_cc(tmp_path):
    import mappedtrace.formats.maps as maps
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
    # setjmp: instrumented but for the setjmp call itself; computed goto: instrumented
    assert fn["luaD_rawrunprotected"].status == "partial", fn["luaD_rawrunprotected"]
    assert "returns_twice" in fn["luaD_rawrunprotected"].reason
    assert fn["luaV_execute"].status != "skipped", fn["luaV_execute"]
    assert not [f.name for f in bm.functions if f.status == "skipped"]
    inst = [f for f in bm.functions if f.status != "skipped"]
    assert len(inst) > 500 and len(bm.records) > 3000
    assert "luaH_new" in fn and fn["luaH_new"].status != "skipped"
    state = next(t for t in bm.types.values() if t.name == "struct lua_State")
    assert len(state.slots) > 10
