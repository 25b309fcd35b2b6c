"""The compact map encodings on malformed input: ``.mtstack`` (FORMAT.md §1a)
and ``.mtmap`` version 3 (§2).

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
def stack(exe):
    s = elf.section(exe, ".mtstack")
    assert s is not None and s.size > 16
    return s


@pytest.fixture(scope="module")
def chunk(exe):
    s = elf.section(exe, ".mtmap")
    assert s is not None and int.from_bytes(s.data[4:6], "little") == 3
    return s


def test_decodes(stack, chunk):
    tables = mtstack.decode(stack.data, "x: .mtstack", stack.addr)
    assert tables and sum(len(t.records) for t in tables) > 10
    chunks = mtmap.decode(chunk.data, "x: .mtmap", [], chunk.addr)
    assert chunks and chunks[0].types and chunks[0].functions


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


@pytest.mark.parametrize("section", [".mtstack", ".mtmap"])
def test_garbled_bytes_give_bad_data_or_a_result(stack, chunk, section):
    src = stack if section == ".mtstack" else chunk
    rng = random.Random(18)
    outcomes = {"ok": 0, "bad": 0}
    for _ in range(400):
        data = bytearray(src.data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            if section == ".mtstack":
                mtstack.decode(bytes(data), "x", src.addr)
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
    with pytest.raises(UnsupportedVersion, match="stack table version 9 is not supported; this build reads version 1"):
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
    d[4:6] = (4).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersion, match=".mtmap version 4 is not supported; this build reads versions 1-3"):
        mtmap.decode(bytes(d), "x")
    d = bytearray(chunk.data)
    struct.pack_into("<I", d, 56, 1 << 28)    # an id table that cannot fit
    with pytest.raises(BadData, match="id table"):
        mtmap.decode(bytes(d), "x")


def test_bad_section_in_real_elf(exe, stack, tmp_path):
    """A garbled .mtstack inside a real ELF: the one-line error names file, section, offset."""
    need("llvm-objcopy-22")
    d = bytearray(stack.data)
    d[0] = ord("Z")
    bad = mg.replace_section(exe, ".mtstack", bytes(d), tmp_path / "bad")
    with pytest.raises(BadData) as ei:
        BinaryMaps.load(str(bad))
    assert str(ei.value).startswith(f"{bad}: .mtstack+0x0: bad stack table magic")
