"""The compact map encodings on malformed input: ``.mtstack`` (FORMAT.md §1a),
``.mtmap`` versions 3 and 4 (§2) and ``.mttypes`` (§2a).

The sections come from a program built at test time by ``mappedtrace cc``;
malformed copies are made here: every truncation, seeded random byte changes,
and hand-made bad headers.  A decoder must answer each with its result or a
one-line :class:`~mappedtrace.errors.BadData` naming the section and offset,
never another exception, and stop (every loop is bounded by the bytes left).
(Equality with LLVM's own table is checked in test_formats_real.py.)
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

import mapgen as mg
from conftest import build_sample, need
from mappedtrace.binreader import Cursor
from mappedtrace.errors import BadData, UnsupportedVersion
from mappedtrace.formats import elf, mtmap, mtstack
from mappedtrace.formats.maps import BinaryMaps

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build_sample(REPO / "samples" / "heap_layouts.c", "-O2", tmp_path_factory.mktemp("compact") / "hl")


@pytest.fixture(scope="module")
def exe3(tmp_path_factory):
    return build_sample(REPO / "samples" / "heap_layouts.c", "-O2", tmp_path_factory.mktemp("compact3") / "hl3",
                        {"MAPPEDTRACE_MTMAP_VERSION": "3"})


@pytest.fixture(scope="module")
def stack(exe):
    s = elf.section(exe, ".mtstack")
    assert s is not None and s.size > 16
    return s


@pytest.fixture(scope="module")
def chunk(exe3):
    s = elf.section(exe3, ".mtmap")
    assert s is not None and int.from_bytes(s.data[4:6], "little") == 3
    return s


@pytest.fixture(scope="module")
def chunk4(exe):
    s = elf.section(exe, ".mtmap")
    assert s is not None and int.from_bytes(s.data[4:6], "little") == 4
    return s


@pytest.fixture(scope="module")
def types4(exe):
    s = elf.section(exe, ".mttypes")
    assert s is not None and s.size > 16
    return s


def test_decodes(stack, chunk, chunk4, types4):
    tables = mtstack.decode(stack.data, "x: .mtstack", stack.addr)
    assert tables and sum(len(t.records) for t in tables) > 10
    chunks = mtmap.decode(chunk.data, "x: .mtmap", [], chunk.addr)
    assert chunks and chunks[0].types and chunks[0].functions
    chunks = mtmap.decode(chunk4.data, "x: .mtmap", [], chunk4.addr)
    assert chunks and not chunks[0].types and chunks[0].functions
    assert mtmap.decode_types(types4.data, "x: .mttypes")


def test_every_mtmap_v4_truncation_is_bad_data(chunk4):
    data = chunk4.data
    for n in range(1, len(data)):
        with pytest.raises(BadData):
            mtmap.decode(data[:n], "x: .mtmap", [], chunk4.addr)


def test_mttypes_truncation_is_bad_data_or_whole_records(types4):
    """A record cut anywhere is refused; a cut between records leaves the records
    before it (the section has no count: its ELF size is the bound)."""
    data = types4.data
    whole = mtmap.decode_types(data, "x")
    ends = set()
    c = Cursor(data, "x")
    while not c.at_end():
        c.u8()
        c.skip(c.uleb())
        ends.add(c.pos)
    for n in range(1, len(data)):
        if n in ends:
            got = mtmap.decode_types(data[:n], "x")
            assert got == whole[:len(got)] and got
        else:
            with pytest.raises(BadData, match=r"^x\+0x"):
                mtmap.decode_types(data[:n], "x")


def test_every_truncation_is_bad_data(stack):
    data = stack.data
    for n in range(1, len(data)):
        with pytest.raises(BadData) as ei:
            mtstack.decode(data[:n], "x: .mtstack", stack.addr)
        assert str(ei.value).startswith("x: .mtstack+0x"), str(ei.value)


def test_every_mtmap_truncation_is_bad_data(chunk):
    data = chunk.data
    # the chunk header says how long the chunk is: a cut anywhere before its end is caught
    for n in range(1, len(data), 3):
        with pytest.raises(BadData):
            mtmap.decode(data[:n], "x: .mtmap", [], chunk.addr)


@pytest.mark.parametrize("section", [".mtstack", ".mtmap", ".mtmap4", ".mttypes"])
def test_garbled_bytes_give_bad_data_or_a_result(stack, chunk, chunk4, types4, section):
    src = {".mtstack": stack, ".mtmap": chunk, ".mtmap4": chunk4, ".mttypes": types4}[section]
    rng = random.Random(18)
    outcomes = {"ok": 0, "bad": 0}
    for _ in range(400):
        data = bytearray(src.data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            if section == ".mtstack":
                mtstack.decode(bytes(data), "x", src.addr)
            elif section == ".mttypes":
                mtmap.decode_types(bytes(data), "x", [])
            else:
                mtmap.decode(bytes(data), "x", [], src.addr)
            outcomes["ok"] += 1
        except BadData as e:
            assert "\n" not in str(e)
            outcomes["bad"] += 1
    # both happen: a changed offset or name still decodes, a changed count does not
    assert outcomes["ok"] and outcomes["bad"], outcomes


def test_header_errors_name_the_value(stack):
    d = bytearray(stack.data)
    d[0:4] = b"XXXX"
    with pytest.raises(BadData, match=r"x\+0x0: bad stack table magic b'XXXX'"):
        mtstack.decode(bytes(d), "x")
    d = bytearray(stack.data)
    d[4:6] = (9).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersion, match="stack table version 9 is not supported; this build reads versions 1-2"):
        mtstack.decode(bytes(d), "x")
    d = bytearray(stack.data)
    d[8:12] = (1 << 31).to_bytes(4, "little")
    with pytest.raises(BadData, match="block size"):
        mtstack.decode(bytes(d), "x")
    # a count that the bytes left cannot hold: refused before any loop runs
    d = bytearray(stack.data[:16]) + bytes([0xFF, 0xFF, 0xFF, 0x7F]) + bytes(8)
    d[8:12] = len(d).to_bytes(4, "little")
    with pytest.raises(BadData, match="function count 268435455 needs at least"):
        mtstack.decode(bytes(d), "x")


def test_leb128_bounds():
    assert Cursor(bytes([0xE5, 0x8E, 0x26]), "x").uleb() == 624485
    assert Cursor(bytes([0xC0, 0xBB, 0x78]), "x").sleb() == -123456
    assert Cursor(bytes([0xFF] * 9 + [0x01]), "x").uleb() == (1 << 64) - 1
    with pytest.raises(BadData, match="longer than 10 bytes"):
        Cursor(bytes([0x80] * 11), "x").uleb()
    with pytest.raises(BadData, match="does not fit 64 bits"):
        Cursor(bytes([0xFF] * 9 + [0x7F]), "x").uleb()
    with pytest.raises(BadData, match="truncated"):
        Cursor(bytes([0x80, 0x80]), "x").sleb()


def test_mtmap_v3_header_errors(chunk):
    d = bytearray(chunk.data)
    d[6:8] = (56).to_bytes(2, "little")        # version 3 needs the 64-byte header
    with pytest.raises(BadData, match="version 3 chunk header size 56"):
        mtmap.decode(bytes(d), "x")
    d = bytearray(chunk.data)
    d[4:6] = (5).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersion, match=".mtmap version 5 is not supported; this build reads versions 1-4"):
        mtmap.decode(bytes(d), "x")
    d = bytearray(chunk.data)
    struct.pack_into("<I", d, 56, 1 << 28)    # an id table that cannot fit
    with pytest.raises(BadData, match="id table"):
        mtmap.decode(bytes(d), "x")


def test_mtmap_v4_and_mttypes_errors(chunk4, types4):
    d = bytearray(chunk4.data)
    d[6:8] = (8).to_bytes(2, "little")         # shorter than the 12 fixed bytes
    with pytest.raises(BadData, match=r"x\+0x6: chunk header size 8"):
        mtmap.decode(bytes(d), "x")
    d = bytearray(chunk4.data)
    d[8:12] = (len(d) + 1).to_bytes(4, "little")
    with pytest.raises(BadData, match="chunk size"):
        mtmap.decode(bytes(d), "x")
    d = bytearray(chunk4.data)
    d[12] = 0x80 | d[12]                         # the flags ULEB now swallows the counts
    with pytest.raises(BadData):
        mtmap.decode(bytes(d), "x")
    d = bytearray(types4.data)
    d[0] = 2
    with pytest.raises(UnsupportedVersion, match=r"x\+0x0: .mttypes record version 2 is not supported"):
        mtmap.decode_types(bytes(d), "x")
    # a record whose size runs past the section
    d = bytearray(types4.data[:2]) + bytes(4)
    d[1] = 0x7F
    with pytest.raises(BadData, match="runs past the section end"):
        mtmap.decode_types(bytes(d), "x")
    # a type reference past the record's ids: id count 0, then an element type of 5
    rec = struct.pack("<Q", 7) + bytes([0, 8, 1]) + b"x" + bytes([3, 0, 0, 0, 5, 0])
    with pytest.raises(BadData, match="element type 5 is past the 0 ids of type 0x7"):
        mtmap.decode_types(bytes([1, len(rec)]) + rec, "x")
    # reference 1 is the record's own id
    ok = struct.pack("<Q", 7) + bytes([0, 8, 1]) + b"x" + bytes([3, 0, 0, 0, 1, 0])
    assert mtmap.decode_types(bytes([1, len(ok)]) + ok, "x")[0].elem_type == 7


def _chunk_v4(fn: bytes) -> bytes:
    """A version 4 chunk with one function entry ``fn``, no ids, an empty string table."""
    body = bytes([0, 1, 0, 0, 1, 0]) + fn + b"\0"   # flags, 1 function, 0 globals, 0 ids, strtab 1, module ""
    return struct.pack("<4sHHI", b"MTMP", 4, 12, 12 + len(body)) + body


def test_mtmap_v4_function_entries():
    no_addr, counts = mtmap.FUNCTION_NO_ADDRESS, mtmap.FUNCTION_COUNTS
    # flags, name "", reason 1, 3 call sites, (0 loop points, 1 unmapped call, 0 tail calls)
    f = mtmap.decode(_chunk_v4(bytes([no_addr | counts | 2 << 4, 0, 1, 3, 0, 1, 0])), "x")[0].functions[0]
    assert (f.address, f.status, f.reason, f.n_callsites, f.n_unmapped_calls) == (0, "partial", mtmap.STD_REASONS[0], 3, 1)
    f = mtmap.decode(_chunk_v4(bytes([no_addr | mtmap.FUNCTION_THUNK | 2 << 4])), "x")[0].functions[0]
    assert (f.name, f.reason, f.n_unmapped_calls, f.allocas) == (mtmap.THUNK_NAME, "varargs thunk", 1, [])
    f = mtmap.decode(_chunk_v4(bytes([no_addr | counts | 2 << 4, 0, 4, 0, 0, 2, 0])), "x")[0].functions[0]
    assert f.reason.startswith("calls to fatal functions") and f.n_unmapped_calls == 2
    with pytest.raises(BadData, match="reason number 9 is not one of the 4 known"):
        mtmap.decode(_chunk_v4(bytes([no_addr, 0, 9, 0])), "x")
    with pytest.raises(BadData, match="unknown flags 0x82"):
        mtmap.decode(_chunk_v4(bytes([no_addr | 0x80, 0, 0, 0])), "x")
    # a relative address is 4 bytes from the chunk's start: chunk at 0x1000, function at 0x1000 - 16
    f = mtmap.decode(_chunk_v4(bytes([0]) + struct.pack("<i", -16) + bytes([0, 0, 0])), "x",
                     vaddr=0x1000)[0].functions[0]
    assert f.address == 0x1000 - 16 and f.allocas == [] and f.n_tail_calls == 0
    with pytest.raises(BadData, match="bytes after the last global"):
        mtmap.decode(_chunk_v4(bytes([no_addr, 0, 0, 0, 7])), "x")


def test_bad_section_in_real_elf(exe, stack, tmp_path):
    """A garbled .mtstack inside a real ELF: the one-line error names file, section, offset."""
    need("llvm-objcopy-22")
    d = bytearray(stack.data)
    d[0] = ord("Z")
    bad = mg.replace_section(exe, ".mtstack", bytes(d), tmp_path / "bad")
    with pytest.raises(BadData) as ei:
        BinaryMaps.load(str(bad))
    assert str(ei.value).startswith(f"{bad}: .mtstack+0x0: bad stack table magic")
