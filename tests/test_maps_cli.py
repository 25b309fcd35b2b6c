"""``mappedtrace maps BINARY [--json]`` as a user runs it (a real subprocess):
tables, JSON, exit codes, and one-line errors on missing, non-ELF and
corrupted inputs (corrupted sections embedded in a real ELF with
llvm-objcopy-22)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import mapgen as mg
from conftest import need
from mappedtrace.formats import elf
from mappedtrace.formats.maps import BinaryMaps


def _maps(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="160", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "mappedtrace", "maps", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if not l.startswith("mappedtrace: hint:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mappedtrace: error: ")
    assert r.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    need("llc-22", "clang-22", "llvm-objcopy-22")
    return mg.build_sample_binary(tmp_path_factory.mktemp("cli"))


def test_text(built):
    r = _maps(built["full"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for s in ("two_calls", "loop", "instrumented", "uses setjmp", "struct [weird] name",
              "[rsp+0]", "slot type#1 @ rsp+16", "kept", "tls+0x"):
        assert s in out, s
    assert "tls_missing" in r.stderr and "warning" in r.stderr     # unresolved TLS global


def test_json(built):
    r = _maps("--json", built["full"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    m = BinaryMaps.load(built["full"])
    assert [x["pc"] for x in d["records"]] == sorted(m.records)
    s = d["summary"]
    assert (s["call_sites"], s["loop_points"], s["foreign_records"]) == (2, 1, 1)
    assert (s["instrumented"], s["skipped"], s["types"], s["globals"]) == (2, 1, 2, 3)
    assert d["section_sizes"][".mtmap"] == len(elf.section_bytes(built["full"], ".mtmap"))
    two = next(f for f in d["functions"] if f["name"] == "two_calls")
    assert two["address"] == built["syms"]["two_calls"].addr and two["allocas"][0]["type"] == "struct node"
    ent = d["records"][0]["entries"]
    assert ent[0]["location"]["kind"] == "Indirect" and ent[0]["location"]["reg"] == "rsp"


def test_stackmaps_only(built):
    """Without .mtmap the records still decode; functions come from the symtab."""
    r = _maps("--json", built["exe"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {f["name"] for f in d["functions"]} == {"two_calls", "loop"}
    assert d["section_sizes"][".mtmap"] == 0


def test_no_maps(built, tmp_path):
    plain = tmp_path / "plain"
    mg.run([mg.tool("clang-22"), "-o", str(plain), "-x", "c", "-"], input="int main(void){return 0;}")
    r = _maps(str(plain))
    assert r.returncode == 1 and r.stdout == ""
    assert f"no MappedTrace maps in {plain}: build it with mappedtrace cc" in r.stderr
    r = _maps("--json", str(plain))
    assert r.returncode == 1 and r.stdout == ""


def test_missing_and_not_elf(tmp_path):
    line = _one_line_error(_maps(str(tmp_path / "nothing")))
    assert "no such file" in line
    t = tmp_path / "notes.txt"
    t.write_text("[bold]x[/bold]\n")
    assert "not an ELF file" in _one_line_error(_maps(str(t)))
    _one_line_error(_maps(str(tmp_path)))                          # a directory
    trunc = tmp_path / "trunc"
    trunc.write_bytes(Path(sys.executable).read_bytes()[:100])
    _one_line_error(_maps(str(trunc)))


def _stackmap_corruptions(data: bytes) -> list[tuple[str, bytes, str]]:
    b = bytearray(data)
    out = []
    v = bytearray(b); v[0] = 7
    out.append(("version", bytes(v), ".llvm_stackmaps+0x0: stack map version 7 is not supported"))
    c = bytearray(b); struct.pack_into("<I", c, 12, 0xFFFFFF)
    out.append(("records", bytes(c), ".llvm_stackmaps+0x"))
    k = bytearray(b)
    nfun, ncon = struct.unpack_from("<II", k, 4)
    first_loc = 16 + nfun * 24 + ncon * 8 + 16
    k[first_loc] = 9
    out.append(("kind", bytes(k), f".llvm_stackmaps+{first_loc:#x}: location 0"))
    return out


@pytest.mark.parametrize("case", [0, 1, 2])
def test_corrupt_stackmaps_in_elf(built, tmp_path, case):
    data = elf.section_bytes(built["full"], ".llvm_stackmaps")
    name, bad, expect = _stackmap_corruptions(data)[case]
    out = mg.replace_section(built["full"], ".llvm_stackmaps", bad, tmp_path / f"bad_{name}")
    line = _one_line_error(_maps(str(out)))
    assert f"{out}: {expect}" in line, line


@pytest.mark.parametrize("field,value,expect", [
    (0, 0x51544D4D, ".mtmap+0x0: bad chunk magic"),
    (4, 7, ".mtmap+0x4: .mtmap version 7 is not supported; this build reads versions 1-4"),
    (16, 0xFFFFFFF, "type count"),
    (48, 0xFFFF, "module name offset 0xffff outside the string table"),
])
def test_corrupt_mtmap_in_elf(built, tmp_path, field, value, expect):
    b = bytearray(elf.section_bytes(built["full"], ".mtmap"))
    struct.pack_into("<I" if field != 4 else "<H", b, field, value)
    out = mg.replace_section(built["full"], ".mtmap", bytes(b), tmp_path / "bad_mtmap")
    line = _one_line_error(_maps("--json", str(out)))
    assert expect in line and str(out) in line, line


def test_truncated_sections_in_elf(built, tmp_path):
    """Sections cut short (a different size: the section is replaced in place)."""
    for sec in (".mtmap", ".llvm_stackmaps"):
        data = elf.section_bytes(built["full"], sec)
        for cut in (1, 17, len(data) // 2 + 3, len(data) - 5):
            out = mg.replace_section(built["full"], sec, data[:cut], tmp_path / f"cut{sec}{cut}")
            assert len(elf.section_bytes(str(out), sec)) == cut
            line = _one_line_error(_maps(str(out)))
            assert f"{sec}+0x" in line, line


@pytest.mark.parametrize("width", [80, 132])
def test_render_text_fixed_width(built, width):
    """The reporter renders to the stream it is given, within the width, with
    user strings (``struct [weird] name``) escaped rather than read as markup."""
    import io
    from mappedtrace.reporters.maps_report import render_text
    buf = io.StringIO()
    render_text(BinaryMaps.load(built["full"]), buf, width=width)
    out = buf.getvalue()
    assert max(len(l) for l in out.splitlines()) <= width
    assert "struct [weird] name" in out and "\x1b[" not in out      # no colour codes off a terminal
    assert "two_calls" in out and "uses setjmp" in out
