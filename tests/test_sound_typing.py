"""Sound typing (issue #11 item 1): a type makes the tracer skip a word only
where the program provably never stores a pointer there.

Each program in ``tests/sound_typing/`` keeps pointers where a type, or a
guess from a chunk's size, says there are none, and leaks something beside
them; it prints the truth (``truth leak|kept ADDR``, ``leak_corpus/truth.h``).
Built at test time at -O0 and -O2 and run under ``mappedtrace run``: zero
false leaks, the real leaks found.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, assert_exact, run_traced

SRC = ROOT / "tests" / "sound_typing"
TRUTH_H = ROOT / "tests" / "leak_corpus"
PROGRAMS = ["radix_node", "size_match", "union_array", "trailing", "first_member"]


def build(name: str, opt: str, out: Path, *extra: str) -> Path:
    exe = out / f"{name}{opt}"
    srcs = [str(SRC / f"{name}.c")] + list(extra)
    r = subprocess.run([MAPPEDTRACE, "cc", opt, f"-I{TRUTH_H}", "-o", str(exe), *srcs],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def check_exact(exe: Path, tmp: Path) -> dict:
    r, report, truth, kept = run_traced(exe, tmp)
    assert truth and kept, r.stderr[-2000:]
    assert_exact(report, truth, kept, r.stderr[-3000:])
    assert r.returncode == 23, r.stderr[-2000:]
    assert "first definition" not in r.stderr, r.stderr[-2000:]
    return report


@pytest.mark.parametrize("name,opt", [(n, o) for n in PROGRAMS for o in ("-O0", "-O2")])
def test_no_false_leaks(name: str, opt: str, tmp_path: Path) -> None:
    check_exact(build(name, opt, tmp_path), tmp_path)


def maps_json(exe: Path) -> dict:
    import json
    r = subprocess.run([MAPPEDTRACE, "maps", "--json", str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_tagged_pointers_in_integer_fields(opt: str, tmp_path: Path) -> None:
    """`uintptr_t` words that the program stores ptrtoint values into (through a
    helper's return value), and a byte array it memcpys pointers into, are
    STORED slots in the map, and scanned: the tagged pointers (low bit set)
    keep their objects."""
    exe = build("tagged", opt, tmp_path)
    m = maps_json(exe)
    tnode = next(t for t in m["types"] if t["name"] == "struct tnode")
    stored = [(s["offset"], s["count"]) for s in tnode["slots"] if "stored" in s["flags"]]
    assert stored == [(8, 1)], tnode      # not k (a hash of a pointer), not the struct copy's words
    assert all({"untyped", "conservative"} <= set(s["flags"]) for s in tnode["slots"] if "stored" in s["flags"])
    groot = next(g for g in m["globals"] if g["name"] == "groot")
    gt = next(t for t in m["types"] if t["id"] == groot["type_id"])
    assert [s["flags"] for s in gt["slots"]] == [["untyped", "conservative", "stored"]]
    # memcpy of a pointer into `unsigned char raw[24]` at a variable index: all of raw
    blob = next(t for t in m["types"] if t["name"] == "struct blob")
    assert [(s["offset"], s["count"]) for s in blob["slots"] if "stored" in s["flags"]] == [(8, 3)], blob
    rep = check_exact(exe, tmp_path)
    assert rep["precision"]["heap_bytes_typed"] > 0


def test_stored_slots_merge_across_modules() -> None:
    """Two modules define the same layout; one found the program storing a
    pointer into a long field: the merged type has that STORED word, with no
    warning.  A different declared layout under one id still warns."""
    from mappedtrace.formats.mtmap import (SLOT_CONSERVATIVE, SLOT_STORED, SLOT_UNTYPED, Chunk, Slot,
                                           TypeInfo, merge_types)
    ptr = Slot(0, 0x10)
    stored = Slot(8, 0, 1, 0, SLOT_UNTYPED | SLOT_CONSERVATIVE | SLOT_STORED)
    a = TypeInfo(0x55, "struct s", 24, "struct", 0, [ptr])
    b = TypeInfo(0x55, "struct s", 24, "struct", 0, [ptr, stored])
    ch = lambda name, *ts: Chunk(0, 0, 0, name, list(ts), [], [])
    warns: list[str] = []
    merged = merge_types([ch("a.c", a), ch("b.c", b), ch("c.c", b)], warns)
    assert warns == [] and merged[0x55].slots == [ptr, stored]
    other = TypeInfo(0x55, "struct s", 32, "struct", 0, [ptr])
    merge_types([ch("a.c", a), ch("d.c", other)], warns)
    assert len(warns) == 1 and "differs" in warns[0]


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_same_name_two_layouts(opt: str, tmp_path: Path) -> None:
    """Two translation units each define `struct dict` and `struct dictEntry`
    (as hiredis and redis do): two types each, by content, with no warning;
    each dict is scanned by its own layout (dict_b's pointers sit where
    dict_a's has integers), kept ones keep everything, leaked ones are found."""
    exe = build("dict_a", opt, tmp_path, str(SRC / "dict_b.c"))
    m = maps_json(exe)
    layouts = sorted((t["size"], tuple(s["offset"] for s in t["slots"]))
                     for t in m["types"] if t["name"] == "struct dict")
    assert layouts == [(32, (0,)), (32, (16, 24))], layouts
    assert len({t["id"] for t in m["types"] if t["name"] == "struct dictEntry"}) == 2
    assert not [w for w in m.get("warnings", []) if "differs" in w], m.get("warnings")
    r = subprocess.run([MAPPEDTRACE, "maps", str(exe)], capture_output=True, text=True, timeout=120)
    assert "differs" not in r.stderr and "first definition" not in r.stderr, r.stderr
    check_exact(exe, tmp_path)


def test_declared_only_type_resolves_by_name() -> None:
    """A module that only declares `struct thing` (an opaque pointer) lists an
    UNKNOWN `decl:` entry; a reader takes the program's one definition of that
    name for it, and none when two modules define two layouts of that name."""
    from mappedtrace.formats.mtmap import Chunk, Slot, TypeInfo, merge_types
    ch = lambda name, *ts: Chunk(0, 0, 0, name, list(ts), [], [])
    decl = TypeInfo(0x11, "struct thing", 0, "unknown")
    one = TypeInfo(0x22, "struct thing", 16, "struct", 0, [Slot(0, 0, flags=1)])
    two = TypeInfo(0x33, "struct thing", 24, "struct", 0, [Slot(8, 0, flags=1)])
    warns: list[str] = []
    merged = merge_types([ch("a.c", decl), ch("b.c", one)], warns)
    assert merged[0x11] is merged[0x22] and not warns
    merged = merge_types([ch("a.c", decl), ch("b.c", one), ch("c.c", two)], warns)
    assert merged[0x11].kind == "unknown" and not warns
