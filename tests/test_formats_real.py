"""The decoders on real binaries built by ``mappedtrace cc`` / ``mappedtrace rustc``.

* every stack map table agrees with ``llvm-readobj-22 --stackmap`` record by
  record (each table is checked alone: readobj reads only the first), in a
  build that keeps LLVM's table (``MAPPEDTRACE_LLVM_STACKMAPS=1``);
* the compact ``.mtstack`` of that build decodes to exactly the records of
  its ``.llvm_stackmaps`` (IDs, PCs, locations, live-outs, constants,
  function entries), and the default build (``.mtstack``, ``.mtmap`` version
  3) decodes to the same maps as the reference build (``.llvm_stackmaps``,
  ``.mtmap`` version 2, ``MAPPEDTRACE_MTMAP_VERSION=2``) with the same code;
* the two sections agree: ``.mtmap``'s per-function call-site and loop-point
  counts equal the records found in the stack maps;
* every call-site PC follows a call instruction, every record lies inside its
  function, every type id an entry, slot or global names is in the type table;
* ``mappedtrace maps --json`` describes the same binary.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mapgen as mg
from conftest import build_sample, need
from mappedtrace.formats import elf, mtmap, mtstack, stackmap
from mappedtrace.formats.maps import CALLEE_SAVED_DWARF, BinaryMaps, _relative_entry

REPO = Path(__file__).resolve().parent.parent
BUILDS = [("leaky.c", "-O0"), ("leaky.c", "-O2"), ("diff_lists.c", "-O2"), ("diff_tree.c", "-O0"),
          ("rust/leaks.rs", "-O0"), ("rust/leaks.rs", "-O2")]


#: the reference build: LLVM's own stack map table beside .mtstack, .mtmap version 2
REFERENCE_ENV = {"MAPPEDTRACE_LLVM_STACKMAPS": "1", "MAPPEDTRACE_MTMAP_VERSION": "2"}


@pytest.fixture(scope="module", params=BUILDS, ids=[f"{s}{o}" for s, o in BUILDS])
def builds(request, tmp_path_factory):
    src, opt = request.param
    d = tmp_path_factory.mktemp("real")
    stem = Path(src).stem + opt.lstrip("-")
    return (build_sample(REPO / "samples" / src, opt, d / stem),
            build_sample(REPO / "samples" / src, opt, d / (stem + "_ref"), REFERENCE_ENV))


@pytest.fixture
def binary(builds):
    return builds[0]


@pytest.fixture
def reference(builds):
    return builds[1]


def test_default_build_has_compact_maps_only(binary, reference):
    assert elf.section(binary, ".mtstack") is not None and elf.section(binary, ".llvm_stackmaps") is None
    assert elf.section(reference, ".llvm_stackmaps") is not None
    assert [c.section_offset for c in mtmap.decode(elf.section_bytes(binary, ".mtmap"), binary)]
    assert struct_version(binary) == {4} and struct_version(reference) == {2}
    assert elf.section(binary, ".mttypes") is not None and elf.section(reference, ".mttypes") is None
    # data only: the code is the same size, function by function
    fs = {s.name: s.size for s in elf.symbols(binary) if s.type == "func"}
    fr = {s.name: s.size for s in elf.symbols(reference) if s.type == "func"}
    assert fs == fr
    assert elf.section(binary, ".text").size == elf.section(reference, ".text").size


def struct_version(path: str) -> set[int]:
    data = elf.section_bytes(path, ".mtmap")
    return {int.from_bytes(data[c.section_offset + 4:c.section_offset + 6], "little")
            for c in mtmap.decode(data, path)}


def _records(tables) -> list[tuple]:
    return [(r.id, r.pc, r.instruction_offset, r.flags, r.function_address, tuple(r.locations),
             tuple(r.live_outs), tuple(sorted(r.constant_indices.items()))) for t in tables for r in t.records]


def test_compact_records_equal_llvm_tables(reference):
    """The same build's .mtstack and .llvm_stackmaps say the same, record by record."""
    ms, sm = elf.section(reference, ".mtstack"), elf.section(reference, ".llvm_stackmaps")
    compact = mtstack.decode(ms.data, f"{reference}: .mtstack", ms.addr)
    llvm = stackmap.decode(sm.data, f"{reference}: .llvm_stackmaps", sm.addr, _relative_entry)
    assert len(compact) == len([t for t in llvm if t.records]) > 0
    a, b = _records(compact), _records(llvm)
    assert len(a) == len(b) > 0
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"record {i}"
    assert [(f.resolved, f.stack_size, f.record_count) for t in compact for f in t.functions] == \
        [(f.resolved, f.stack_size, f.record_count) for t in llvm for f in t.functions]
    assert [t.constants for t in compact] == [t.constants for t in llvm if t.records]
    # what the records cost: the compact form is several times smaller
    assert ms.size * 4 < sm.size, (ms.size, sm.size)


def _by_function(m: BinaryMaps, path: str) -> dict:
    """Records keyed by (function symbol, offset in it): the two builds' code is
    the same, its addresses may differ."""
    out = {}
    for pc, r in m.records.items():
        f = m.function_at(r.function_address)
        out[(f.name, pc - r.function_address)] = (r.kind, r.entries)
    return out


def test_default_build_decodes_like_reference(binary, reference):
    a, b = BinaryMaps.load(binary), BinaryMaps.load(reference)
    assert _by_function(a, binary) == _by_function(b, reference)
    assert a.types == b.types
    key = lambda f: (f.name, f.size, f.status, f.reason, f.n_callsites, f.n_loop_points,  # noqa: E731
                     f.n_unmapped_calls, f.n_tail_calls, [(x.name, x.type_id, x.size) for x in f.allocas])
    assert sorted(map(key, a.functions)) == sorted(map(key, b.functions))
    gkey = lambda g: (g.name, g.size, g.type_id, g.tls, g.constant)  # noqa: E731
    assert sorted(map(gkey, a.globals)) == sorted(map(gkey, b.globals))
    for m, path in ((a, binary), (b, reference)):
        for f in m.functions:
            if f.address and f.status != "skipped":
                s = elf.symbol_at(path, f.address)
                assert s is not None and s.addr == f.address, f.name
    assert a.section_sizes[".mtmap"] < b.section_sizes[".mtmap"]


def test_every_table_agrees_with_readobj(reference, tmp_path):
    need("llvm-readobj-22", "llvm-objcopy-22")
    binary = reference
    data = elf.section_bytes(binary, ".llvm_stackmaps")
    assert data, "no .llvm_stackmaps"
    tables = stackmap.decode(data, f"{binary}: .llvm_stackmaps")
    n = 0
    for i, t in enumerate(tables):
        want = mg.readobj_table(data[t.section_offset:t.section_offset + t.size], tmp_path, f"t{i}")
        got = mg.decoded_table_as_readobj(t)
        got["records"] = [(a, b, [(k, s, r, v & 0xFFFFFFFF if k == "Constant" else v) for (k, s, r, v) in l], lo)
                          for (a, b, l, lo) in got["records"]]
        assert got == want, f"table {i} at {t.section_offset:#x}"
        n += len(t.records)
    assert n > 0
    # The tables cover the section but for zero padding between them.
    covered = sum(t.size for t in tables)
    assert covered <= len(data) and not any(
        data[a.section_offset + a.size:b.section_offset] for a, b in zip(tables, tables[1:]))


def test_sections_agree_and_records_are_sane(binary):
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    m = BinaryMaps.load(binary)
    assert m.has_maps and m.records
    assert not [w for w in m.warnings if "caller-saved" in w], m.warnings
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    for f in m.functions:
        if not f.address:
            continue
        pcs = m.map_point_pcs(f.address)
        kinds = [m.records[p].kind for p in pcs]
        assert (kinds.count("call"), kinds.count("loop")) == (f.n_callsites, f.n_loop_points), f.name
        assert f.size > 0, f"{f.name}: no symbol size"
        code = _code(binary, f.address, f.size)
        ends = {i.address + i.size: i for i in md.disasm(code, f.address)}
        for pc in pcs:
            assert f.address < pc <= f.address + f.size, f"{f.name}: record {pc:#x} outside the function"
            assert m.function_at(pc - 1) is f
            if m.records[pc].kind == "call":
                ins = ends.get(pc)
                assert ins is not None and ins.mnemonic.startswith("call"), f"{f.name}: {pc:#x} is not a return address"
    for r in m.records.values():
        for e in r.entries:
            loc = e.location
            assert loc.kind in ("Register", "Direct", "Indirect", "Constant", "ConstantIndex")
            if loc.kind in ("Direct", "Indirect"):
                assert loc.dwarf_reg in (6, 7), f"{r.pc:#x}: frame location based on DWARF reg {loc.dwarf_reg}"
            if r.kind == "call" and loc.kind == "Register":
                assert loc.dwarf_reg in CALLEE_SAVED_DWARF
            assert e.type_id >> 62 == 0
    # (Type ids may be absent from the table: a type only declared, never
    # defined, in every module gets no entry; FORMAT.md §3.)
    assert m.types
    for t in m.types.values():
        for s in t.slots:
            assert s.count >= 1 and (s.count == 1 or s.stride >= 8), t.name
            assert s.offset + (s.count - 1) * s.stride + 8 <= max(t.size, 8) or t.kind == "unknown", t.name
    segs = elf.load_segments(binary)
    for g in m.globals:
        sym = elf.symbol(binary, g.name)
        if sym is not None:
            assert g.address == sym.addr and (sym.type == "tls") == g.tls, g.name
        else:   # a private global (e.g. Rust's anon.*): no symbol, but a relocated address
            assert not g.tls, f"thread-local {g.name} has no symbol: it cannot be found"
            assert any(v <= g.address and g.address + g.size <= v + n for v, n, _o, _f in segs), g.name


def test_cli_json_matches(binary):
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "maps", "--json", binary],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    m = BinaryMaps.load(binary)
    assert d["summary"]["call_sites"] + d["summary"]["loop_points"] == len(m.records)
    assert d["section_sizes"][".mtstack"] == len(elf.section_bytes(binary, ".mtstack")) > 0
    assert {f["name"] for f in d["functions"]} == {f.name for f in m.functions}


def _code(exe: str, start: int, size: int) -> bytes:
    code = elf.code_at(exe, start, size)
    assert code is not None and len(code) == size, f"{start:#x}+{size} is not in a loaded segment of {exe}"
    return code
