"""The StackMap v3 decoder against LLVM's own output and against generated,
then corrupted, tables.

Oracles: ``llvm-readobj-22 --stackmap`` on objects llc-22 builds from the
hand-written IR in tests/stackmap_inputs/, and the independent encoder in
tests/mapgen.py.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

import mapgen as mg
from mappedtrace.errors import BadData, UnsupportedVersion
from mappedtrace.formats import elf, stackmap
from mappedtrace.formats.maps import BinaryMaps, decode_id

INPUTS = Path(__file__).parent / "stackmap_inputs"
WHERE = "gen: .llvm_stackmaps"


def _need(*tools: str) -> list[str]:
    paths = [mg.tool(t) for t in tools]
    if not all(paths):
        pytest.skip(f"needs {', '.join(tools)}")
    return paths


def _norm(d: dict) -> dict:
    # llvm-readobj prints a small constant as u32; the decoder keeps it signed.
    recs = [(i, o, [(k, s, r, v & 0xFFFFFFFF if k == "Constant" else v) for (k, s, r, v) in locs], lo)
            for (i, o, locs, lo) in d["records"]]
    return {**d, "records": recs}


# ------------------------------------------------------------ LLVM's output

@pytest.mark.parametrize("src,opts", [
    ("statepoint_basic.ll", ["-O0"]),
    ("statepoint_basic.ll", ["-O2"]),
    ("patchpoint_consts.ll", ["-O2", "-enable-patchpoint-liveness=false"]),
])
def test_llc_object_agrees_with_readobj(tmp_path, src, opts):
    llc, readobj = _need("llc-22", "llvm-readobj-22")
    obj = tmp_path / "x.o"
    mg.run([llc, *opts, "-filetype=obj", str(INPUTS / src), "-o", str(obj)])
    data = elf.section_bytes(str(obj), ".llvm_stackmaps")
    assert data
    tables = stackmap.decode(data, f"{obj}: .llvm_stackmaps")
    assert len(tables) == 1
    want = mg.parse_readobj_stackmap(mg.run([readobj, "--stackmap", str(obj)]).stdout)
    got = _norm(mg.decoded_table_as_readobj(tables[0]))
    assert want["records"], "readobj printed no records: the oracle is broken"
    assert got == want


def test_statepoint_layout_from_llc(tmp_path):
    """The MappedTrace IDs and descriptors in statepoint_basic.ll decode to the
    entries the IR asked for (constants folded by LLVM as Constant or ConstantIndex)."""
    llc, clang = _need("llc-22", "clang-22")
    obj = tmp_path / "sb.o"
    mg.run([llc, "-O2", "-filetype=obj", str(INPUTS / "statepoint_basic.ll"), "-o", str(obj)])
    stub = tmp_path / "stub.c"
    stub.write_text("void consume(void *p) { (void)p; }\n")
    exe = tmp_path / "sb"
    mg.run([clang, "-no-pie", "-nostdlib", "-Wl,-e,two_calls", "-o", str(exe), str(obj), str(stub)])
    m = BinaryMaps.load(str(exe))
    two = elf.symbol_address(str(exe), "two_calls")
    loop = elf.symbol_address(str(exe), "loop")
    assert m.foreign_records == 1                          # the stackmap with ID 42
    calls = [m.records[pc] for pc in m.map_point_pcs(two)]
    assert [r.kind for r in calls] == ["call", "call"]
    e = calls[0].entries
    assert [(x.role, x.type_id) for x in e] == [("value", 0x123456789ABCDEF0), ("value", 0), ("slot", 1)]
    assert e[2].location.kind == "Direct" and e[2].location.dwarf_reg == 7
    assert [(x.role, x.type_id) for x in calls[1].entries] == [("value", 7)]
    # Each call record's PC is a return address: the byte before is the end of a call.
    lp = m.map_point_pcs(loop)
    assert len(lp) == 1 and m.records[lp[0]].kind == "loop"
    assert m.function_at(lp[0]).name == "loop"
    assert m.function_at(calls[0].pc).name == "two_calls"
    assert m.function_at(calls[0].pc).n_callsites == 2


def test_linked_sequence_of_tables_each_agrees_with_readobj(tmp_path):
    """A linked section holds one table per object; readobj reads only the
    first, so each decoded table is wrapped alone and checked."""
    llc, clang, _ = _need("llc-22", "clang-22", "llvm-objcopy-22")
    objs = []
    for i, (src, opts) in enumerate([("statepoint_basic.ll", ["-O2"]), ("statepoint_basic.ll", ["-O0"]),
                                     ("patchpoint_consts.ll", ["-O2", "-enable-patchpoint-liveness=false"])]):
        o = tmp_path / f"o{i}.o"
        mg.run([llc, *opts, "-filetype=obj", str(INPUTS / src), "-o", str(o)])
        if i == 1:   # same symbols twice: rename the second copy
            mg.run([mg.tool("llvm-objcopy-22"), "--prefix-symbols=b_", str(o)])
        objs.append(str(o))
    stub = tmp_path / "stub.c"
    stub.write_text("void consume(void *p){(void)p;} void b_consume(void *p){(void)p;} "
                    "void use(void*a,void*b,long n){(void)a;(void)b;(void)n;} "
                    "void b_llvm_experimental_dummy(void){}\n")
    exe = tmp_path / "multi"
    mg.run([clang, "-no-pie", "-nostdlib", "-Wl,-e,two_calls", "-o", str(exe), *objs, str(stub)])
    data = elf.section_bytes(str(exe), ".llvm_stackmaps")
    tables = stackmap.decode(data, "multi: .llvm_stackmaps")
    assert len(tables) == 3
    for i, t in enumerate(tables):
        want = mg.readobj_table(data[t.section_offset:t.section_offset + t.size], tmp_path, f"t{i}")
        assert _norm(mg.decoded_table_as_readobj(t)) == want
        assert all(f.address for f in t.functions)        # relocated by the linker
    m = BinaryMaps.load(str(exe))
    assert sum(1 for r in m.records.values() if r.kind == "call") == 4
    assert len(m.records) == 6


# ------------------------------------------------------ generated tables

def _sample_tables() -> tuple[bytes, list[tuple[list[mg.Fn], list[int]]]]:
    c1: list[int] = []
    f1 = mg.Fn(0x401000, 40, [
        mg.Rec(mg.mt_id("call", 1), 0x10, mg.statepoint_locs(
            [(mg.descriptor("value", 0x2222_3333_4444_5555), ("Indirect", 8, 7, 16)),
             (mg.descriptor("value", 5), ("Register", 8, 3, 0)),
             (mg.descriptor("slot", 0x1111_0000_0000_0001), ("Direct", 8, 6, -24))], c1),
            live_outs=[(3, 8), (12, 8), (15, 8)]),
        mg.Rec(mg.mt_id("loop", 2), 0x30, [mg.const_loc(mg.descriptor("value", 9), c1), ("Register", 8, 12, 0)]),
    ])
    f2 = mg.Fn(0x402000, 0xFFFF_FFFF_FFFF_FFFF, [mg.Rec(42, 4, [("Register", 8, 5, 0)], live_outs=[(0, 8)])])
    t1 = ([f1, f2], c1)
    c2: list[int] = []
    t2 = ([mg.Fn(0x403000, 8, [mg.Rec(mg.mt_id("call", 3), 5, mg.statepoint_locs([], c2))])], c2)
    blob = mg.concat([mg.encode_table(*t1), mg.encode_table(*t2)], extra_pad=1)
    return blob, [t1, t2]


def test_generated_round_trip_and_readobj(tmp_path):
    blob, spec = _sample_tables()
    tables = stackmap.decode(blob, WHERE)
    assert len(tables) == 2
    r0 = tables[0].records[0]
    assert r0.pc == 0x401010 and [(l.dwarf_reg, l.size) for l in r0.live_outs] == [(3, 8), (12, 8), (15, 8)]
    assert r0.locations[3].kind == "ConstantIndex" and r0.locations[3].offset == 0x2222_3333_4444_5555
    assert tables[0].functions[1].stack_size == stackmap.UNKNOWN_STACK_SIZE
    assert tables[1].section_offset % 8 == 0 and tables[1].section_offset > tables[0].size
    assert tables[1].records[0].function_address == 0x403000
    for (fns, consts), t in zip(spec, tables):
        assert [f.address for f in t.functions] == [f.address for f in fns]
        assert t.constants == consts
    if mg.tool("llvm-readobj-22") and mg.tool("llvm-objcopy-22"):
        for i, t in enumerate(tables):
            want = mg.readobj_table(blob[t.section_offset:t.section_offset + t.size], tmp_path, f"g{i}")
            assert _norm(mg.decoded_table_as_readobj(t)) == want


def test_relative_function_entries():
    """FORMAT.md §1 "Addresses": a function entry whose MappedTrace records
    carry ID bit 39 holds ``address - table address``; one without keeps its
    absolute address, also in the same section; foreign records never make an
    entry relative."""
    from mappedtrace.formats.maps import _relative_entry
    c: list[int] = []
    rel = mg.Fn(0x1000, 16, [mg.Rec(mg.mt_id("call", 1, relative_fn=True), 0x10, mg.statepoint_locs([], c)),
                             mg.Rec(mg.mt_id("call", 2, relative_fn=True), 0x20, mg.statepoint_locs([], c))])
    below = mg.Fn((-0x800) & (2**64 - 1), 16, [mg.Rec(mg.mt_id("loop", 3, relative_fn=True), 4, [])])
    absolute = mg.Fn(0x402000, 16, [mg.Rec(mg.mt_id("call", 4), 8, mg.statepoint_locs([], c))])
    foreign = mg.Fn(0x403000, 16, [mg.Rec(42 | (1 << 39), 8, [])])
    t1 = mg.encode_table([rel, below, absolute], c)
    c2: list[int] = []
    t2 = mg.encode_table([foreign, mg.Fn(0x2000, 8, [mg.Rec(mg.mt_id("call", 5, True), 1,
                                                             mg.statepoint_locs([], c2))])], c2)
    blob = mg.concat([t1, t2])
    vaddr = 0x5000
    a, b = stackmap.decode(blob, WHERE, vaddr, _relative_entry)
    assert [(f.relative, f.resolved) for f in a.functions] == [
        (True, vaddr + 0x1000), (True, vaddr - 0x800), (False, 0x402000)]
    assert [f.address for f in a.functions] == [0x1000, (-0x800) & (2**64 - 1), 0x402000]   # as written
    assert [r.pc for r in a.records] == [vaddr + 0x1010, vaddr + 0x1020, vaddr - 0x800 + 4, 0x402008]
    tb = vaddr + b.section_offset
    assert [(f.relative, f.resolved) for f in b.functions] == [(False, 0x403000), (True, tb + 0x2000)]
    assert b.records[1].pc == tb + 0x2001
    # without the predicate (LLVM's own format) every entry is absolute
    assert [r.pc for r in stackmap.decode(blob, WHERE)[0].records][:2] == [0x1010, 0x1020]
    assert decode_id(mg.mt_id("call", 1, relative_fn=True)) == "call"


def test_ids():
    assert decode_id(mg.mt_id("call", 7)) == "call"
    assert decode_id(mg.mt_id("loop", 7)) == "loop"
    assert decode_id(42) is None
    assert decode_id((0x4D54 << 48) | (9 << 40)) is None


def test_empty_and_padding_only():
    assert stackmap.decode(b"", WHERE) == []
    assert stackmap.decode(bytes(64), WHERE) == []


def test_truncated_at_every_offset():
    blob, _ = _sample_tables()
    first = stackmap.decode(blob, WHERE)[0]
    end1 = first.size
    n_err = 0
    for cut in range(1, len(blob)):
        part = blob[:cut]
        try:
            tables = stackmap.decode(part, WHERE)
        except BadData as e:
            assert e.where == WHERE and e.offset is not None and 0 <= e.offset <= cut
            assert "\n" not in str(e)
            n_err += 1
            continue
        # Only a cut right after a whole table (plus zero padding) decodes.
        assert len(tables) == 1 and end1 <= cut and not any(part[end1:])
    assert n_err >= len(blob) - 1 - 16


def _corrupt(blob: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def test_version_7():
    blob, _ = _sample_tables()
    with pytest.raises(UnsupportedVersion) as ei:
        stackmap.decode(_corrupt(blob, 0, "<B", 7), WHERE)
    assert "version 7" in str(ei.value) and "3" in str(ei.value) and ei.value.offset == 0
    # The second table's version is checked where it is.
    t0 = stackmap.decode(blob, WHERE)
    with pytest.raises(UnsupportedVersion) as ei:
        stackmap.decode(_corrupt(blob, t0[1].section_offset, "<B", 2), WHERE)
    assert ei.value.offset == t0[1].section_offset


@pytest.mark.parametrize("field_off,what", [(4, "function"), (8, "constant"), (12, "record")])
@pytest.mark.parametrize("value", [0xFFFF_FFFF, 0x1000_0000, 1000])
def test_counts_too_large(field_off, what, value):
    blob, _ = _sample_tables()
    with pytest.raises(BadData) as ei:
        stackmap.decode(_corrupt(blob, field_off, "<I", value), WHERE)
    assert str(value) in str(ei.value) or what in str(ei.value)


def test_location_and_liveout_counts_too_large():
    blob, _ = _sample_tables()
    t = stackmap.decode(blob, WHERE)[0]
    r0 = t.records[0].section_offset
    with pytest.raises(BadData, match="location count 65535"):
        stackmap.decode(_corrupt(blob, r0 + 14, "<H", 0xFFFF), WHERE)
    nloc = len(t.records[0].locations)
    lo = r0 + 16 + nloc * 12
    lo += (-lo) % 8
    with pytest.raises(BadData, match="live-out count 65535"):
        stackmap.decode(_corrupt(blob, lo + 2, "<H", 0xFFFF), WHERE)


def test_bad_location_kind_and_constant_index():
    blob, _ = _sample_tables()
    t = stackmap.decode(blob, WHERE)[0]
    r0 = t.records[0].section_offset
    with pytest.raises(BadData, match="kind 9") as ei:
        stackmap.decode(_corrupt(blob, r0 + 16, "<B", 9), WHERE)
    assert ei.value.offset == r0 + 16
    ci = next(i for i, l in enumerate(t.records[0].locations) if l.kind == "ConstantIndex")
    with pytest.raises(BadData, match="constant #77"):
        stackmap.decode(_corrupt(blob, r0 + 16 + ci * 12 + 8, "<i", 77), WHERE)


def test_record_count_mismatch_and_misaligned_table():
    blob, _ = _sample_tables()
    # Function 0 claims one more record than the header says.
    with pytest.raises(BadData, match="add up to"):
        stackmap.decode(_corrupt(blob, 16 + 16, "<Q", 3), WHERE)
    t0 = stackmap.decode(blob, WHERE)
    b = bytearray(blob)
    b[t0[0].size + 3] = 1                                   # garbage in the padding
    with pytest.raises(BadData, match="not 8-byte aligned"):
        stackmap.decode(bytes(b), WHERE)


def test_reserved_header_fields():
    blob, _ = _sample_tables()
    with pytest.raises(BadData, match="reserved"):
        stackmap.decode(_corrupt(blob, 2, "<H", 5), WHERE)


def test_random_corruption_gives_only_bad_data():
    """Flip bytes all over a valid blob: the decoder either succeeds or raises
    BadData (never IndexError, struct.error, a hang)."""
    import random
    blob, _ = _sample_tables()
    rng = random.Random(1234)
    for _ in range(3000):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        try:
            stackmap.decode(bytes(b), WHERE)
        except BadData:
            pass


# ------------------------------------------------- operands → MapEntry

def _record(kind: str, locs) -> stackmap.StackMapRecord:
    c: list[int] = []
    blob = mg.encode_table([mg.Fn(0x1000, 8, [mg.Rec(mg.mt_id(kind, 1), 4, locs(c))])], c)
    return stackmap.decode(blob, WHERE)[0].records[0]


def test_entries_from_statepoint_operands():
    from mappedtrace.formats.maps import _Warnings, decode_entries
    big = 0x2ABC_DEF0_1234_5678
    rec = _record("call", lambda c: mg.statepoint_locs(
        [(mg.descriptor("value", big), ("Register", 8, 3, 0)),          # rbx: callee-saved
         (mg.descriptor("slot", 7), ("Direct", 8, 7, 32)),
         (mg.descriptor("value", 0), ("Constant", 8, 0, 0)),            # null: dropped
         (mg.descriptor("reserved3", 1), ("Indirect", 8, 7, 0)),        # reserved role: warned
         (mg.descriptor("value", 5), ("Register", 8, 0, 0)),            # rax at a call: warned, dropped
         (mg.descriptor("slot", 5), ("Constant", 8, 0, 8)),             # slot as a constant: warned
         (mg.descriptor("slot", 6), ("Register", 8, 12, 0)),            # slot address in r12: kept
         (mg.descriptor("derived", 0), ("Constant", 8, 0, 24)),         # rbx + 24
         (mg.descriptor("derived", 0), ("Constant", 8, 0, -8)),         # rbx - 8
         (mg.descriptor("derived", 2), ("Constant", 8, 0, 16)),         # its base was null: dropped
         (mg.descriptor("derived", 4), ("Constant", 8, 0, 16)),         # its base was dropped: dropped
         (mg.descriptor("derived", 13), ("Constant", 8, 0, 16)),        # base is a later pair: warned
         (mg.descriptor("derived", 0), ("Register", 8, 3, 0))],         # offset not a constant: warned
        c, gc=[("Indirect", 8, 7, 8), ("Indirect", 8, 7, 8)]))          # GC pairs: ignored silently
    w = _Warnings()
    es = decode_entries(rec, "call", WHERE, w)
    assert [(e.role, e.type_id, e.location.kind, e.offset) for e in es] == [
        ("value", big, "Register", 0), ("slot", 7, "Direct", 0), ("slot", 6, "Register", 0),
        ("derived", 0, "Register", 24), ("derived", 0, "Register", -8)]
    assert es[3].location == es[0].location
    lines = w.lines()
    assert len(lines) == 4 and not any("GC" in l for l in lines)
    assert any("reserved role 3" in l for l in lines) and any("caller-saved" in l for l in lines)
    assert any("derived pointer" in l and "(and 1 more" in l for l in lines)


def test_entries_malformed_operands():
    from mappedtrace.formats.maps import _Warnings, decode_entries
    rec = _record("call", lambda c: [("Constant", 8, 0, 0), ("Register", 8, 3, 0)])
    with pytest.raises(BadData, match="statepoint header"):
        decode_entries(rec, "call", WHERE)
    rec = _record("call", lambda c: [("Constant", 8, 0, 0)] * 2 + [("Constant", 8, 0, 9)])
    with pytest.raises(BadData, match="9 deopt operands"):
        decode_entries(rec, "call", WHERE)
    rec = _record("loop", lambda c: [("Register", 8, 3, 0), ("Register", 8, 3, 0)])
    with pytest.raises(BadData, match="constant descriptor"):
        decode_entries(rec, "loop", WHERE)
    rec = _record("loop", lambda c: [mg.const_loc(mg.descriptor("value", 3), c), ("Register", 8, 0, 0),
                                     ("Constant", 8, 0, 1)])
    w = _Warnings()
    es = decode_entries(rec, "loop", WHERE, w)          # rax is fine at a loop map point
    assert [e.location.dwarf_reg for e in es] == [0] and any("odd number" in l for l in w.lines())
