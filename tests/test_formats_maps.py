"""BinaryMaps (the joined API) and the ELF helpers on binaries built at test
time: llc-22 output of tests/stackmap_inputs/ linked with a C program, plus a
generated ``.mtmap`` added with llvm-objcopy-22 (addresses from the binary's
own symbol table)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import mapgen as mg
from conftest import need
from mappedtrace.errors import BadData
from mappedtrace.formats import elf
from mappedtrace.formats.maps import SKIPPED_NO_MTMAP, BinaryMaps

INPUTS = Path(__file__).parent / "stackmap_inputs"

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    need("llc-22", "clang-22", "llvm-objcopy-22")
    return mg.build_sample_binary(tmp_path_factory.mktemp("maps"))


def test_join(built):
    m = BinaryMaps.load(built["full"])
    syms = built["syms"]
    assert m.has_maps and m.section_sizes[".mtmap"] > 0 and m.section_sizes[".llvm_stackmaps"] > 0
    fn = {f.name: f for f in m.functions}
    assert set(fn) == {"two_calls", "loop", "main"}
    assert fn["two_calls"].size == syms["two_calls"].size > 0
    assert fn["main"].status == "skipped" and fn["main"].reason == "uses setjmp"
    two = syms["two_calls"].addr
    pcs = m.map_point_pcs(two)
    assert len(pcs) == 2 and pcs == sorted(pcs)
    assert all(two < pc < two + syms["two_calls"].size for pc in pcs)
    assert m.record_at(pcs[0]).entries[2].role == "slot"
    assert m.record_at(pcs[0] + 1) is None
    # function_at: instrumented, skipped by the pass, and not compiled by it.
    assert m.function_at(pcs[1]) is fn["two_calls"]
    assert m.function_at(syms["main"].addr + 1) is fn["main"]
    pc_plain = m.function_at(syms["plain_c"].addr + 1)
    assert pc_plain.name == "plain_c" and pc_plain.status == "skipped" and pc_plain.reason == SKIPPED_NO_MTMAP
    assert m.function_at(syms["plain_c"].addr + syms["plain_c"].size) is not pc_plain
    assert m.function_at(0x10) is None
    # Globals: a TLS global's address is its offset in the TLS block.
    g = {x.name: x for x in m.globals}
    assert g["kept"].address == syms["kept"].addr and not g["kept"].tls
    assert g["tls_node"].tls and g["tls_node"].address == syms["tls_node"].addr
    assert any("tls_missing" in w for w in m.warnings)
    assert m.types[0x1111].name == "struct node"
    assert m.type_name(0x2222) == "struct [weird] name" and m.type_name(0) == "?"


def test_no_maps(built):
    plain = _plain(built)
    m = BinaryMaps.load(plain)
    assert not m.has_maps and m.records == {} and m.functions == [] and m.types == {}
    assert m.section_sizes == {".mtstack": 0, ".llvm_stackmaps": 0, ".mtmap": 0, ".mttypes": 0}
    # Even without maps, code addresses resolve to (skipped) functions.
    main = elf.symbol(plain, "main")
    f = m.function_at(main.addr)
    assert f.name == "main" and f.status == "skipped" and f.reason == SKIPPED_NO_MTMAP


def _plain(built) -> str:
    p = built["dir"] / "plain"
    if not p.exists():
        mg.run([mg.tool("clang-22"), "-O1", "-o", str(p), "-x", "c", "-"], input="int main(void){return 0;}")
    return str(p)


def test_missing_and_not_elf(tmp_path):
    with pytest.raises(elf.NoSuchFile):
        BinaryMaps.load(str(tmp_path / "nope"))
    t = tmp_path / "text"
    t.write_text("hello\n")
    with pytest.raises(BadData, match="not an ELF file"):
        BinaryMaps.load(str(t))
    e = tmp_path / "trunc"
    e.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9))
    with pytest.raises(BadData):
        BinaryMaps.load(str(e))


def test_corrupt_section_in_real_elf(built, tmp_path):
    """A corrupted .llvm_stackmaps inside a real ELF: BadData naming the section and offset."""
    data = bytearray(elf.section_bytes(built["full"], ".llvm_stackmaps"))
    data[0] = 7
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    bad = tmp_path / "bad"
    mg.run([mg.tool("llvm-objcopy-22"), "--update-section", f".llvm_stackmaps={tmp_path / 'bad.bin'}",
            built["full"], str(bad)])
    with pytest.raises(BadData) as ei:
        BinaryMaps.load(str(bad))
    assert str(ei.value).startswith(f"{bad}: .llvm_stackmaps+0x0: stack map version 7")


# --------------------------------------------------------------- ELF helpers

def test_elf_symbols_agree_with_nm(built):
    nm = mg.tool("llvm-nm-22")
    if not nm:
        pytest.skip("needs llvm-nm-22")
    out = mg.run([nm, "--defined-only", "-S", built["exe"]]).stdout
    want = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4:
            want[p[3]] = (int(p[0], 16), int(p[1], 16))
    got = {s.name: (s.addr, s.size) for s in elf.symbols(built["exe"])}
    for name in ("main", "plain_c", "two_calls", "kept", "tls_node", "consume"):
        assert got[name] == want[name], name
    assert elf.symbol_address(built["exe"], "main") == want["main"][0]
    assert elf.symbol_address(built["exe"], "no_such_symbol") is None
    s = elf.symbol_at(built["exe"], want["plain_c"][0] + 2)
    assert s is not None and s.name == "plain_c"
    assert elf.symbol(built["exe"], "tls_node").type == "tls"


def test_build_id_tls_pie(built, tmp_path):
    readelf = mg.tool("llvm-readelf-22")
    if not readelf:
        pytest.skip("needs llvm-readelf-22")
    notes = mg.run([readelf, "-n", built["exe"]]).stdout
    bid = re.search(r"Build ID: ([0-9a-f]+)", notes).group(1)
    assert elf.build_id(built["exe"]) == bid
    segs = mg.run([readelf, "-lW", built["exe"]]).stdout
    m = re.search(r"^\s*TLS\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+\S+\s+(0x[0-9a-f]+)",
                  segs, re.M)
    assert elf.tls_segment(built["exe"]) == (int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16))
    assert elf.tls_segment(_plain({"dir": tmp_path})) is None
    assert not elf.is_pie(built["exe"])
    pie = tmp_path / "pie"
    mg.run([mg.tool("clang-22"), "-fPIE", "-pie", "-o", str(pie), "-x", "c", "-"], input="int main(void){return 0;}")
    assert elf.is_pie(str(pie))
    assert not elf.is_pie("/lib/x86_64-linux-gnu/libc.so.6") if Path("/lib/x86_64-linux-gnu/libc.so.6").exists() else True


def test_debug_file_for_libc():
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    if not Path(libc).exists():
        pytest.skip("no glibc at the Debian path")
    bid = elf.build_id(libc)
    assert bid and len(bid) == 40
    want = Path(f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug")
    if not want.exists():
        assert elf.debug_file_for(libc) is None
        pytest.skip("libc6-dbg is not installed")
    dbg = elf.debug_file_for(libc)
    assert dbg == str(want)
    assert elf.symbol_address(dbg, "main_arena") is not None


# --------------------------------------------------------- the on-disk cache
def _same_maps(a: BinaryMaps, b: BinaryMaps) -> None:
    assert sorted(a.records) == sorted(b.records)
    assert {t: (i.name, i.size, i.slots) for t, i in a.types.items()} == \
           {t: (i.name, i.size, i.slots) for t, i in b.types.items()}
    assert [(f.name, f.address, f.size, f.status) for f in a.functions] == \
           [(f.name, f.address, f.size, f.status) for f in b.functions]
    assert [(g.name, g.address) for g in a.globals] == [(g.name, g.address) for g in b.globals]


def test_decoded_maps_cached_on_disk(built, tmp_path, monkeypatch):
    """Decoded maps are kept by build-id (0600 files in a 0700 directory) and
    give the same answer; a corrupted or truncated entry is ignored and rebuilt."""
    import os
    import pickle
    from mappedtrace.formats import maps_cache
    monkeypatch.setenv("MAPPEDTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(maps_cache, "_MEMO", {})
    path = built["full"]
    want = BinaryMaps.load(path)
    entry = maps_cache.cache_path(path)
    assert entry is not None and elf.build_id(path) in entry.name and not entry.exists()
    _same_maps(maps_cache.load_cached(path), want)
    assert entry.exists() and entry.stat().st_mode & 0o777 == 0o600
    assert entry.parent.stat().st_mode & 0o777 == 0o700
    assert maps_cache.load_cached(path) is maps_cache.load_cached(path)     # memo within a process
    for damage in (b"garbage" * 10, entry.read_bytes()[:100], pickle.dumps({"not": "maps"})):
        entry.write_bytes(damage)
        monkeypatch.setattr(maps_cache, "_MEMO", {})
        _same_maps(maps_cache.load_cached(path), want)
        assert isinstance(pickle.loads(entry.read_bytes()), BinaryMaps)     # rebuilt
    # served from the entry: a marker put into it comes back
    bm = pickle.loads(entry.read_bytes())
    bm.warnings.append("from the cache")
    entry.write_bytes(pickle.dumps(bm))
    monkeypatch.setattr(maps_cache, "_MEMO", {})
    assert "from the cache" in maps_cache.load_cached(path).warnings
    # a binary without maps or without a build-id is not cached
    os.chmod(entry.parent, 0o700)
    plain = _plain(built)
    maps_cache.load_cached(plain)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]


def test_maps_cache_is_bounded(tmp_path, monkeypatch):
    """The least recently used entries go beyond MAX_ENTRIES."""
    import os
    from mappedtrace.formats import maps_cache
    d = tmp_path / "maps"
    d.mkdir()
    for i in range(5):
        (d / f"e{i}.pickle").write_bytes(b"x" * 10)
        os.utime(d / f"e{i}.pickle", (1000 + i, 1000 + i))
    monkeypatch.setattr(maps_cache, "MAX_ENTRIES", 3)
    maps_cache._trim(d)
    assert sorted(p.name for p in d.iterdir()) == ["e2.pickle", "e3.pickle", "e4.pickle"]
