"""The map contract checked by an independent oracle (issue #11, item 7).

tests/oracle/liveness_oracle.py parses the IR clang-22 prints after the pass
(llvmlite, LLVM 22.1), recomputes which pointer values are live after every
map point with the textbook backward dataflow, and compares with the pairs the
pass wrote; each omission rule of FORMAT.md is accepted only once its
condition is checked.  Here: the oracle's own liveness on hand-checked cases,
each omission rule accepted and then rejected once the IR is edited to break
its condition, and the comparison on the C leak corpus, the samples, the pass
inputs, the Rust corpus and Lua 5.4 (slow).  SQLite's amalgamation is compared by
benchmarks/oracle/run.py (results in tests/real_programs/ORACLE.md).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need, source_tree

from mappedtrace import toolchain as tc

pytest.importorskip("llvmlite.binding", reason="llvmlite (pyproject's test extra) is not installed")
from oracle import liveness_oracle as lo  # noqa: E402

INPUTS = ROOT / "tests" / "pass_inputs"
#: loop map points too (whatever the pass's default), so the oracle checks them
LOOP_POINTS = {**os.environ, "MAPPEDTRACE_LOOP_POINTS": "1"}
pytestmark = pytest.mark.skipif(not (tc.find_tool("clang-22") and tc.find_tool("opt-22")),
                                reason="LLVM 22 toolchain (clang-22, opt-22) not installed")


def emit_ir(plugin: str, src: Path, *flags: str) -> tuple[str, dict[str, str]]:
    """(IR after the pass, {skipped function: reason}) of one C/C++ source at -O2."""
    cc = tc.require_tool("clang++-22" if src.suffix == ".cpp" else "clang-22")
    r = subprocess.run([cc, "-O2", "-g", "-fno-pie", f"-fpass-plugin={plugin}", *flags,
                        "-S", "-emit-llvm", "-o", "-", str(src)],
                       capture_output=True, text=True, timeout=600, env=LOOP_POINTS)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, lo.skipped_functions(r.stderr)


#: ``copied_slot`` differences judged one by one in tests/real_programs/ORACLE.md
#: (slots filled by memcpy only: the bytes may or may not hold pointers), by
#: function: the open bug's reproduction, and Rust's Arc::new (no pointers)
JUDGED = ("save_restore", "Arc$LT$T$GT$3new")


def _no_differences(r: lo.Report) -> None:
    hard = []
    for d in r.differences:
        if d.kind == "copied_slot" and any(j in d.function for j in JUDGED):
            print(f"  judged in ORACLE.md: {d}")
        else:
            hard.append(d)
    assert not hard, "\n".join(map(str, hard[:40]))


def _names(r: lo.Report, fn: str, point: str) -> set[str]:
    # gc.result takes the call's name plus a digit (q → q1)
    for p, names in r.points[fn]:
        if p == point:
            return {re.sub(r"\d+$", "", n) for n in names}
    raise AssertionError(f"no point {point!r} in {fn}: {r.points[fn]}")


def _function(ir: str, name: str) -> tuple[int, int]:
    start = ir.index(f" @{name}(")
    start = ir.rindex("\ndefine ", 0, start)
    return start, ir.index("\n}\n", start)


def _edit_in(ir: str, fn: str, old: str, new: str, count: int = 1) -> str:
    """``ir`` with ``old`` replaced by ``new`` inside function ``fn`` only."""
    a, b = _function(ir, fn)
    body = ir[a:b]
    assert old in body, f"{old!r} not in {fn}"
    return ir[:a] + body.replace(old, new, count) + ir[b:]


# -- the oracle's liveness on hand-checked cases ---------------------------------

@pytest.fixture(scope="module")
def liveness_post(plugin) -> str:
    r = subprocess.run([tc.require_tool("opt-22"), f"-load-pass-plugin={plugin}", "-passes=mappedtrace",
                        "-S", str(INPUTS / "liveness.ll"), "-o", "-"],
                       capture_output=True, text=True, timeout=120, env=LOOP_POINTS)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_oracle_liveness_on_hand_checked_cases(liveness_post: str) -> None:
    r = lo.check_module(liveness_post, keep_points=True)
    # the expectations are read off tests/pass_inputs/liveness.ll by hand
    assert _names(r, "dead_after", "call #1 @g") == set()
    assert _names(r, "live_across", "call #0 @g") == {"p"}
    assert _names(r, "one_branch", "call #0 @malloc") == {"p"}        # not its own result
    assert _names(r, "one_branch", "call #1 @g") == {"p", "q"}
    assert _names(r, "one_branch", "call #2 @g") == {"p"}
    assert _names(r, "one_branch", "call #4 @g") == {"q"}
    assert _names(r, "phi_edges", "call #0 @g") == {"a"}              # phi uses on their edge
    assert _names(r, "phi_edges", "call #1 @g") == {"b"}
    assert _names(r, "loop_nocall", "loop #0") == {"p"}
    assert _names(r, "result_live", "call #1 @g") == {"m"}
    assert _names(r, "vector_lanes", "call #0 @g") == {"s", "v"}
    _no_differences(r)
    for rule in ("value", "derived", "frame", "static", "interior", "cursor", "base", "tail"):
        assert r.outcomes[rule], (rule, r.summary())


def test_aggregate_values_are_recorded_lane_by_lane(plugin) -> None:
    # found by the oracle: a named-struct or array SSA value holding a pointer
    # was not recorded (the pass took vectors and literal structs only)
    r = subprocess.run([tc.require_tool("opt-22"), f"-load-pass-plugin={plugin}", "-passes=mappedtrace",
                        "-S", str(INPUTS / "aggregates.ll"), "-o", "-"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MAPPEDTRACE_VERIFY": "1"})
    assert r.returncode == 0, r.stderr
    rep = lo.check_module(r.stdout)
    missing = {d.function: d.detail for d in rep.differences}
    # the documented gaps, and nothing else
    assert set(missing) == {"nested", "wide"}, "\n".join(map(str, rep.differences))
    assert "1 of 2 pointer lanes" in missing["nested"]
    assert rep.outcomes["value"] == 4    # named, array, literal, vector


# -- each omission rule, accepted, then rejected once its condition is broken --------

@pytest.fixture(scope="module")
def rules(plugin) -> str:
    return emit_ir(plugin, INPUTS / "oracle_rules.c")[0]


def test_each_omission_rule_is_accepted_where_it_holds(rules: str) -> None:
    r = lo.check_module(rules)
    print("oracle_rules.c:", r.summary())
    _no_differences(r)
    for rule in ("value", "derived", "frame", "static", "interior", "cursor", "tail"):
        assert r.outcomes[rule], (rule, r.summary())


def _diffs(ir: str, skipped: dict[str, str] | None = None) -> list[tuple[str, str]]:
    return [(d.kind, d.function) for d in lo.check_module(ir, skipped).differences]


def _deopt(ir: str, fn: str) -> str:
    a, b = _function(ir, fn)
    return re.search(r'\[ "deopt"\((.*?)\) \]', ir[a:b]).group(1)


def test_a_dropped_value_pair_is_missing(rules: str) -> None:
    broken = _edit_in(rules, "value", f'"deopt"({_deopt(rules, "value")})', '"deopt"()')
    assert _diffs(broken) == [("missing", "value")]


def test_a_wrong_derived_offset_is_caught(rules: str) -> None:
    pairs = _deopt(rules, "derived")
    off = re.search(r"i64 -9223372036854775808, i64 (\d+)", pairs).group(1)
    broken = _edit_in(rules, "derived", pairs, pairs.replace(f"i64 -9223372036854775808, i64 {off}",
                                                             f"i64 -9223372036854775808, i64 {int(off) + 1}"))
    assert set(_diffs(broken)) == {("missing", "derived"), ("extra_derived", "derived")}


def test_static_image_rule_rejects_a_thread_local(rules: str) -> None:
    # ga/gb are plain globals: a pointer into them is no root. A thread-local
    # lives in the TLS block (not the static image): it must be recorded.
    assert "@ga = dso_local local_unnamed_addr global" in rules
    broken = rules.replace("@ga = dso_local local_unnamed_addr global",
                           "@ga = dso_local thread_local local_unnamed_addr global")
    assert ("missing", "stat") in _diffs(broken)
    # the same through constant-expression GEPs of an internal constant
    assert "@fmt = internal unnamed_addr constant" in rules
    broken = rules.replace("@fmt = internal unnamed_addr constant",
                           "@fmt = internal thread_local unnamed_addr constant")
    assert ("missing", "stat_const") in _diffs(broken)


def test_interior_and_cursor_need_their_base_recorded(rules: str) -> None:
    # the first call of interior() records arr only (&arr[i] is reached through it)
    a, b = _function(rules, "interior")
    first = re.search(r'"deopt"\((i64 \d+, ptr %0)\)', rules[a:b]).group(1)
    broken = _edit_in(rules, "interior", f'"deopt"({first})', '"deopt"()')
    assert _diffs(broken).count(("missing", "interior")) == 2    # arr and &arr[i]
    broken = _edit_in(rules, "cursor", f'"deopt"({_deopt(rules, "cursor")})', '"deopt"()')
    missing = [d for d in lo.check_module(broken).differences if d.function == "cursor"]
    assert any(" = phi ptr" in d.value for d in missing), missing   # the cursor itself


def test_cursor_rule_rejects_a_base_defined_in_the_loop(liveness_post: str) -> None:
    # cursor_base_in_loop: %c = phi [null, %b + 8] with %b loaded in the same
    # loop; %b is recorded, but %c may still point into the previous %b's
    # object, so the pass records %c itself. Without that pair the oracle must
    # refuse the cursor rule (the base is in a cycle with the phi).
    assert _diffs(liveness_post) == []
    broken = _edit_in(liveness_post, "cursor_base_in_loop", "i64 0, ptr %c, ", "")
    diffs = lo.check_module(broken).differences
    assert [(d.kind, d.function) for d in diffs] == [("missing", "cursor_base_in_loop")]
    assert "%c = phi ptr" in diffs[0].value


def test_a_skip_reason_is_checked(rules: str) -> None:
    assert _diffs(rules, {"value": "computed goto (indirectbr)"}) == [("skip_unverified", "value")]


def test_slots_at_O0_and_a_dropped_slot(plugin) -> None:
    # at -O0 every local lives in a stack slot: n's slot is read after use()
    ir = emit_ir(plugin, INPUTS / "oracle_rules.c", "-O0")[0]
    r = lo.check_module(ir)
    _no_differences(r)
    assert r.outcomes["slot"] >= 5, r.summary()
    pairs = _deopt(ir, "value")
    assert re.search(r"i64 \d+, ptr %\d+", pairs)
    broken = _edit_in(ir, "value", f'"deopt"({pairs})', '"deopt"()')
    assert {d.kind for d in lo.check_module(broken).differences if d.function == "value"} == {"missing_slot"}


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_pointer_bytes_copied_into_a_char_buffer_are_recorded(plugin, opt: str) -> None:
    # the oracle reported copied_slot here before the buffer became a STORED slot
    r = lo.check_module(emit_ir(plugin, INPUTS / "copied_slot.c", opt)[0])
    assert not r.differences, "\n".join(map(str, r.differences))


_PLAIN = """
declare ptr @get(ptr)
declare void @use(ptr)
define ptr @t(ptr %p) {
  %q = tail call ptr @get(ptr %p)
  call void @use(ptr %q)
  ret ptr %p
}
"""


def test_plain_calls_left_in_instrumented_code_are_checked() -> None:
    # a tail call after which %p is still used, and a call without a map point
    r = lo.check_module(_PLAIN)
    assert sorted(d.kind for d in r.differences) == ["missing_site", "tail_live"]
    assert "%p" in str(next(d for d in r.differences if d.kind == "tail_live"))


def test_longjmp_edges_are_the_oracles_own(plugin) -> None:
    """setjmp_error.c: the values and slots that only setjmp's second return
    reads are recorded at the calls after it, and the oracle finds them live
    there by its own longjmp edges: without the returns_twice attribute (the
    edges gone) the same pairs are values the oracle finds dead, and slots it
    finds recorded where dead."""
    ir, skipped = emit_ir(plugin, ROOT / "tests" / "skipped_frames" / "setjmp_error.c")
    r = lo.check_module(ir, skipped)
    assert not r.differences, "\n".join(map(str, r.differences[:20]))
    assert r.plain_calls["returns_twice"] == 1
    assert "guarded" not in skipped
    # the calls of guarded after setjmp carry `saved` although the CFG has it dead there
    no_rt = "\n".join(re.sub(r"\breturns_twice\b", "", line) if line.startswith("attributes #") else line
                      for line in ir.split("\n"))
    assert no_rt != ir
    no_edges = lo.check_module(no_rt, skipped)
    kinds = no_edges.by_kind()
    assert kinds["extra_value"] >= 2, kinds
    assert all(d.function == "guarded" for d in no_edges.differences if d.kind == "extra_value")


# -- the corpus: every map point of every program agrees -----------------------------

CORPUS = sorted([*(ROOT / "tests" / "leak_corpus").glob("*.c"), *(ROOT / "samples").glob("*.c"),
                 *INPUTS.glob("*.c"), *INPUTS.glob("*.cpp"), *(ROOT / "tests" / "skipped_frames").glob("*.c")])


@pytest.mark.parametrize("src", CORPUS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_maps_agree_with_the_oracle(plugin, src: Path) -> None:
    if src.suffix == ".cpp" and not tc.find_tool("clang++-22"):
        pytest.skip("clang++-22 not installed")
    ir, skipped = emit_ir(plugin, src, f"-I{ROOT / 'tests' / 'leak_corpus'}")
    r = lo.check_module(ir, skipped)
    print(f"{src.name}: {r.summary()}")
    assert r.call_sites + r.loop_points > 0 or src.name == "types.c"
    _no_differences(r)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_lua_maps_agree_with_the_oracle(plugin, tmp_path: Path) -> None:
    """Lua 5.4 from its Debian sources, every file as the real-program tests build it."""
    src = source_tree("lua5.4") / "src"
    (tmp_path / "lua5.4-deb-multiarch.h").write_text('#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n')
    total = lo.Report()
    for f in sorted(src.glob("*.c")):
        if f.name == "luac.c":
            continue
        ir, skipped = emit_ir(plugin, f, "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX", f"-I{tmp_path}")
        total = total + lo.check_module(ir, skipped)
    print(f"lua 5.4: {total.summary()}")
    assert total.call_sites > 3000
    _no_differences(total)


RUST = sorted(p for p in [*(ROOT / "tests" / "leak_corpus_rust").glob("*.rs"), *(ROOT / "samples").glob("*.rs")]
              if "fn main" in p.read_text())


def emit_rust_ir(src: Path, opt: str, out: Path) -> list[str]:
    """The IR after the pass of a Rust program built by ``mappedtrace rustc``:
    the pass runs in lld's LTO backends, whose modules ``--save-temps`` keeps
    (``*.5.precodegen.bc``: what the code generator is given)."""
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "rustc", "-C", f"opt-level={opt}",
                        "--edition=2021", "-C", "link-arg=-Wl,--save-temps", "-o", str(out / "prog"), str(src)],
                       capture_output=True, text=True, timeout=600, cwd=out, env=LOOP_POINTS)
    assert r.returncode == 0, r.stderr[-2000:]
    texts = []
    for bc in sorted(out.glob("*.5.precodegen.bc")):
        d = subprocess.run([tc.require_tool("llvm-dis-22"), str(bc), "-o", "-"],
                           capture_output=True, text=True, timeout=120)
        assert d.returncode == 0, d.stderr
        texts.append(d.stdout)
    assert texts, f"no LTO module kept in {out}"
    return texts


@pytest.mark.parametrize("opt", ["0", "2"])
@pytest.mark.parametrize("src", RUST, ids=lambda p: p.name)
def test_rust_maps_agree_with_the_oracle(src: Path, opt: str, tmp_path: Path) -> None:
    need("rustc", "ld.lld-22", "llvm-dis-22")
    total = lo.Report()
    for ir in emit_rust_ir(src, opt, tmp_path / "build"):
        total = total + lo.check_module(ir)
    print(f"{src.name} -C opt-level={opt}: {total.summary()}")
    assert total.call_sites > 0
    _no_differences(total)


def test_oracle_benchmark_script_on_the_corpus(plugin, tmp_path: Path) -> None:
    """benchmarks/oracle/run.py (SQLite and Lua are its heavy part) on the corpus."""
    out = tmp_path / "oracle.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oracle" / "run.py"), "--programs", "corpus",
                        "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert out.stat().st_mode & 0o777 == 0o600
    c = res["corpus"]
    assert c["files"] == len(CORPUS) and c["call_sites"] > 500 and c["live_values"] > 1000
    # no difference left (the last one, SQLite's saveBuf, is fixed: tests/pass_inputs/copied_slot.c)
    assert c["differences"] == {}, c["difference_list"][:5]
    assert r.stdout.startswith("corpus: ")
