"""The decoders on real binaries built by ``mappedtrace cc`` / ``mappedtrace rustc``.

* every stack map table agrees with ``llvm-readobj-22 --stackmap`` record by
  record (each table is checked alone: readobj reads only the first);
* the two sections agree: ``.mtmap``'s per-function call-site and loop-point
  counts equal the records found in ``.llvm_stackmaps``;
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
from mappedtrace.formats import elf, stackmap
from mappedtrace.formats.maps import CALLEE_SAVED_DWARF, BinaryMaps

REPO = Path(__file__).resolve().parent.parent
BUILDS = [("leaky.c", "-O0"), ("leaky.c", "-O2"), ("diff_lists.c", "-O2"), ("diff_tree.c", "-O0"),
          ("rust/leaks.rs", "-O0"), ("rust/leaks.rs", "-O2")]


@pytest.fixture(scope="module", params=BUILDS, ids=[f"{s}{o}" for s, o in BUILDS])
def binary(request, tmp_path_factory):
    src, opt = request.param
    d = tmp_path_factory.mktemp("real")
    return build_sample(REPO / "samples" / src, opt, d / (Path(src).stem + opt.lstrip("-")))


def test_every_table_agrees_with_readobj(binary, tmp_path):
    need("llvm-readobj-22", "llvm-objcopy-22")
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
    assert d["section_sizes"][".llvm_stackmaps"] == len(elf.section_bytes(binary, ".llvm_stackmaps"))
    assert {f["name"] for f in d["functions"]} == {f.name for f in m.functions}


def _code(exe: str, start: int, size: int) -> bytes:
    code = elf.code_at(exe, start, size)
    assert code is not None and len(code) == size, f"{start:#x}+{size} is not in a loaded segment of {exe}"
    return code
