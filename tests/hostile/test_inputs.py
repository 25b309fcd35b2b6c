"""Hostile input files: non-regular files, corrupted and forged snapshots (issue #12 items 2, 3).

Each bad file gets a one-line error (``BadData``: the file and the offset),
exit code 2, within the subprocess timeout; never a hang, never exit 70.
Malformed snapshots are generated here from a real one: the reader's own
writer (:func:`write_core`) writes forged notes, then bytes are truncated,
flipped and overwritten with huge counts.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import struct
import sys
from pathlib import Path

import pytest

from _hostile import mt, one_line_error, server_core
from mappedtrace.errors import BadData, MappedTraceError
from mappedtrace.target import core as core_mod
from mappedtrace.target.core import EHDR, PHDR, open_core, write_core

pytestmark = pytest.mark.timeout(300)


# --- files that are not regular files -------------------------------------------

@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("cmd", [["leaks", "{}"], ["graph", "{}", "-o", "{out}/g.json"], ["maps", "{}"]])
@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_non_regular_file_as_input(cmd: list[str], kind: str, fifo: Path, tmp_path: Path) -> None:
    path = {"fifo": str(fifo), "directory": str(tmp_path), "device": "/dev/zero"}[kind]
    out = tmp_path / "out"
    out.mkdir()
    r = mt(*(a.format(path, out=out) for a in cmd), timeout=30)
    line = one_line_error(r, 2)
    assert "regular file" in line or "directory" in line, line
    assert not any(out.iterdir())


def _rewrite(src: Path, dst: Path, *, exe: str | None = None, mapped: str | None = None,
             note=None) -> None:
    """``src`` written again by write_core, with the note naming ``exe`` as the
    executable, ``mapped`` instead of libc's path, or ``note(dict) -> object``
    as the whole note."""
    ct = open_core(str(src))
    try:
        if exe is not None:
            ct.exe = exe
        if mapped is not None:
            lib = next(m.path for m in ct.mappings if os.path.basename(m.path).startswith("libc.so"))
            ct.mappings = [dataclasses.replace(m, path=mapped) if m.path == lib else m for m in ct.mappings]
        orig = core_mod.note_payload
        if note is not None:
            core_mod.note_payload = lambda t: note(orig(t))
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(10000)       # json.dumps of the 1 200-deep note (the reader keeps its limit)
        try:
            write_core(ct, str(dst))
        finally:
            core_mod.note_payload = orig
            sys.setrecursionlimit(limit)
    finally:
        ct.close()


@pytest.mark.parametrize("role", ["exe", "mapped"])
@pytest.mark.parametrize("cmd", ["leaks", "graph"])
def test_snapshot_naming_a_fifo(role: str, cmd: str, fifo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "fifo.core"
    _rewrite(server_core(), bad, **{role: str(fifo)})
    args = [cmd, str(bad)] + (["-o", str(tmp_path / "g.json")] if cmd == "graph" else [])
    line = one_line_error(mt(*args, timeout=60), 2, says="a FIFO")
    assert str(bad) in line and str(fifo) in line
    assert not (tmp_path / "g.json").exists()


def test_snapshot_mapping_a_device_is_read_without_it(tmp_path: Path) -> None:
    """A mapped device is real (a GPU, /dev/zero): the snapshot opens, the
    device is never read from disk."""
    bad = tmp_path / "dev.core"
    _rewrite(server_core(), bad, mapped="/dev/zero")
    c = open_core(str(bad))
    try:
        assert "/dev/zero" in c.untrusted_files
    finally:
        c.close()


# --- forged notes ----------------------------------------------------------------

def _deep(n: int):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


def _set(key: str, value):
    def f(d: dict):
        d[key] = value
        return d
    return f


def _mapping(i: int, j: int, value):
    def f(d: dict):
        d["mappings"][i][j] = value
        return d
    return f


def _swap_mappings(d: dict):
    d["mappings"][0], d["mappings"][1] = d["mappings"][1], d["mappings"][0]
    return d


#: notes that must be refused (name → note transformation)
BAD_NOTES = {
    "end-2^64": _mapping(-1, 1, 1 << 64),
    "start-past-end": _mapping(0, 0, 1 << 63),
    "negative-offset": _mapping(0, 3, -4096),
    "inode-2^70": _mapping(0, 4, 1 << 70),
    "path-not-str": _mapping(0, 5, 7),
    "overlapping": _swap_mappings,
    "nested-1200": _set("warnings", _deep(1200)),
    "mappings-not-list": _set("mappings", {"a": 1}),
    "version-9": _set("version", 9),
    "not-an-object": lambda d: [d],
}

#: notes whose odd fields are ignored or replaced: still a report, never a crash
ODD_NOTES = {
    "threads-garbage": _set("threads", [None, 1, {"tid": "x"}, {"tid": 1 << 80, "settle_steps": "many"}]),
    "binaries-garbage": _set("binaries", [None, {"path": 5}, {"path": "/nonexistent", "build_id": "zz"}]),
    "pid-string": _set("pid", "one"),
    "pause-huge": _set("pause_ns", 1 << 90),
    "warnings-many": _set("warnings", ["w"] * 100000),
    "exe-empty": _set("exe", ""),
}


@pytest.mark.parametrize("name", list(BAD_NOTES))
def test_forged_note_is_refused(name: str, tmp_path: Path) -> None:
    bad = tmp_path / f"{name}.core"
    _rewrite(server_core(), bad, note=BAD_NOTES[name])
    line = one_line_error(mt("leaks", str(bad)), 2)
    assert f"{bad}+0x" in line, line          # the file and the note's offset


@pytest.mark.parametrize("name", list(ODD_NOTES))
def test_odd_note_gives_a_report_or_one_line(name: str, tmp_path: Path) -> None:
    bad = tmp_path / f"{name}.core"
    _rewrite(server_core(), bad, note=ODD_NOTES[name])
    r = mt("leaks", str(bad), "--json", str(tmp_path / "l.json"))
    if r.returncode in (0, 23):
        json.loads((tmp_path / "l.json").read_text())
    else:
        one_line_error(r, 2)


# --- corrupted bytes, in process (hundreds of variants) ------------------------

def _analyse_or_bad_data(path: str) -> str:
    """open_core + the whole analysis + the JSON report: "ok", or the class of
    the MappedTraceError raised; anything else propagates (a test failure)."""
    from mappedtrace.reporters import leaks_report
    from mappedtrace.session import analyse
    try:
        c = open_core(path)
    except MappedTraceError as e:       # the file reader names the file and the offset
        assert "\n" not in e.message and isinstance(e, BadData) and e.message.startswith(path), e.message
        return type(e).__name__
    try:
        with c:
            a = analyse(c)
            leaks_report.to_json(a.leaks, io.StringIO())
        return "ok"
    except MappedTraceError as e:       # bad data found later (a heap structure): says where in memory
        assert "\n" not in e.message, e.message
        return "later:" + type(e).__name__


def _variants(raw: bytes, rng: random.Random):
    """(name, bytes) of malformed copies of the snapshot ``raw``."""
    phoff, phnum = struct.unpack_from("<Q", raw, 0x20)[0], struct.unpack_from("<H", raw, 0x38)[0]
    note_off, note_size = struct.unpack_from("<QQ", raw, phoff + 8)[0], struct.unpack_from("<Q", raw, phoff + 32)[0]
    head = note_off + note_size
    # truncations: inside the ELF header, the program headers, every note, the data
    for cut in sorted({0, 1, 63, EHDR.size, phoff + PHDR.size // 2, phoff + phnum * PHDR.size - 1,
                       *range(note_off, head, max(1, note_size // 40)), head + 1, len(raw) - 1}):
        yield f"cut@{cut:#x}", raw[:cut]
    # bit flips in the headers and notes
    for i in range(120):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(0, head)
            b[pos] ^= 1 << rng.randrange(8)
        yield f"flip{i}", bytes(b)
    # huge counts and sizes: phnum, every note header's namesz/descsz, NT_FILE's count
    for val in (0xFFFF, 0x8000):
        b = bytearray(raw)
        struct.pack_into("<H", b, 0x38, val)
        yield f"phnum={val:#x}", bytes(b)
    pos = note_off
    for k in range(400):
        if pos + 12 > head:
            break
        namesz, descsz, ntype = struct.unpack_from("<III", raw, pos)
        for field, val in ((0, 0xFFFFFFFF), (4, 0xFFFFFFF0), (4, descsz + 8)):
            b = bytearray(raw)
            struct.pack_into("<I", b, pos + field, val)
            yield f"note{k}+{field}={val:#x}", bytes(b)
        if ntype == 0x46494C45:     # NT_FILE: count, page size
            d = pos + 12 + ((namesz + 3) & ~3)
            for val in (1 << 63, (1 << 64) - 1, 0):
                b = bytearray(raw)
                struct.pack_into("<Q", b, d, val)
                yield f"nt_file.count={val:#x}", bytes(b)
            b = bytearray(raw)
            struct.pack_into("<Q", b, d + 8, 1 << 63)
            yield "nt_file.page=2^63", bytes(b)
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    # a PT_LOAD that ends at 2^64, one past the file's end
    for i in range(phnum):
        at = phoff + i * PHDR.size
        if struct.unpack_from("<I", raw, at)[0] == 1:
            b = bytearray(raw)
            struct.pack_into("<Q", b, at + 16, (1 << 64) - struct.unpack_from("<Q", raw, at + 40)[0])
            yield "load-at-2^64", bytes(b)
            b = bytearray(raw)
            struct.pack_into("<Q", b, at + 32, len(raw) * 4)
            yield "load-past-eof", bytes(b)
            break


def test_corrupted_snapshots_fuzz(tmp_path: Path) -> None:
    raw = server_core().read_bytes()
    rng = random.Random(12)
    seen: dict[str, int] = {}
    work = tmp_path / "fuzz.core"
    for name, data in _variants(raw, rng):
        work.write_bytes(data)
        got = _analyse_or_bad_data(str(work))
        seen[got] = seen.get(got, 0) + 1
    # the generator must really produce bad files, and the reader must notice
    assert seen.get("BadData", 0) + seen.get("UnsupportedVersion", 0) >= 100, seen


def test_corrupted_snapshots_on_the_command_line(tmp_path: Path) -> None:
    """A few of the same through the CLI: exit 2, one line naming file and offset."""
    raw = server_core().read_bytes()
    phoff = struct.unpack_from("<Q", raw, 0x20)[0]
    note_off = struct.unpack_from("<Q", raw, phoff + 8)[0]
    cases = {"truncated": raw[:phoff + 20], "note-size": raw[:note_off + 4] + b"\xff\xff\xff\x7f" + raw[note_off + 8:],
             "header-bits": raw[:0x20] + bytes(b ^ 0xFF for b in raw[0x20:0x28]) + raw[0x28:]}
    for name, data in cases.items():
        p = tmp_path / f"{name}.core"
        p.write_bytes(data)
        for cmd in (["leaks", str(p)], ["graph", str(p), "-o", str(tmp_path / "g.dot")]):
            line = one_line_error(mt(*cmd), 2)
            assert str(p) in line, line
    assert not (tmp_path / "g.dot").exists()


# --- hostile data inside the target ------------------------------------------------

def test_wild_pointers_are_counted_not_followed(tmp_path: Path) -> None:
    """Typed slots holding unmapped, kernel, freed, non-canonical and top-of-memory
    addresses: counted as dangling (the program says how many), never followed,
    the kept nodes not reported, the leaked one reported."""
    from conftest import MAPPEDTRACE, need
    import re
    import subprocess
    need("clang-22")
    exe = tmp_path / "wild_pointers"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O0", "-g", "-o", str(exe), str(Path(__file__).parent / "wild_pointers.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    js = tmp_path / "w.json"
    r = mt("run", "--json", str(js), "--", str(exe))
    assert r.returncode == 23 and "Traceback" not in r.stderr, r.stderr[-3000:]
    kept = {int(a, 16) for a in re.findall(r"^kept (0x[0-9a-f]+)$", r.stdout, re.M)}
    leak = {int(a, 16) for a in re.findall(r"^leak (0x[0-9a-f]+)$", r.stdout, re.M)}
    wild = int(re.search(r"^wild (\d+)$", r.stdout, re.M).group(1))
    rep = json.loads(js.read_text())
    assert {l["address"] for l in rep["leaks"]} == leak and kept and not kept & leak
    # every wild slot of a reachable (typed-scanned) node is counted; the leaked
    # node's own slot is not scanned typed
    assert rep["precision"]["dangling_pointers"] >= wild - 1


def test_live_process_mapping_data_files(tmp_path: Path) -> None:
    """A process that maps a file which is not ELF (glibc maps its gconv cache
    and locale archives so): `leaks PID` reads the binaries' maps, not that."""
    import subprocess
    from conftest import build_sample, run_mt
    exe = build_sample(Path(__file__).with_name("maps_data_file.c"), "-O0", tmp_path / "maps_data_file")
    data = tmp_path / "data.bin"
    data.write_bytes(b"not an ELF file at all " * 400)
    p = subprocess.Popen([exe, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready 1"
        js = tmp_path / "l.json"
        r = run_mt("leaks", str(p.pid), "--json", str(js))
        assert r.returncode == 23, r.stderr[-2000:]
        assert json.loads(js.read_text())["summary"]["leaked_objects"] == 1
    finally:
        p.stdin.close()
        p.wait(timeout=60)
