"""The ``.mtmap`` decoder on generated chunks (tests/mapgen.py writes them from
llvm_pass/FORMAT.md), then on truncated and corrupted ones."""
from __future__ import annotations

import random
import struct

import pytest

import mapgen as mg
from mappedtrace.errors import BadData, UnsupportedVersion
from mappedtrace.formats import mtmap
from mappedtrace.formats.maps import (SLOT_CONSERVATIVE, SLOT_FUNCTION, SLOT_UNTYPED, TYPE_FLEX,
                                      TYPE_HAS_UNION, TYPE_RUST)

WHERE = "gen: .mtmap"
NODE = 0x1234_5678_9ABC_DEF0 & ((1 << 62) - 1)
TREE = 0x0FED_CBA9_8765_4321
BUF = 0x0000_0000_0000_0077


def _types() -> list[mg.MType]:
    return [
        mg.MType(NODE, "struct node", 16, slots=[mg.MSlot(8, NODE)]),
        mg.MType(TREE, "struct tree", 32, slots=[mg.MSlot(0, TREE, 3, 8)]),
        mg.MType(BUF, "struct buf", 24, flags=TYPE_FLEX | TYPE_HAS_UNION,
                 slots=[mg.MSlot(0, 0, 1, 0, SLOT_UNTYPED), mg.MSlot(8, 0, 1, 0, SLOT_FUNCTION | SLOT_CONSERVATIVE)],
                 elem_type=NODE, flex_offset=16),
        mg.MType(5, "long", 8, kind=1),
    ]


def _chunk1() -> bytes:
    return mg.encode_chunk(
        "leaky.c", _types(),
        [mg.MFunc("main", 0x401100, 0, "", 3, 1, 0, [mg.MAlloca("key", 5, 4), mg.MAlloca("arr", NODE, 160)]),
         mg.MFunc("helper[1]", 0x401200, 2, "", 1, 0, 2),
         mg.MFunc("asm_thing", 0, 1, "inline asm")],
        [mg.MGlobal("kept_list", 0x404000, 8, NODE), mg.MGlobal("kept_tree", 0, 8, TREE, flags=1),
         mg.MGlobal("table", 0x404100, 64, NODE, flags=2)],
        flags=2)


def _chunk2(conflict: bool = False) -> bytes:
    node = mg.MType(NODE, "struct node", 24 if conflict else 16, slots=[mg.MSlot(8, NODE)])
    return mg.encode_chunk("other.rs", [node, mg.MType(99, "alloc::vec::Vec<u8>", 24, flags=TYPE_RUST | 4)],
                           [mg.MFunc("rs_main", 0x402000, 0, "", 2, 0, 0)], flags=1)


def test_round_trip():
    blob = mg.concat([_chunk1(), _chunk2()], extra_pad=2)
    warns: list[str] = []
    chunks = mtmap.decode(blob, WHERE, warns)
    assert warns == []
    assert [c.module_name for c in chunks] == ["leaky.c", "other.rs"]
    assert not chunks[0].rust and chunks[1].rust and chunks[0].flags & mtmap.CHUNK_O0
    types = {t.id: t for t in chunks[0].types}
    assert types[NODE].name == "struct node" and types[NODE].kind == "struct"
    assert types[NODE].slots == [mtmap.Slot(8, NODE, 1, 0, 0)]
    assert types[TREE].slots[0].count == 3 and types[TREE].slots[0].stride == 8
    b = types[BUF]
    assert b.flags == TYPE_FLEX | TYPE_HAS_UNION and b.elem_type == NODE and b.flex_offset == 16
    assert b.slots[1].flags == SLOT_FUNCTION | SLOT_CONSERVATIVE
    assert types[5].kind == "scalar"
    f = chunks[0].functions
    assert [x.name for x in f] == ["main", "helper[1]", "asm_thing"]
    assert [x.status for x in f] == ["instrumented", "partial", "skipped"]
    assert f[2].reason == "inline asm" and f[2].address == 0
    assert (f[0].n_callsites, f[0].n_loop_points, f[1].n_unmapped_calls) == (3, 1, 2)
    assert [(a.name, a.type_id, a.size) for a in f[0].allocas] == [("key", 5, 4), ("arr", NODE, 160)]
    g = chunks[0].globals
    assert [(x.name, x.address, x.tls, x.constant) for x in g] == [
        ("kept_list", 0x404000, False, False), ("kept_tree", 0, True, False), ("table", 0x404100, False, True)]
    merged = mtmap.merge_types(chunks, warns)
    assert len(merged) == 5 and warns == []


def test_larger_header_is_skipped():
    blob = mg.encode_chunk("m", _types(), header_size=72)
    (c,) = mtmap.decode(blob, WHERE)
    assert len(c.types) == 4 and c.module_name == "m"


def test_type_conflict_warns_first_wins():
    chunks = mtmap.decode(mg.concat([_chunk1(), _chunk2(conflict=True)]), WHERE)
    warns: list[str] = []
    merged = mtmap.merge_types(chunks, warns, WHERE)
    assert merged[NODE].size == 16
    assert len(warns) == 1 and f"{NODE:#x}" in warns[0] and "other.rs" in warns[0]


def test_unknown_kind_and_status_warn():
    blob = mg.encode_chunk("m", [mg.MType(7, "weird", 8, kind=12)], [mg.MFunc("f", 0x1000, status=9)])
    warns: list[str] = []
    (c,) = mtmap.decode(blob, WHERE, warns)
    assert c.types[0].kind == "unknown" and c.functions[0].status == "skipped"
    assert len(warns) == 2 and all(w.startswith(WHERE + "+0x") for w in warns)


def _hdr(blob: bytes, field: int, value: int, fmt: str = "<I") -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, field, value)
    return bytes(b)


def test_bad_magic():
    with pytest.raises(BadData, match="magic") as ei:
        mtmap.decode(mg.encode_chunk("m", magic=b"MTMQ"), WHERE)
    assert ei.value.offset == 0 and str(ei.value).startswith(WHERE + "+0x0:")


def test_version_7():
    with pytest.raises(UnsupportedVersion) as ei:
        mtmap.decode(mg.encode_chunk("m", version=7), WHERE)
    msg = str(ei.value)
    assert "version 7" in msg and "versions 1-4" in msg and ei.value.offset == 4


def test_version_2_addresses_are_relative_to_their_chunk():
    """FORMAT.md "Addresses": a version 2 chunk holds ``address - chunk
    address`` unless the entry says ABSOLUTE; version 1 stays absolute, and
    both come out as link-time addresses given the section's address."""
    old = mg.encode_chunk("old.c", functions=[mg.MFunc("f1", 0x401000)],
                          globals_=[mg.MGlobal("g1", 0x404000, 8, 0)])
    new = mg.encode_chunk("new.c", version=2,
                          functions=[mg.MFunc("rel", 0x1000), mg.MFunc("gone", 0),
                                     mg.MFunc("abs", 0x402000, flags=mtmap.FUNCTION_ABSOLUTE),
                                     mg.MFunc("below", (-0x2000) & (2**64 - 1))],
                          globals_=[mg.MGlobal("grel", 0x30, 8, 0),
                                    mg.MGlobal("gabs", 0x405000, 8, 0, flags=mtmap.GLOBAL_ABSOLUTE),
                                    mg.MGlobal("tls", 0, 8, 0, flags=mtmap.GLOBAL_TLS)])
    vaddr = 0x3000
    c1, c2 = mtmap.decode(mg.concat([old, new]), WHERE, [], vaddr)
    assert [(f.name, f.address) for f in c1.functions] == [("f1", 0x401000)]
    assert [(g.name, g.address) for g in c1.globals] == [("g1", 0x404000)]
    base = vaddr + c2.section_offset
    assert c2.section_offset == len(old)
    assert [(f.name, f.address) for f in c2.functions] == [
        ("rel", base + 0x1000), ("gone", 0), ("abs", 0x402000), ("below", base - 0x2000)]
    assert [(g.name, g.address) for g in c2.globals] == [("grel", base + 0x30), ("gabs", 0x405000), ("tls", 0)]


def test_version_2_fields():
    """Version 2 adds named members, base classes and template arguments after
    a type's slots; version 1's reserved word stays 0 and gives none."""
    t = mg.MType(0x10, "app::Vec<app::Node>", 24, 3, slots=[mg.MSlot(0, 0x20)],
                 fields=[(0, 0x21, "ptr", 0), (8, 0x22, "len", 0), (0, 0x20, "T", mtmap.FIELD_TEMPLATE_ARG),
                         (0, 0x23, "", mtmap.FIELD_BASE)])
    after = mg.MType(0x11, "after", 8, 1)
    [ch] = mtmap.decode(mg.encode_chunk("m", [t, after], version=2), WHERE)
    got = ch.types[0]
    assert [(f.offset, f.name) for f in got.members] == [(0, "ptr"), (0, ""), (8, "len")]
    assert [(f.name, f.type_id) for f in got.template_args] == [("T", 0x20)]
    assert ch.types[1].name == "after" and ch.types[1].fields == []
    [ch1] = mtmap.decode(mg.encode_chunk("m", [t, after], version=1), WHERE)
    assert ch1.types[0].fields == [] and ch1.types[1].name == "after"
    bad = bytearray(mg.encode_chunk("m", [t], version=2))
    struct.pack_into("<I", bad, 56 + 28, 1000)          # n_fields past the chunk's end
    with pytest.raises(BadData, match="field"):
        mtmap.decode(bytes(bad), WHERE)


def test_second_chunk_errors_name_its_offset():
    c1 = _chunk1()
    blob = mg.concat([c1, mg.encode_chunk("m", version=5)])
    with pytest.raises(UnsupportedVersion) as ei:
        mtmap.decode(blob, WHERE)
    assert ei.value.offset == len(c1) + 4


@pytest.mark.parametrize("field,value,match", [
    (6, 40, "header size"),                 # header_size < 56
    (8, 0xFFFF_FFF8, "chunk size"),          # chunk_size past the section
    (8, 12, "chunk size"),                   # chunk_size < header
    (8, 61, "chunk size"),                   # not a multiple of 8
    (16, 0xFFFF_FFFF, "type count"),         # n_types
    (16, 100, "type"),
    (20, 0x7FFF_FFFF, "function count"),     # n_functions
    (24, 1000, "global table"),              # n_globals
    (28, 0xFFFF_FF00, "string table"),       # strtab_size
    (32, 0xFFFF_FFF0, "type table"),         # types_off
    (36, 0x10_0000, "function table"),       # functions_off
    (40, 0x10_0000, "global table"),         # globals_off
    (44, 0xFFFF_FFFF, "string table"),       # strtab_off
    (48, 0x10_0000, "module name"),          # module_name string offset
    (32, 8, "overlaps the chunk header"),
])
def test_header_fields_out_of_range(field, value, match):
    blob = _hdr(_chunk1(), field, value)
    with pytest.raises(BadData, match=match) as ei:
        mtmap.decode(blob, WHERE)
    assert ei.value.offset is not None and "\n" not in str(ei.value)


def _first_type_off(blob: bytes) -> int:
    return struct.unpack_from("<I", blob, 32)[0]


def test_string_offsets_out_of_range():
    blob = _chunk1()
    t0 = _first_type_off(blob)
    with pytest.raises(BadData, match="type name offset"):
        mtmap.decode(_hdr(blob, t0 + 16, 0xFFFF), WHERE)
    strsz = struct.unpack_from("<I", blob, 28)[0]
    with pytest.raises(BadData, match="type name offset"):
        mtmap.decode(_hdr(blob, t0 + 16, strsz), WHERE)
    fun_off = struct.unpack_from("<I", blob, 36)[0]
    with pytest.raises(BadData, match="reason offset"):
        mtmap.decode(_hdr(blob, fun_off + 12, 0x7777), WHERE)
    glob_off = struct.unpack_from("<I", blob, 40)[0]
    with pytest.raises(BadData, match="global name offset"):
        mtmap.decode(_hdr(blob, glob_off + 24, 0x7777), WHERE)


def test_unterminated_string_table():
    blob = bytearray(_chunk1())
    str_off, strsz = struct.unpack_from("<II", blob, 44)[0], struct.unpack_from("<I", blob, 28)[0]
    for i in range(str_off + 1, str_off + strsz):
        if blob[i] == 0:
            blob[i] = ord("x")
    with pytest.raises(BadData, match="NUL-terminated"):
        mtmap.decode(bytes(blob), WHERE)


def test_slot_and_alloca_counts_too_large():
    blob = _chunk1()
    t0 = _first_type_off(blob)
    with pytest.raises(BadData, match="slot"):
        mtmap.decode(_hdr(blob, t0 + 24, 0x0100_0000), WHERE)
    fun_off = struct.unpack_from("<I", blob, 36)[0]
    with pytest.raises(BadData, match="alloca count"):
        mtmap.decode(_hdr(blob, fun_off + 32, 0xFFFF_FFFF), WHERE)
    with pytest.raises(BadData, match="count 0"):
        mtmap.decode(_hdr(blob, t0 + 48 + 16, 0), WHERE)


def test_truncated_at_every_offset():
    blob = mg.concat([_chunk1(), _chunk2()])
    n1 = len(_chunk1())
    for cut in range(1, len(blob)):
        try:
            chunks = mtmap.decode(blob[:cut], WHERE)
        except BadData as e:
            assert e.offset is not None and 0 <= e.offset <= cut and "\n" not in str(e)
            continue
        assert len(chunks) == 1 and cut >= n1, cut


def test_random_corruption_gives_only_bad_data():
    blob = mg.concat([_chunk1(), _chunk2()])
    rng = random.Random(99)
    for _ in range(3000):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        try:
            mtmap.decode(bytes(b), WHERE, [])
        except BadData:
            pass
