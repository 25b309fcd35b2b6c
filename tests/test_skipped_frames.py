"""No function left behind (issue #11, item 5): functions with computed goto
(``indirectbr``) and callers of returns_twice functions (``setjmp``) are
instrumented, and their frames are exact.

tests/skipped_frames/ holds the two minimal reproductions, built at test time
with ``mappedtrace cc``: a computed-goto interpreter whose dispatch loop keeps
heap objects live across calls, and nested setjmp/longjmp guards whose error
paths free heap objects held in locals (one only read after setjmp returns the
second time, one in a volatile local, one in a stack struct).  Each program
prints what it keeps and what it leaks (tests/leak_corpus/truth.h) and waits
on stdin inside the interesting frames: the live check finds the leak exactly,
reports nothing kept as leaked, and decodes every frame of the program's own
functions with the maps (none is scanned conservatively).  The oracle
(tests/oracle) agrees with the maps of both, and ``mappedtrace maps`` names
what is still skipped and why.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, TRUTH, addr, run_mt, run_traced

from mappedtrace import session
from mappedtrace.formats import maps
from mappedtrace import toolchain as tc

HERE = ROOT / "tests" / "skipped_frames"
CGOTO = HERE / "cgoto_interp.c"
SETJMP = HERE / "setjmp_error.c"
#: the program's own functions: each frame of them must be exact
OWN = {CGOTO: {"run", "main"}, SETJMP: {"guarded", "work", "main"}}

pytestmark = pytest.mark.skipif(not tc.find_tool("clang-22"), reason="clang-22 not installed")


def build(src: Path, out: Path, opt: str) -> Path:
    r = subprocess.run([MAPPEDTRACE, "cc", opt, "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "not instrumented" not in r.stderr, r.stderr
    return out


def truth(stderr: str) -> tuple[set[int], set[int]]:
    """(leaked, kept) addresses a program printed."""
    found = TRUTH.findall(stderr)
    return ({int(a, 16) for k, a, _s, _h in found if k == "leak"},
            {int(a, 16) for k, a, _s, _h in found if k == "kept"})


def live_analysis(exe: Path, tmp: Path) -> tuple[session.Analysis, str]:
    """The whole analysis of ``exe`` while it waits on stdin in its deepest
    frame, and what it printed on stderr; the program then runs to the end
    and must exit 0 (its own check of its result)."""
    err = tmp / f"{exe.name}.stderr"
    with open(err, "w") as ef:
        p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        target = session.capture_live(p.pid)
        try:
            a = session.analyse(target)
        finally:
            target.close()
    finally:
        p.stdin.close()
        p.stdout.read()
        rc = p.wait(timeout=60)
    assert rc == 0, err.read_text()[-2000:]
    return a, err.read_text()


def scanned_frames(a: session.Analysis) -> set[str]:
    """Functions of the frames the tracer had to scan conservatively."""
    out = set()
    for r in a.roots.roots:
        m = re.match(r"thread \d+ #\d+ (\S+) \(frame scanned\)", r.source)
        if m:
            out.add(m.group(1))
    return out


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
@pytest.mark.parametrize("src", [CGOTO, SETJMP], ids=lambda p: p.stem)
def test_live_frames_are_exact_and_the_leak_is_found(src: Path, opt: str, tmp_path: Path) -> None:
    exe = build(src, tmp_path / f"{src.stem}{opt}", opt)
    fn = {f.name: f for f in maps.BinaryMaps.load(str(exe)).functions}
    for name in OWN[src] - {"main"}:
        assert fn[name].status != "skipped", (name, fn[name].reason)
    a, err = live_analysis(exe, tmp_path)
    leaked, kept = truth(err)
    assert len(leaked) == 1 and len(kept) >= 5, err
    found = {l.address for l in a.leaks.leaks}
    assert found == leaked, ([hex(x) for x in found], err)
    assert not (found & kept)
    # every frame of the program's own code is decoded with the maps
    assert not (scanned_frames(a) & OWN[src]), scanned_frames(a)
    prec = a.precision
    assert prec["frames_unsettled"] == 0, prec
    assert prec["frames_exact"] >= len(OWN[src]), prec


@pytest.mark.parametrize("src", [CGOTO, SETJMP], ids=lambda p: p.stem)
def test_at_exit_exactly_the_leak(src: Path, tmp_path: Path) -> None:
    exe = build(src, tmp_path / src.stem, "-O2")
    r, report, leaks, _kept = run_traced(exe, tmp_path)
    assert r.returncode != 0          # leaks found: the run's exit code says so
    assert {addr(l["address"]) for l in report["leaks"]} == set(leaks) and len(leaks) == 1


def test_setjmp_call_is_the_only_plain_call(tmp_path: Path) -> None:
    """guarded() is instrumented; only its setjmp call is no map point (status
    partial, with that reason), and every other call records ``saved``."""
    exe = build(SETJMP, tmp_path / "sj", "-O2")
    bm = maps.BinaryMaps.load(str(exe))
    g = next(f for f in bm.functions if f.name == "guarded")
    assert g.status == "partial" and g.n_unmapped_calls == 1 and "returns_twice" in g.reason, g
    assert g.n_callsites >= 5


def test_maps_lists_what_is_still_skipped(tmp_path: Path) -> None:
    """``mappedtrace maps`` names each skipped function with its reason, in the
    table and in the JSON (tests/pass_inputs/skip.c: inline asm with memory
    operands is still skipped, and so is a setjmp caller whose value live after
    setjmp does not dominate a later call; the plain setjmp caller is not)."""
    exe = tmp_path / "skip"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-o", str(exe), str(ROOT / "tests" / "pass_inputs" / "skip.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    t = run_mt("maps", str(exe))
    assert t.returncode == 0, t.stderr
    assert re.search(r"with_asm \(skipped\): inline asm with memory operands", t.stdout), t.stdout
    assert re.search(r"setjmp_in_loop \(skipped\): calls a returns_twice function \(setjmp\), and a value "
                     r"live after it does not dominate a later call", t.stdout), t.stdout
    assert "with_setjmp (skipped)" not in t.stdout
    j = run_mt("maps", str(exe), "--json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    skipped = {f["name"]: f["reason"] for f in doc["functions"] if f["status"] == "skipped"}
    not_dominated = "calls a returns_twice function (setjmp), and a value live after it does not dominate a later call"
    assert skipped == {"with_asm": "inline asm with memory operands", "setjmp_in_loop": not_dominated}, skipped
    assert doc["summary"]["skipped_reasons"] == {"inline asm with memory operands": 1, not_dominated: 1}
    assert re.search(r"still skipped: 2 functions \((inline asm with memory operands: 1|calls a returns_twice)",
                     t.stdout), t.stdout


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_computed_goto_with_invokes(opt: str, tmp_path: Path) -> None:
    """C++: landing pads and invokes in a computed-goto function (the IR
    verifier on, MAPPEDTRACE_VERIFY=1): it is instrumented and runs as built
    without the pass."""
    if not tc.find_tool("clang++-22"):
        pytest.skip("clang++-22 not installed")
    src = ROOT / "tests" / "pass_inputs" / "cgoto_eh.cpp"
    exe = tmp_path / f"cgoto_eh{opt}"
    r = subprocess.run([MAPPEDTRACE, "cc", opt, "-o", str(exe), str(src), "-lstdc++"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MAPPEDTRACE_VERIFY": "1"})
    assert r.returncode == 0 and "not instrumented" not in r.stderr, r.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "acc=1003\n"), out.stderr
    run = next(f for f in maps.BinaryMaps.load(str(exe)).functions if f.name == "_Z3runPKh")
    assert run.status != "skipped" and run.n_callsites >= 5, run
