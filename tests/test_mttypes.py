"""``.mttypes`` (FORMAT.md §2a): one record per type, in COMDAT groups keyed by
the record's bytes, so that the linker keeps one copy per program.

Built at test time from ``tests/mttypes/`` (two translation units that both
declare ``struct cell``; only one stores a pointer into its integer word):

* the default build (``.mtmap`` version 4) and a version 3 build
  (``MAPPEDTRACE_MTMAP_VERSION=3``, types in every chunk) decode to the same
  types, functions and globals, and the code is the same size, function by
  function;
* the version 3 build repeats the shared types in both chunks, the version 4
  build holds each record once (the linker dropped the second copy), except
  ``struct cell``, whose two records differ in their STORED word: both are
  kept, and the merged type has the word (soundness per module);
* under ``mappedtrace run`` the object held only by that tagged word is kept,
  the leak beside it is found.
"""
from __future__ import annotations

import collections
import os
import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, assert_exact, have_c_compiler, require_plugin, run_traced
from mappedtrace.binreader import Cursor
from mappedtrace.formats import elf, mtmap
from mappedtrace.formats.maps import BinaryMaps

SRC = ROOT / "tests" / "mttypes"
TRUTH_H = ROOT / "tests" / "leak_corpus"


def build(out: Path, opt: str, env: dict | None = None) -> Path:
    if not have_c_compiler():
        pytest.skip("no C compiler on this host")
    require_plugin()
    r = subprocess.run([MAPPEDTRACE, "cc", opt, "-g", f"-I{TRUTH_H}", "-o", str(out),
                        str(SRC / "cell_a.c"), str(SRC / "cell_b.c")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stderr
    return out


def records(path: Path) -> list[bytes]:
    """The raw records of ``.mttypes``, in section order."""
    data = elf.section_bytes(str(path), ".mttypes")
    c, out = Cursor(data, "x"), []
    while not c.at_end():
        if data[c.pos] == 0:
            c.pos += 1
            continue
        at = c.pos
        c.u8()
        c.skip(c.uleb())
        out.append(data[at:c.pos])
    return out


@pytest.fixture(scope="module", params=["-O0", "-O2"])
def builds(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("mttypes")
    opt = request.param
    return build(d / f"cell{opt}", opt), build(d / f"cell3{opt}", opt, {"MAPPEDTRACE_MTMAP_VERSION": "3"})


def test_same_information_as_version_3(builds):
    v4, v3 = builds
    a, b = BinaryMaps.load(str(v4)), BinaryMaps.load(str(v3))
    assert {int.from_bytes(elf.section_bytes(str(v4), ".mtmap")[c.section_offset + 4:][:2], "little")
            for c in a.chunks} == {4}
    assert a.types == b.types and a.types
    key = lambda f: (f.name, f.size, f.status, f.reason, f.n_callsites, f.n_loop_points,  # noqa: E731
                     f.n_unmapped_calls, f.n_tail_calls, [(x.name, x.type_id, x.size) for x in f.allocas])
    assert sorted(map(key, a.functions)) == sorted(map(key, b.functions))
    gkey = lambda g: (g.name, g.size, g.type_id, g.tls, g.constant)  # noqa: E731
    assert sorted(map(gkey, a.globals)) == sorted(map(gkey, b.globals)) and a.globals
    assert not a.warnings and not b.warnings, (a.warnings, b.warnings)
    # data only: the code is the same size, function by function
    fa = {s.name: s.size for s in elf.symbols(str(v4)) if s.type == "func"}
    fb = {s.name: s.size for s in elf.symbols(str(v3)) if s.type == "func"}
    assert fa == fb
    assert elf.section(str(v4), ".text").size == elf.section(str(v3), ".text").size
    assert a.section_sizes[".mtmap"] + a.section_sizes[".mttypes"] < b.section_sizes[".mtmap"]


def test_linker_keeps_one_record_per_type(builds):
    v4, v3 = builds
    recs = records(v4)
    assert len(recs) == len(set(recs)) > 0
    by_id = collections.Counter(mtmap.decode_types(r, "x")[0].id for r in recs)
    chunk_ids = collections.Counter(t.id for c in BinaryMaps.load(str(v3)).chunks for t in c.types)
    shared = {i for i, n in chunk_ids.items() if n == 2}
    assert shared, chunk_ids                  # both chunks of the v3 build list these
    cell = next(t.id for t in BinaryMaps.load(str(v4)).types.values() if t.name == "struct cell")
    assert cell in shared and by_id[cell] == 2
    assert all(by_id[i] == 1 for i in shared - {cell}), by_id


def test_stored_word_of_one_module_is_kept(builds, tmp_path):
    v4, _v3 = builds
    cells = [t for r in records(v4) for t in mtmap.decode_types(r, "x") if t.name == "struct cell"]
    stored = [[(s.offset, s.count) for s in t.slots if s.flags & mtmap.SLOT_STORED] for t in cells]
    assert sorted(stored) == [[], [(0, 1)]]
    merged = next(t for t in BinaryMaps.load(str(v4)).types.values() if t.name == "struct cell")
    assert [(s.offset, s.count) for s in merged.slots if s.flags & mtmap.SLOT_STORED] == [(0, 1)]
    r, report, truth, kept = run_traced(v4, tmp_path)
    assert truth and kept, r.stderr[-2000:]
    assert_exact(report, truth, kept, r.stderr[-3000:])
