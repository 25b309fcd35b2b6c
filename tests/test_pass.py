"""The LLVM pass: liveness rules through ``print<mappedtrace>``, the records
``llvm-readobj --stackmap`` shows, skipping rules, ABI-sensitive calls and
C++ invokes, and the decoded maps of real binaries (mappedtrace.formats.maps).

Inputs live in tests/pass_inputs/; everything is built into tmp_path.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import lldb_or_skip, real_map_warnings as _real_warnings  # noqa: F401 (and the plugin fixture)

from mappedtrace import toolchain as tc
from mappedtrace.formats import maps, mtmap

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "pass_inputs"
SAMPLES = HERE.parent / "samples"
MT_MAGIC = 0x4D54 << 48

pytestmark = pytest.mark.skipif(
    not (tc.find_tool("clang-22") and tc.find_tool("opt-22") and shutil.which("cmake")),
    reason="LLVM 22 toolchain (clang-22, opt-22, cmake) not installed")


#: makes the pass write LLVM's .llvm_stackmaps beside .mtstack (for llvm-readobj --stackmap)
LLVM_TABLE = {"MAPPEDTRACE_LLVM_STACKMAPS": "1"}


def _run(cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    # MAPPEDTRACE_VERIFY=1: the pass runs the IR verifier on what it wrote
    # (clang itself compiles without the verifier).
    env = dict(os.environ, MAPPEDTRACE_VERIFY="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, **kw)


def _printer(plugin: str, ll: Path, **env: str) -> dict[str, list[str]]:
    """Run print<mappedtrace> (with extra environment ``env``); returns {function: [its lines]}."""
    r = _run([tc.require_tool("opt-22"), f"-load-pass-plugin={plugin}",
              "-passes=print<mappedtrace>", "-disable-output", str(ll)], env=env)
    assert r.returncode == 0, r.stderr
    out: dict[str, list[str]] = {}
    cur = None
    for line in r.stdout.splitlines():
        m = re.match(r"function (\S+): (.*)", line)
        if m:
            cur = m.group(1)
            out[cur] = [m.group(2)]
        elif cur:
            out[cur].append(line.strip())
    return out


def _site(lines: list[str], prefix: str) -> tuple[set[str], set[str]]:
    """(value names, slot names) of the first line starting with prefix."""
    for line in lines:
        if line.startswith(prefix):
            vals, slots = re.search(r"values \[(.*?)\] slots \[(.*?)\]", line).groups()
            names = lambda s: {x.split(":")[0] for x in s.split(", ") if x}
            return names(vals), names(slots)
    raise AssertionError(f"no line starting with {prefix!r} in {lines}")


def _derived(lines: list[str], prefix: str) -> dict[str, str]:
    """{derived pointer: "base+offset"} of the first line starting with prefix."""
    vals, _ = _site(lines, prefix)
    return dict(v.split("=", 1) for v in vals if "=" in v)


@pytest.fixture(scope="module")
def liveness(plugin):
    return _printer(plugin, INPUTS / "liveness.ll", MAPPEDTRACE_LOOP_POINTS="1")


def test_dead_pointer_not_recorded(liveness):
    # %p dominates the call to @g but nothing reads it afterwards.
    assert _site(liveness["dead_after"], "call #1 @g") == (set(), set())
    assert _site(liveness["live_across"], "call #0 @g") == ({"%p"}, set())


def test_pointer_live_on_one_branch(liveness):
    lines = liveness["one_branch"]
    assert _site(lines, "call #1 @g")[0] == {"%p", "%q"}
    assert _site(lines, "call #2 @g")[0] == {"%p"}   # then-branch: only %p
    assert _site(lines, "call #4 @g")[0] == {"%q"}   # else-branch: only %q
    assert _site(lines, "call #0 @malloc")[0] == {"%p"}  # %q is the call's own result


def test_phi_operands_live_on_their_edge_only(liveness):
    assert _site(liveness["phi_edges"], "call #0 @g")[0] == {"%a"}
    assert _site(liveness["phi_edges"], "call #1 @g")[0] == {"%b"}


def test_loop_without_call_gets_map_point(liveness):
    assert "0 call sites, 1 loop points" in liveness["loop_nocall"][0]
    assert _site(liveness["loop_nocall"], "loop %h")[0] == {"%p"}
    assert "0 loop points" in liveness["loop_call"][0]


def test_loop_points_off_by_default(plugin, liveness):
    # off unless asked for (mappedtrace cc --settle-points sets MAPPEDTRACE_LOOP_POINTS=1)
    default = _printer(plugin, INPUTS / "liveness.ll")
    off = _printer(plugin, INPUTS / "liveness.ll", MAPPEDTRACE_LOOP_POINTS="0")
    for maps in (default, off):
        assert "0 call sites, 0 loop points" in maps["loop_nocall"][0]
        assert maps["live_across"] == liveness["live_across"]


def test_derived_pointers_recorded_as_constants(liveness):
    lines = liveness["derived"]
    vals, _ = _site(lines, "call #0 @g")
    # %p is stored; %f8, %f16 (a non-inbounds chain) and %back are %p plus a
    # constant; %vi (inbounds, variable index) points into %p's object: not stored
    assert {v for v in vals if "=" not in v} == {"%p"}
    assert _derived(lines, "call #0 @g") == {"%f8": "%p+8", "%f16": "%p+16", "%back": "%p-8"}
    assert _site(lines, "call #1 @use3")[0] == {"%p"}


def test_derived_pointers_with_a_dead_base(liveness):
    lines = liveness["derived_dead_base"]
    vals, _ = _site(lines, "call #0 @g")
    # two derived pointers: their base is recorded once instead; %v's base is
    # not live there, so %v is stored itself
    assert {v for v in vals if "=" not in v} == {"%q", "%v"}
    assert _derived(lines, "call #0 @g") == {"%a": "%q+8", "%b": "%q+24"}
    assert _site(lines, "call #2 @g")[0] == {"%a"}          # one alone stays a VALUE


def test_tail_calls_stay_plain(liveness):
    assert "1 call sites" in liveness["tail_void"][0] and "1 tail calls" in liveness["tail_void"][0]
    assert "1 call sites" in liveness["tail_merge"][0] and "1 tail calls" in liveness["tail_merge"][0]
    assert "1 call sites" in liveness["not_tail"][0] and "0 tail calls" in liveness["not_tail"][0]


def test_pointers_to_static_storage_not_recorded(liveness):
    lines = liveness["static_pointers"]
    # at @g: %fn (a select of two functions) and %slot (an element of a global
    # table) are live but can reach no heap object; %mixed may be %heap
    assert _site(lines, "call #0 @g")[0] == {"%mixed", "%t"}
    assert _site(lines, "call #1 <indirect>")[0] == {"%mixed", "%t"}
    # a GEP that is not inbounds may leave the global (found by review)
    assert _site(liveness["static_offset"], "call #0 @g")[0] == {"%q"}


def test_array_cursor_covered_by_its_base(liveness):
    lines = liveness["cursor"]
    assert _site(lines, "call #0 @g")[0] == {"%a"}           # %c points into %a's array
    # %f = %c + 8 is written as DERIVED, so %c is stored for it
    assert {v for v in _site(lines, "call #1 @g")[0] if "=" not in v} == {"%a", "%c"}
    assert _derived(lines, "call #1 @g") == {"%f": "%c+8"}
    # the base is loaded anew in each iteration: %c may point into the old object
    assert _site(liveness["cursor_base_in_loop"], "call #0 @g")[0] == {"%pp", "%c", "%b"}
    # nor in an irreducible cycle, which is no natural loop
    assert _site(liveness["cursor_irreducible"], "call #1 @g")[0] == {"%p", "%b"}


def test_call_result_and_frame_addresses(liveness):
    assert _site(liveness["result_live"], "call #0 @malloc") == (set(), set())
    assert _site(liveness["result_live"], "call #1 @g")[0] == {"%m"}
    # a static alloca's address is never a VALUE; its contents are a SLOT
    assert _site(liveness["alloca_not_value"], "call #1 @g") == (set(), {"%slot"})
    assert _site(liveness["alloca_not_value"], "call #0 @malloc") == (set(), set())


def test_vector_and_aggregate_values(liveness, plugin, tmp_path):
    assert _site(liveness["vector_lanes"], "call #0 @g")[0] == {"%v", "%s"}
    assert _site(liveness["vector_lanes"], "call #1 @use")[0] == {"%s"}
    obj = tmp_path / "l.o"
    # LLVM's own table kept beside .mtstack, for llvm-readobj (the two agree: test_formats_real.py)
    r = _run([tc.require_tool("clang-22"), "-O0", "-c", f"-fpass-plugin={plugin}", "-o", str(obj),
              str(INPUTS / "liveness.ll")], env=LLVM_TABLE)
    assert r.returncode == 0, r.stderr
    out = _run([tc.require_tool("llvm-readobj-22"), "--stackmap", str(obj)]).stdout
    # two vector lanes and one struct field: three (descriptor, location) pairs
    assert "#3: Constant 6, size: 8" in out


@pytest.fixture(scope="module")
def slots(plugin, tmp_path_factory):
    ll = tmp_path_factory.mktemp("slots") / "slots.ll"
    r = _run([tc.require_tool("clang-22"), "-O0", "-g", "-fno-discard-value-names", "-S",
              "-emit-llvm", "-o", str(ll), str(INPUTS / "slots.c")])
    assert r.returncode == 0, r.stderr
    return _printer(plugin, ll)


def test_stale_slot_not_recorded(slots):
    assert _site(slots["stale"], "call #2 @g") == (set(), set())
    assert _site(slots["overwritten"], "call #2 @g") == (set(), set())


def test_live_slot_recorded_with_type(slots):
    assert _site(slots["live_slot"], "call #1 @g")[1] == {"%p"}
    line = next(l for l in slots["typed"] if l.startswith("call #1 @g"))
    assert "%q:struct pair*" in line


def test_escaped_slot_recorded_once_written(slots):
    assert _site(slots["escaped"], "call #0 @malloc")[1] == set()  # stale bytes before
    assert _site(slots["escaped"], "call #1 @use")[1] == {"%p"}
    assert _site(slots["escaped"], "call #2 @g")[1] == {"%p"}


def _build(plugin: str, src: Path, out: Path, *flags: str, cxx: bool = False,
           env: dict | None = None) -> subprocess.CompletedProcess:
    cc = tc.require_tool("clang++-22" if cxx else "clang-22")
    r = _run([cc, *flags, "-g", "-fno-pie", "-no-pie", f"-fpass-plugin={plugin}", "-o", str(out),
              str(src)], env=env)
    assert r.returncode == 0, r.stderr
    return r


def _stackmap_ids(binary: Path) -> list[int]:
    r = _run([tc.require_tool("llvm-readobj-22"), "--stackmap", str(binary)])
    assert r.returncode == 0, r.stderr
    return [int(x) for x in re.findall(r"Record ID: (\d+)", r.stdout)]


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_leaky_records_and_maps(plugin, tmp_path, opt):
    exe = tmp_path / "leaky"
    # LLVM's own table kept beside .mtstack, for llvm-readobj (the two agree: test_formats_real.py)
    _build(plugin, SAMPLES / "leaky.c", tmp_path / "leaky_default", opt, env=LLVM_TABLE)  # no loop points by default
    assert {(i >> 40) & 0xFF for i in _stackmap_ids(tmp_path / "leaky_default")} == {1}
    _build(plugin, SAMPLES / "leaky.c", exe, opt, env={"MAPPEDTRACE_LOOP_POINTS": "1", **LLVM_TABLE})
    ids = _stackmap_ids(exe)
    assert ids and all(i >> 48 == 0x4D54 for i in ids)
    kinds = {(i >> 40) & 0xFF for i in ids}
    assert 1 in kinds and (2 in kinds or opt == "-O0")
    assert len(set(ids)) == len(ids)
    bm = maps.BinaryMaps.load(str(exe))
    assert bm.has_maps and not _real_warnings(bm)
    assert len(bm.records) == len(ids)
    fn = {f.name: f for f in bm.functions}
    assert fn["leak_things"].status == "instrumented" and fn["leak_things"].n_callsites >= 8
    assert sum(f.n_callsites + f.n_loop_points for f in bm.functions) == len(ids)
    g = {x.name: x for x in bm.globals}
    assert set(g) >= {"kept_list", "kept_tree", "kept_interior"}
    assert g["kept_tree"].tls and not g["kept_list"].tls and g["kept_list"].address
    node = next(t for t in bm.types.values() if t.name == "struct node")
    assert node.size == 16 and [(s.offset, s.target) for s in node.slots] == [(8, node.id)]
    tree = next(t for t in bm.types.values() if t.name == "struct tree")
    assert [s.offset for s in tree.slots] == [0, 8, 16]
    assert bm.types[g["kept_list"].type_id].slots[0].target == node.id
    assert bm.types[g["kept_interior"].type_id].slots[0].flags & maps.SLOT_UNTYPED
    # leak_things holds struct node pointers across calls
    lt = fn["leak_things"]
    entries = [e for pc in bm.map_point_pcs(lt.address) for e in bm.records[pc].entries]
    if opt == "-O2":
        vals = [e for e in entries if e.role == "value"]
        assert any(e.type_id == node.id for e in vals)
        # kept in callee-saved registers (rbx, rbp, r12-r15), not spilled
        assert any(e.location.kind == "Register" and e.location.dwarf_reg in (3, 6, 12, 13, 14, 15)
                   for e in vals)
    else:
        slots = [e for e in entries if e.role == "slot"]
        assert slots and all(e.location.kind == "Direct" for e in slots)
        assert {a.name for a in lt.allocas} >= {"dropped", "a", "b", "c", "t", "s"}


def test_no_textrel(plugin, tmp_path):
    exe = tmp_path / "leaky"
    _build(plugin, SAMPLES / "leaky.c", exe, "-O2")
    r = _run(["readelf", "-d", "-S", "-W", str(exe)])
    assert "TEXTREL" not in r.stdout
    for sec in (".mtmap", ".mtstack"):
        line = next(l for l in r.stdout.splitlines() if f" {sec} " in l)
        assert "W" not in line.split()[-4], line  # read-only


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_abi_sensitive_calls_unchanged(plugin, tmp_path, opt):
    exe, ref = tmp_path / "abi", tmp_path / "abi_ref"
    _build(plugin, INPUTS / "abi.c", exe, opt)
    r = _run([tc.require_tool("clang-22"), opt, "-o", str(ref), str(INPUTS / "abi.c")])
    assert r.returncode == 0, r.stderr
    a, b = _run([str(exe)]), _run([str(ref)])
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
    assert "vsum 7.50" in a.stdout
    bm = maps.BinaryMaps.load(str(exe))
    main = next(f for f in bm.functions if f.name == "main")
    assert main.n_callsites >= 8  # printf (varargs, through a thunk), indirect, noreturn


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_cxx_invokes(plugin, tmp_path, opt):
    exe, ref = tmp_path / "eh", tmp_path / "eh_ref"
    _build(plugin, INPUTS / "eh.cpp", exe, opt, cxx=True)
    r = _run([tc.require_tool("clang++-22"), opt, "-o", str(ref), str(INPUTS / "eh.cpp")])
    assert r.returncode == 0, r.stderr
    a, b = _run([str(exe)]), _run([str(ref)])
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
    assert "caught k=3" in a.stdout
    bm = maps.BinaryMaps.load(str(exe))
    main = next(f for f in bm.functions if f.name == "main")
    assert main.status in ("instrumented", "partial") and main.n_callsites >= 5


def test_asm_skipped_with_warning_setjmp_instrumented(plugin, tmp_path):
    exe = tmp_path / "skip"
    r = _build(plugin, INPUTS / "skip.c", exe, "-O2")
    assert "with_setjmp not instrumented" not in r.stderr
    assert "with_asm not instrumented: inline asm with memory operands" in r.stderr
    assert "plain" not in r.stderr
    out = _run([str(exe)])
    assert out.returncode == 0 and "r=7" in out.stdout
    fn = {f.name: f for f in maps.BinaryMaps.load(str(exe)).functions}
    # setjmp callers are instrumented; the setjmp call itself is no map point
    assert fn["with_setjmp"].status == "partial" and "returns_twice" in fn["with_setjmp"].reason
    assert fn["with_setjmp"].n_unmapped_calls == 1 and fn["with_setjmp"].n_callsites >= 2
    assert fn["with_asm"].status == "skipped"
    # a value live after setjmp that does not dominate a later call: still skipped
    assert "setjmp_in_loop not instrumented: calls a returns_twice function (setjmp), and a value" in r.stderr
    assert fn["setjmp_in_loop"].status == "skipped"
    assert fn["plain"].status == "instrumented" and fn["plain"].n_callsites >= 1


def test_second_run_is_a_no_op(plugin, tmp_path):
    # compile, then run the pass again on the output IR (as LTO would)
    ll = tmp_path / "a.ll"
    r = _run([tc.require_tool("clang-22"), "-O2", "-g", "-fno-pie", f"-fpass-plugin={plugin}",
              "-S", "-emit-llvm", "-o", str(ll), str(SAMPLES / "leaky.c")])
    assert r.returncode == 0, r.stderr
    once = ll.read_text()
    assert once.count('section ".mtmap"') == 1 and "mappedtrace.instrumented" in once
    r = _run([tc.require_tool("opt-22"), f"-load-pass-plugin={plugin}", "-passes=mappedtrace",
              "-S", "-o", str(tmp_path / "b.ll"), str(ll)])
    assert r.returncode == 0, r.stderr
    twice = (tmp_path / "b.ll").read_text()
    assert twice.count('section ".mtmap"') == 1
    assert twice.count("@llvm.experimental.gc.statepoint") == once.count("@llvm.experimental.gc.statepoint")


def test_type_table_layouts(plugin, tmp_path):
    exe = tmp_path / "types"
    _build(plugin, INPUTS / "types.c", exe, "-O1")
    assert _run([str(exe)]).returncode == 0
    bm = maps.BinaryMaps.load(str(exe))
    g = {x.name: x for x in bm.globals}
    assert "g_no_pointers" not in g
    assert g["t_pair"].tls and g["g_const"].constant
    T = bm.types
    node = next(t for t in T.values() if t.name == "struct node")
    mixed = T[g["g_mixed"].type_id]
    assert mixed.size == 16064 and mixed.flags & maps.TYPE_HAS_UNION
    s = {x.offset: x for x in mixed.slots}
    assert s[0].flags & maps.SLOT_UNTYPED                      # char*
    assert s[8].flags & maps.SLOT_FUNCTION                     # void (*)(int)
    assert s[16].flags & maps.SLOT_CONSERVATIVE and s[16].target == node.id  # union member
    assert (s[24].count, s[24].stride) == (1000, 16) and s[24].flags & maps.SLOT_UNTYPED
    assert (s[32].count, s[32].stride) == (1000, 16)
    assert s[16024].target == node.id and s[16024].flags == 0  # const node_t* via typedef
    assert s[16040].target == node.id                          # inside an anonymous struct
    assert [x.offset for x in mixed.slots] == sorted(x.offset for x in mixed.slots)
    flex = next(t for t in T.values() if t.name == "struct flex")
    assert flex.flags & maps.TYPE_FLEX and flex.flex_offset == 8
    assert T[flex.elem_type].slots[0].target == node.id
    arr = T[g["g_nodes"].type_id]
    assert arr.kind == "array" and (arr.slots[0].count, arr.slots[0].stride) == (8, 8)
    either = T[g["g_either"].type_id]
    assert either.kind == "union" and either.slots[0].flags & maps.SLOT_CONSERVATIVE
    # the same struct in another translation unit gets the same id
    other = tmp_path / "other.c"
    other.write_text("struct node { long v; struct node *next; };\nstruct node *other_root;\n"
                     "int main(void) { return other_root != 0; }\n")
    exe2 = tmp_path / "other"
    _build(plugin, other, exe2, "-O1")
    bm2 = maps.BinaryMaps.load(str(exe2))
    assert bm2.types[bm2.globals[0].type_id].slots[0].target == node.id


def _pointers_at_caller_record(exe: Path, caller: str, out: Path) -> tuple[set[int], set[int]]:
    """Run ``exe`` under LLDB to ``pause_here``; returns (addresses the program
    printed as ``a=0x… b=0x… c=0x…``, pointers the caller's record locates)."""
    lldb = lldb_or_skip()
    from mappedtrace.target.base import DWARF_REGS
    bm = maps.BinaryMaps.load(str(exe))
    dbg = lldb.SBDebugger.Create()
    dbg.SetAsync(False)
    found: set[int] = set()
    try:
        target = dbg.CreateTarget(str(exe))
        assert target.BreakpointCreateByName("pause_here").GetNumLocations() >= 1
        info = lldb.SBLaunchInfo([])
        info.AddOpenFileAction(1, str(out), False, True)
        err = lldb.SBError()
        proc = target.Launch(info, err)
        assert err.Success(), err.GetCString()
        try:
            assert proc.GetState() == lldb.eStateStopped
            th = proc.GetSelectedThread()
            # skip inlined frames (LLDB lists them as frames of their own)
            frame = next((th.GetFrameAtIndex(i) for i in range(1, min(th.GetNumFrames(), 8))
                          if th.GetFrameAtIndex(i).GetFunctionName() == caller
                          and not th.GetFrameAtIndex(i).IsInlined()), None)
            assert frame is not None, [th.GetFrameAtIndex(i).GetFunctionName() for i in range(4)]
            # the maps hold link-time addresses: a PIE runs at a load bias
            rec = bm.record_at(frame.GetPCAddress().GetFileAddress())
            assert rec is not None and rec.kind == "call", hex(frame.GetPC())

            def reg(n: int) -> int:
                return frame.FindRegister(DWARF_REGS[n]).GetValueAsUnsigned()

            def word(addr: int) -> int:
                e = lldb.SBError()
                v = proc.ReadPointerFromMemory(addr, e)
                assert e.Success(), hex(addr)
                return v

            for e in rec.entries:
                loc = e.location
                if loc.kind == "Register":
                    v = reg(loc.dwarf_reg)
                elif loc.kind == "Direct":
                    v = reg(loc.dwarf_reg) + loc.offset
                elif loc.kind == "Indirect":
                    v = word(reg(loc.dwarf_reg) + loc.offset)
                else:
                    continue
                if e.role == "value":
                    found.add(v)
                    continue
                t = bm.types.get(e.type_id)
                offsets = [s.offset + i * s.stride for s in (t.slots if t else [])
                           for i in range(min(s.count, 64))] or [0]
                found.update(word(v + o) for o in offsets)
            proc.Continue()
        finally:
            proc.Kill()
    finally:
        lldb.SBDebugger.Destroy(dbg)
    printed = re.search(r"a=(0x[0-9a-f]+) b=(0x[0-9a-f]+) c=(0x[0-9a-f]+)", out.read_text())
    assert printed, out.read_text()
    return {int(x, 16) for x in printed.groups()}, found


@pytest.mark.parametrize("opt", ["-O0", "-O1", "-O2"])
def test_record_locations_hold_the_pointers(plugin, tmp_path, opt):
    """Stop in pause_here() under LLDB; the caller's record must locate the
    three pointers hold() printed (registers recovered by LLDB's unwinder,
    stack slots read from memory)."""
    exe = tmp_path / "where"
    _build(plugin, INPUTS / "where.c", exe, opt)
    want, found = _pointers_at_caller_record(exe, "hold", tmp_path / "out.txt")
    assert want <= found, (sorted(map(hex, want)), sorted(map(hex, found)))


@pytest.mark.skipif(not (tc.find_tool("rustc") and tc.find_tool("ld.lld-22")),
                    reason="rustc / lld-22 not installed")
@pytest.mark.parametrize("opt", [["-O"], []], ids=["O", "debug"])
def test_rust_record_locations_hold_the_pointers(plugin, tmp_path, opt):
    from mappedtrace.driver import rustc_command
    exe = tmp_path / "where_rs"
    r = _run([*rustc_command([*opt, "-o", str(exe), str(SAMPLES / "rust" / "where.rs")],
                             plugin=plugin)])
    assert r.returncode == 0, r.stderr
    want, found = _pointers_at_caller_record(exe, "hold", tmp_path / "out.txt")
    assert want <= found, (sorted(map(hex, want)), sorted(map(hex, found)))


def _calls(binary: Path) -> list[tuple[str, int]]:
    """(callee, return address) of every direct call to a PLT entry in ``binary``."""
    r = _run([tc.require_tool("llvm-objdump-22"), "-d", str(binary)])
    assert r.returncode == 0, r.stderr
    out = []
    for m in re.finditer(r"^\s+([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*call\w*\s+0x[0-9a-f]+ <(\w+)@plt>",
                         r.stdout, re.M):
        out.append((m.group(3), int(m.group(1), 16) + len(m.group(2).split())))
    return out


def test_fatal_calls_have_no_record(plugin, tmp_path):
    """Calls of __assert_fail, abort and _exit stay plain calls (no record,
    function "partial" with its reason): check()'s three inlined asserts merge
    into one call block as in the plain build; exit() keeps its record."""
    src = INPUTS / "fatal.c"
    plain, exe = tmp_path / "plain", tmp_path / "maps"
    r = _run([tc.require_tool("clang-22"), "-O2", "-g", "-fno-pie", "-no-pie", "-o", str(plain), str(src)])
    assert r.returncode == 0, r.stderr
    _build(plugin, src, exe, "-O2")
    count = lambda calls, name: sum(1 for c, _ in calls if c == name)
    pc, mc = _calls(plain), _calls(exe)
    assert count(pc, "__assert_fail") == 1          # merged in the plain build
    assert count(mc, "__assert_fail") == count(pc, "__assert_fail")
    bm = maps.BinaryMaps.load(str(exe))
    assert bm.has_maps and not _real_warnings(bm)
    fatal = [ret for c, ret in mc if c in ("__assert_fail", "abort", "_exit")]
    assert len(fatal) >= 3 and all(bm.record_at(ret) is None for ret in fatal)
    exits = [ret for c, ret in mc if c == "exit"]
    assert exits and all(bm.record_at(ret) is not None for ret in exits)
    assert all(bm.record_at(ret) is not None for c, ret in mc if c == "use")
    fn = {f.name: f for f in bm.functions}
    for name in ("checked", "bail"):
        assert fn[name].status == "partial" and fn[name].reason == mtmap.STD_REASONS[3]
        assert fn[name].n_unmapped_calls >= 1 and fn[name].n_callsites >= 1
