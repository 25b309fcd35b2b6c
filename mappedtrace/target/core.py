"""Snapshot files: ELF core files with a MappedTrace note (DESIGN step 4).

:func:`write_core` writes a captured target as an ordinary Linux x86-64 core
file, so gdb and lldb open it as they open a kernel core dump:

* ``ET_CORE``; one ``PT_NOTE``; one ``PT_LOAD`` per captured range and one
  with ``p_filesz = 0`` per range not captured (read-only file-backed
  mappings, whose bytes are in the files named by ``NT_FILE``);
* notes in kernel order: per thread ``NT_PRSTATUS`` (the first thread also
  followed by ``NT_PRPSINFO``, ``NT_AUXV``, ``NT_FILE``), ``NT_PRFPREG`` and
  ``NT_X86_XSTATE`` (owner ``LINUX``, the XSAVE area in Intel's layout:
  :mod:`~mappedtrace.target.xsave`); once ``NT_X86_XSAVE_LAYOUT`` describing
  that layout; last the MappedTrace note.

The MappedTrace note (owner ``"MAPPEDTRACE"``, type :data:`NT_MAPPEDTRACE`)
holds a UTF-8 JSON object, versioned::

    {"format": "mappedtrace-snapshot", "version": 1,
     "pid": int, "exe": str, "backend": "ptrace"|"lldb", "mode": "stop-copy"|"fork",
     "pause_ns": int, "captured_bytes": int, "was_stopped": bool,
     "threads":  [{"tid": int, "name": str, "settle": str, "settle_steps": int}],
     "mappings": [[start, end, perms, offset, inode, path]],
     "binaries": [{"path": str, "build_id": hex str | ""}],
     "warnings": [str]}

Readers accept versions 1..:data:`NOTE_VERSION`.  :func:`open_core` reads
such a file back (or any Linux x86-64 core, e.g. from ``gcore``, without the
note) as a :class:`~mappedtrace.target.base.Target`; every offset and size
in the file is checked, and a malformed file raises
:class:`~mappedtrace.errors.BadData` naming the offset.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Iterable

from .base import Mapping, Target, ThreadState, USER_REGS
from .capture import PAGE, CapturedTarget, Piece, wants_copy
from . import xsave
from .live import ThreadSnapshot
from ..binreader import Cursor
from ..errors import BadData, MappedTraceError, PermissionProblem, UnsupportedVersion
from ..fileio import not_regular, open_regular, write_private

NOTE_OWNER = "MAPPEDTRACE"
NT_MAPPEDTRACE = 0x4D54
NOTE_VERSION = 1

# <elf.h>
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4
NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45
NT_SIGINFO = 0x53494749
NT_X86_XSTATE = 0x202
NT_X86_XSAVE_LAYOUT = xsave.NT_X86_XSAVE_LAYOUT

#: Elf64_Ehdr: ident, type, machine, version, entry, phoff, shoff, flags,
#: ehsize, phentsize, phnum, shentsize, shnum, shstrndx
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
#: Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align
PHDR = struct.Struct("<IIQQQQQQ")
NHDR = struct.Struct("<III")        # namesz, descsz, type
#: struct elf_prstatus (x86-64, 336 bytes): si_signo, si_code, si_errno, cursig,
#: sigpend, sighold, pid, ppid, pgrp, sid, 4 × timeval, pr_reg, fpvalid
PRSTATUS = struct.Struct("<iiih2xQQiiii16s16s16s16s216si4x")
PRSTATUS_REG_OFF = 112
#: struct elf_prpsinfo (x86-64, 136 bytes)
PRPSINFO = struct.Struct("<cccc4xQIIiiii16s80s")
FPREGS_SIZE = 512
_MAX_NOTES = 1 << 20


def _note(owner: str, ntype: int, desc: bytes) -> bytes:
    name = owner.encode() + b"\0"
    return (NHDR.pack(len(name), len(desc), ntype) + name + bytes(-len(name) % 4)
            + desc + bytes(-len(desc) % 4))


def _perm_flags(perms: str) -> int:
    return ((PF_R if perms[:1] == "r" else 0) | (PF_W if perms[1:2] == "w" else 0)
            | (PF_X if perms[2:3] == "x" else 0))


def build_id(path: str) -> str:
    """The GNU build-id of an ELF file as hex, or "" (never raises for a bad file)."""
    try:
        with open_regular(path) as f:
            head = f.read(64)
            c = Cursor(head, f"{path}: ELF header")
            e = c.unpack(EHDR)
            if e[0][:4] != b"\x7fELF" or e[9] != PHDR.size or e[10] > 256:
                return ""
            f.seek(e[5])
            ph = f.read(e[10] * PHDR.size)
            for i in range(len(ph) // PHDR.size):
                p = PHDR.unpack_from(ph, i * PHDR.size)
                if p[0] != PT_NOTE or p[5] > 1 << 16:
                    continue
                f.seek(p[2])
                for owner, ntype, desc, _ in _iter_notes(Cursor(f.read(p[5]), path)):
                    if owner == "GNU" and ntype == 3:
                        return desc.hex()
    except (OSError, MappedTraceError):
        return ""
    return ""


def _iter_notes(c: Cursor):
    """(owner, type, desc, offset) of every note in ``c``; raises BadData on overrun."""
    for _ in range(_MAX_NOTES):
        if c.remaining < NHDR.size:
            return
        at = c.pos
        namesz, descsz, ntype = c.unpack(NHDR, "note header")
        name = c.bytes(namesz, "note name")
        c.align(4)
        desc = c.bytes(descsz, "note descriptor")
        c.align(4)
        yield name.rstrip(b"\0").decode("utf-8", "replace"), ntype, desc, at
    raise c.error(f"more than {_MAX_NOTES} notes")


# --- writing ---------------------------------------------------------------

def _proc_info(target: Target) -> dict:
    m = target.meta
    return {"ppid": m.get("ppid", 0), "pgrp": m.get("pgrp", 0), "sid": m.get("sid", 0),
            "uid": m.get("uid", 0), "gid": m.get("gid", 0),
            "cmdline": m.get("cmdline", target.exe), "comm": m.get("comm", os.path.basename(target.exe))}


def _prstatus(t: ThreadState, info: dict, pid: int) -> bytes:
    return PRSTATUS.pack(0, 0, 0, 0, 0, 0, t.tid, info["ppid"] if t.tid == pid else pid,
                         info["pgrp"], info["sid"], b"", b"", b"", b"",
                         t.pack_regs(), 1 if t.fpregs else 0)


def _prpsinfo(target: Target, info: dict) -> bytes:
    return PRPSINFO.pack(b"\0", b"R", b"\0", b"\0", 0, info["uid"] & 0xFFFFFFFF, info["gid"] & 0xFFFFFFFF,
                         target.pid or 0, info["ppid"], info["pgrp"], info["sid"],
                         info["comm"].encode()[:15], info["cmdline"].encode()[:79])


def _nt_file(mappings: list[Mapping]) -> bytes:
    files = [m for m in mappings if m.path.startswith("/")]
    head = struct.pack("<QQ", len(files), PAGE)
    ents = b"".join(struct.pack("<QQQ", m.start, m.end, m.offset // PAGE) for m in files)
    names = b"".join(m.path.encode() + b"\0" for m in files)
    return head + ents + names


def note_payload(target: Target) -> dict:
    """The MappedTrace note's JSON object for ``target`` (see the module doc)."""
    paths = sorted({m.path for m in target.mappings if m.path.startswith("/")})
    return {
        "format": "mappedtrace-snapshot", "version": NOTE_VERSION,
        "pid": target.pid, "exe": target.exe,
        "backend": target.meta.get("backend", ""), "mode": target.meta.get("mode", ""),
        "pause_ns": int(target.meta.get("pause_ns", 0)),
        "captured_bytes": int(target.meta.get("captured_bytes", 0)),
        "was_stopped": bool(target.meta.get("was_stopped", False)),
        "threads": [{"tid": t.tid, "name": t.name, "settle": t.settle,
                     "settle_steps": t.settle_steps} for t in target.threads],
        "mappings": [[m.start, m.end, m.perms, m.offset, m.inode, m.path] for m in target.mappings],
        "binaries": [{"path": p, "build_id": build_id(p)} for p in paths],
        "warnings": list(target.warnings)[:100],
        # a capture through a debug server: its address and how each binary was found
        **({"remote": {"address": target.meta["remote"],
                       "binaries": target.meta.get("binaries_found", [])}}
           if target.meta.get("remote") else {}),
    }


def _pieces_of(target: Target) -> list[Piece]:
    if isinstance(target, CapturedTarget):
        return target.pieces
    # any other Target (e.g. a LiveTarget): copy what a capture would copy, through read()
    from .live import anon_file_ranges
    anon = anon_file_ranges(target.pid) if target.pid else set()
    out = []
    for m in target.mappings:
        if wants_copy(m) or (m.readable and (m.start, m.end) in anon):
            try:
                out.append(Piece(m.start, m.size, memoryview(target.read(m.start, m.size))))
                continue
            except MappedTraceError:
                pass
        out.append(Piece(m.start, m.size, None))
    return out


def write_core(target: Target, path: str) -> int:
    """Write ``target`` as an ELF core file at ``path`` (mode 0600, replaced atomically).

    :returns: the number of bytes written.
    """
    if path == "-":
        raise MappedTraceError("a snapshot is not written to stdout", hint="name a file with -o FILE")
    pieces = _pieces_of(target)
    threads = sorted(target.threads, key=lambda t: (t.tid != target.pid, t.tid))
    info = _proc_info(target)
    notes = bytearray()
    xlayouts: list = []
    for i, t in enumerate(threads):
        notes += _note("CORE", NT_PRSTATUS, _prstatus(t, info, target.pid or 0))
        if i == 0:
            notes += _note("CORE", NT_PRPSINFO, _prpsinfo(target, info))
            if target.auxv:
                notes += _note("CORE", NT_AUXV, target.auxv)
            notes += _note("CORE", NT_FILE, _nt_file(target.mappings))
        if t.fpregs:
            notes += _note("CORE", NT_PRFPREG, t.fpregs[:FPREGS_SIZE])
        xs = getattr(t, "xstate", None)
        if xs:
            layout = getattr(t, "xstate_layout", None)
            if not layout:          # the CPU's layout (a live thread): Intel's for gdb
                xs, layout = xsave.to_standard(xs)
            xlayouts.append(layout)
            notes += _note("LINUX", NT_X86_XSTATE, xs)
    xlayout = next((x for x in xlayouts if x), None)
    if xlayout:     # once per process, after the threads, as the kernel writes it
        notes += _note("LINUX", NT_X86_XSAVE_LAYOUT, xsave.layout_note(xlayout))
    notes += _note(NOTE_OWNER, NT_MAPPEDTRACE, json.dumps(note_payload(target)).encode())

    nph = 1 + len(pieces)
    if nph >= 0xFFFF:
        raise MappedTraceError(f"{len(pieces)} memory ranges are more than an ELF core's 65534 program headers")
    off = EHDR.size + nph * PHDR.size
    note_off = off
    off += len(notes)
    phdrs = [PHDR.pack(PT_NOTE, 0, note_off, 0, 0, len(notes), 0, 4)]
    layout = []
    for p in pieces:
        m = target.mapping_at(p.start)
        flags = _perm_flags(m.perms) if m else PF_R
        if p.data is not None:
            off = (off + PAGE - 1) & ~(PAGE - 1)
            phdrs.append(PHDR.pack(PT_LOAD, flags, off, p.start, 0, p.size, p.size, PAGE))
            layout.append((off, p.data))
            off += p.size
        else:
            phdrs.append(PHDR.pack(PT_LOAD, flags, off, p.start, 0, 0, p.size, PAGE))
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = EHDR.pack(ident, ET_CORE, EM_X86_64, 1, 0, EHDR.size, 0, 0, EHDR.size,
                     PHDR.size, nph, 0, 0, 0)
    with write_private(path, binary=True, buffering=1 << 20) as f:   # complete or absent under its name
        f.write(ehdr)
        f.write(b"".join(phdrs))
        f.write(notes)
        pos = note_off + len(notes)
        for o, data in layout:
            if o > pos:
                f.write(bytes(o - pos))
            f.write(data)
            pos = o + len(data)
    return pos


# --- reading ---------------------------------------------------------------

class CoreTarget(CapturedTarget):
    """A snapshot file opened read-only (memory served from the mmapped file)."""

    path: str = ""

    def close(self) -> None:
        super().close()
        mm = getattr(self, "_mm", None)
        if mm is not None:
            self.pieces = []
            self._piece_starts = []
            try:
                mm.close()
            except BufferError:
                pass
            self._mm = None


def open_core(path: str) -> CoreTarget:
    """Open an ELF core file (a MappedTrace snapshot or any Linux x86-64 core).

    :returns: a :class:`CoreTarget` (threads with registers and settle
        states, mappings, auxv, ``read()`` from ``PT_LOAD`` data, ``meta``
        from the MappedTrace note).
    :raises BadData: not ELF, not a core, truncated or corrupted headers or notes.
    """
    try:
        f = open_regular(path, "the snapshot")   # a FIFO would block the open or the read forever
    except FileNotFoundError:
        raise MappedTraceError(f"{path}: no such file") from None
    except PermissionError:
        raise PermissionProblem(f"{path}: permission denied") from None
    except OSError as e:
        raise MappedTraceError(f"{path}: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < EHDR.size:
            raise BadData(path, 0, f"not an ELF core file: {size} bytes is shorter than an ELF header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(path, mm, size)
    except BaseException:
        try:
            mm.close()
        except BufferError:     # a view is still held by the traceback; GC closes it
            pass
        raise


def _parse(path: str, mm: mmap.mmap, size: int) -> CoreTarget:
    data = memoryview(mm)
    c = Cursor(mm[:EHDR.size], path)
    (ident, e_type, machine, _, _, phoff, _, _, _, phentsize, phnum, _, _, _) = c.unpack(EHDR, "ELF header")
    if ident[:4] != b"\x7fELF":
        raise BadData(path, 0, "not an ELF file (bad magic)")
    if ident[4] != 2 or ident[5] != 1:
        raise BadData(path, 4, f"not a 64-bit little-endian ELF file (class {ident[4]}, data {ident[5]})")
    if e_type != ET_CORE:
        raise BadData(path, 0x10, f"not a core file (e_type {e_type}, expected {ET_CORE})")
    if machine != EM_X86_64:
        raise BadData(path, 0x12, f"core file for machine {machine}; only x86-64 ({EM_X86_64}) is supported")
    if phentsize != PHDR.size:
        raise BadData(path, 0x36, f"program header size {phentsize}, expected {PHDR.size}")
    if phnum == 0 or phoff + phnum * PHDR.size > size:
        raise BadData(path, 0x20, f"{phnum} program headers at {phoff:#x} do not fit in the {size}-byte file")
    pc = Cursor(mm[phoff:phoff + phnum * PHDR.size], path, phoff)
    loads, notes = [], []
    for i in range(phnum):
        at = phoff + i * PHDR.size
        p_type, p_flags, p_off, p_vaddr, _, p_filesz, p_memsz, _ = pc.unpack(PHDR, "program header")
        if p_type not in (PT_LOAD, PT_NOTE):
            continue
        if p_off + p_filesz > size:
            raise BadData(path, at, f"program header {i}: data [{p_off:#x}, +{p_filesz:#x}) runs past "
                          f"the end of the file ({size:#x} bytes): the file is truncated")
        if p_type == PT_NOTE:
            notes.append((p_off, p_filesz))
            continue
        if p_filesz > p_memsz or p_vaddr + p_memsz >= 1 << 64:
            raise BadData(path, at, f"program header {i}: file size {p_filesz:#x} > memory size "
                          f"{p_memsz:#x} or range past 2^64")
        loads.append((p_vaddr, p_memsz, p_off, p_filesz, p_flags, at))
    if not notes:
        raise BadData(path, phoff, "no PT_NOTE program header: not a process core file")

    threads: list[ThreadSnapshot] = []
    auxv = b""
    files: list[tuple[int, int, int, str]] = []
    note: dict | None = None
    note_at = 0
    psinfo_name = ""
    xlayout: list[tuple[int, int, int]] = []
    for n_off, n_size in notes:
        for owner, ntype, desc, at in _iter_notes(Cursor(mm[n_off:n_off + n_size], f"{path}: PT_NOTE", n_off)):
            where = n_off + at
            if owner == "CORE" and ntype == NT_PRSTATUS:
                if len(desc) != PRSTATUS.size:
                    raise BadData(path, where, f"NT_PRSTATUS of {len(desc)} bytes, expected {PRSTATUS.size}")
                tid = struct.unpack_from("<i", desc, 32)[0]
                regs = ThreadState.unpack_regs(desc[PRSTATUS_REG_OFF:PRSTATUS_REG_OFF + USER_REGS.size])
                threads.append(ThreadSnapshot(tid, regs))
            elif owner == "CORE" and ntype == NT_PRFPREG:
                if not threads or len(desc) != FPREGS_SIZE:
                    raise BadData(path, where, f"NT_PRFPREG of {len(desc)} bytes "
                                  f"{'before any NT_PRSTATUS' if not threads else f'(expected {FPREGS_SIZE})'}")
                threads[-1].fpregs = bytes(desc)
            elif owner == "LINUX" and ntype == NT_X86_XSTATE:
                if threads:
                    threads[-1].xstate = bytes(desc)
            elif owner == "LINUX" and ntype == NT_X86_XSAVE_LAYOUT:
                c = Cursor(desc, f"{path}: NT_X86_XSAVE_LAYOUT", where)
                c.check_count(len(desc) // xsave.XFEAT.size, xsave.XFEAT.size, "XSAVE layout record")
                xlayout = [(ty, n, off) for ty, n, off, _ in
                           (c.unpack(xsave.XFEAT, "XSAVE layout record") for _ in range(len(desc) // xsave.XFEAT.size))]
            elif owner == "CORE" and ntype == NT_AUXV:
                auxv = bytes(desc)
            elif owner == "CORE" and ntype == NT_PRPSINFO and len(desc) == PRPSINFO.size:
                psinfo_name = PRPSINFO.unpack(desc)[11].split(b"\0")[0].decode("utf-8", "replace")
            elif owner == "CORE" and ntype == NT_FILE:
                files = _parse_nt_file(path, where, desc)
            elif owner == NOTE_OWNER and ntype == NT_MAPPEDTRACE:
                note, note_at = _parse_note(path, where, desc), where
    if not threads:
        raise BadData(path, notes[0][0], "no NT_PRSTATUS note: the core has no threads")
    for t in threads:
        t.xstate_layout = list(xlayout)

    pieces = []
    for vaddr, memsz, off, filesz, _, _ in loads:
        if filesz:
            pieces.append(Piece(vaddr, filesz, data[off:off + filesz]))
        if memsz > filesz:
            pieces.append(Piece(vaddr + filesz, memsz - filesz, None))
    meta: dict = {"backend": "core", "path": path}
    warnings: list[str] = []
    if note is not None:
        mappings = _note_mappings(path, note_at, note)
        by_tid = {}
        for t in note.get("threads", []):
            if isinstance(t, dict) and isinstance(t.get("tid"), int):
                by_tid[t["tid"]] = t
        for t in threads:
            n = by_tid.get(t.tid, {})
            t.settle = str(n.get("settle", t.settle))
            t.settle_steps = int(n.get("settle_steps", 0)) if isinstance(n.get("settle_steps", 0), int) else 0
            t.name = str(n.get("name", ""))
        for key in ("backend", "mode", "pause_ns", "captured_bytes", "was_stopped", "binaries", "remote"):
            if key in note:
                meta[key] = note[key]
        meta["snapshot_backend"] = meta.get("backend")
        meta["format_version"] = note["version"]
        warnings += [str(w) for w in note.get("warnings", [])][:100]
        exe = str(note.get("exe", ""))
        pid = note.get("pid") if isinstance(note.get("pid"), int) else threads[0].tid
    else:
        mappings = _load_mappings(loads, files)
        exe = files[0][3] if files else psinfo_name
        pid = threads[0].tid
        warnings.append("no MappedTrace note: settle states and capture metadata unknown")
    devices = _check_named_files(path, note_at if note is not None else notes[0][0], exe, mappings,
                                 meta.get("binaries"))
    ct = CoreTarget(pid=pid, threads=threads, mappings=mappings, auxv=auxv, exe=exe,
                    pieces=pieces, meta=meta, warnings=warnings)
    ct.untrusted_files.update(devices)
    for b in meta.get("binaries", []) if isinstance(meta.get("binaries"), list) else []:
        # bytes not in the snapshot are read from the mapped files: only from the same build
        if isinstance(b, dict) and isinstance(b.get("path"), str) and b.get("build_id"):
            now = build_id(b["path"])
            if now != b["build_id"]:
                ct.untrusted_files.add(b["path"])
                ct.warnings.append(f"{b['path']}: " + ("missing" if not now else "build-id differs from the snapshot's")
                                   + "; its read-only bytes are not available")
    ct.path = path
    ct._mm = mm
    return ct


def _check_named_files(path: str, where: int, exe: str, mappings: list[Mapping], binaries) -> set[str]:
    """Refuse a snapshot that names a FIFO, a socket or a directory as its
    executable or as a mapped file: no process maps one (mmap fails on them),
    and opening or reading one could block forever.  A mapped device is real
    (``/dev/zero``, a GPU): its path is returned, so it is never read from disk.
    """
    named = {m.path for m in mappings if m.path.startswith("/")}
    if isinstance(binaries, list):
        named |= {b["path"] for b in binaries if isinstance(b, dict) and isinstance(b.get("path"), str)}
    devices = set()
    for p in ([exe] if exe.startswith("/") else []) + sorted(named):
        why = not_regular(p)
        if why is None:
            continue
        if p != exe and why in ("a character device", "a block device"):
            devices.add(p)
            continue
        what = "executable" if p == exe else "mapped file"
        raise BadData(path, where, f"the snapshot names {why} as its {what}: {p}",
                      hint="only regular files are read; was the file replaced since the snapshot?")
    return devices


def _parse_nt_file(path: str, where: int, desc: bytes) -> list[tuple[int, int, int, str]]:
    c = Cursor(desc, f"{path}: NT_FILE", where)
    count, page = c.u64(), c.u64()
    c.check_count(count, 24, "NT_FILE entry")
    ents = [c.unpack(struct.Struct("<QQQ"), "NT_FILE entry") for _ in range(count)]
    names = c.data[c.pos:].split(b"\0")
    if len(names) < count + (1 if count else 0):
        raise c.error(f"NT_FILE lists {count} mappings but only {len(names) - 1} names")
    return [(s, e, o * page, names[i].decode("utf-8", "replace")) for i, (s, e, o) in enumerate(ents)]


def _parse_note(path: str, where: int, desc: bytes) -> dict:
    try:
        note = json.loads(bytes(desc).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadData(path, where, f"MappedTrace note is not valid JSON ({e})") from None
    except RecursionError:      # json's decoder recurses once per nesting level
        raise BadData(path, where, "MappedTrace note is nested too deeply to be ours") from None
    if not isinstance(note, dict) or note.get("format") != "mappedtrace-snapshot":
        raise BadData(path, where, "MappedTrace note has no 'format': 'mappedtrace-snapshot'")
    v = note.get("version")
    if not isinstance(v, int) or not 1 <= v <= NOTE_VERSION:
        raise UnsupportedVersion(path, where, f"MappedTrace note version {v!r} is not supported; "
                                 f"this build reads versions 1–{NOTE_VERSION}")
    return note


def _note_mappings(path: str, where: int, note: dict) -> list[Mapping]:
    out = []
    raw = note.get("mappings")
    if not isinstance(raw, list):
        raise BadData(path, where, "MappedTrace note: 'mappings' is not a list")
    prev_end = 0
    for i, m in enumerate(raw):
        # every number a u64 (addresses end below 2^64), ranges in order and disjoint, as in /proc/PID/maps
        if (not isinstance(m, list) or len(m) != 6
                or not all(isinstance(x, int) and 0 <= x < 1 << 64 for x in (m[0], m[1], m[3], m[4]))
                or not isinstance(m[2], str) or not isinstance(m[5], str) or not prev_end <= m[0] <= m[1]):
            raise BadData(path, where, f"MappedTrace note: mapping {i} is malformed, out of order or past "
                          f"2^64: {str(m)[:80]}")
        prev_end = m[1]
        out.append(Mapping(m[0], m[1], m[2], m[3], m[5], m[4]))
    return out


def _load_mappings(loads: Iterable[tuple], files: list[tuple[int, int, int, str]]) -> list[Mapping]:
    """Mappings of a core without our note: PT_LOADs, named by NT_FILE."""
    named = {s: (e, o, p) for s, e, o, p in files}
    out = []
    for vaddr, memsz, _, _, flags, _ in loads:
        perms = ("r" if flags & PF_R else "-") + ("w" if flags & PF_W else "-") + ("x" if flags & PF_X else "-") + "p"
        e, o, p = named.get(vaddr, (0, 0, ""))
        out.append(Mapping(vaddr, vaddr + memsz, perms, o if p else 0, p))
    return out
