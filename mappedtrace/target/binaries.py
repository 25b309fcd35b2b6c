"""The target's binaries on the tracer's machine, found by GNU build-id.

A remote target (or a snapshot from another machine) maps files the tracer's
machine may not have, or has in another build.  Every analysis opens the
binaries by the paths in ``target.mappings``, so :func:`localize` rewrites
those paths to local files *with the same build-id*, found in this order:

1. ``--sysroot DIR``: ``DIR/<path>`` (a tree that mirrors the target's paths),
   then ``DIR/.build-id/xx/yyyy…`` (a build-id tree); then the same path on
   this machine (every candidate is checked by build-id);
2. the cache of earlier fetches, ``~/.cache/mappedtrace/binaries/<build-id>/<name>``;
3. debuginfod servers (``DEBUGINFOD_URLS``, space separated):
   ``GET URL/buildid/<build-id>/executable``;
4. the debug server's file access (``vFile:open/pread`` of the path), when it allows.

Files fetched (3, 4) are stored in the cache (directories 0700, files 0600)
under their own base name, so reports name modules as they would locally.
A binary found nowhere is a :class:`MissingBinary` error naming its
build-id and path.  A mapped ELF file without a build-id cannot be checked:
the same path on this machine is used, with a warning.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from .base import Target
from ..errors import MappedTraceError, TargetFault

#: Elf64_Ehdr fields used here: e_phoff (at 32), e_phentsize, e_phnum (at 54, 56)
_EH_PHOFF = struct.Struct("<Q")
_EH_PHNUM = struct.Struct("<HH")
_PHDR = struct.Struct("<IIQQQQQQ")      # type, flags, offset, vaddr, paddr, filesz, memsz, align
_NHDR = struct.Struct("<III")
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
#: bounds on what is read from target memory to find a build-id
MAX_PHNUM = 64
MAX_NOTES_BYTES = 4096
#: bound on one debuginfod download
MAX_DOWNLOAD = 1 << 30


class MissingBinary(MappedTraceError):
    """A binary the target maps is nowhere to be found by its build-id."""


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mappedtrace", "binaries")


def _local_build_id(path: str) -> str | None:
    from ..formats.elf import build_id
    try:
        return build_id(path)
    except (MappedTraceError, OSError):
        return None


def build_id_in_memory(target: Target, path: str) -> str | None | bool:
    """The build-id of the ELF file ``path`` as mapped in ``target`` (lower-case hex).

    :returns: the id; None for an ELF file without one; False when the
        mapping does not start with an ELF header (not a binary).
    """
    maps = [m for m in target.mappings if m.path == path and m.readable]
    head = next((m for m in maps if m.offset == 0), None)
    if head is None:
        return False
    try:
        eh = target.read(head.start, 64)
    except TargetFault:
        return False
    if eh[:4] != b"\x7fELF" or eh[4] != 2:
        return False
    (phoff,) = _EH_PHOFF.unpack_from(eh, 32)
    phentsize, phnum = _EH_PHNUM.unpack_from(eh, 54)
    if phentsize != _PHDR.size or not 0 < phnum <= MAX_PHNUM:
        return None

    def at(off: int, size: int) -> bytes | None:
        # a file offset, read where the file is mapped
        for m in maps:
            if m.offset <= off and off + size <= m.offset + m.size:
                return target.read(m.start + off - m.offset, size)
        return None

    try:
        ph = at(phoff, phentsize * phnum)
        if ph is None:
            return None
        for i in range(phnum):
            p_type, _, p_off, _, _, p_filesz, _, _ = _PHDR.unpack_from(ph, i * phentsize)
            if p_type != _PT_NOTE:
                continue
            notes = at(p_off, min(p_filesz, MAX_NOTES_BYTES))
            pos = 0
            while notes is not None and pos + _NHDR.size <= len(notes):
                namesz, descsz, ntype = _NHDR.unpack_from(notes, pos)
                name_at = pos + _NHDR.size
                desc_at = name_at + ((namesz + 3) & ~3)
                if desc_at + descsz > len(notes):
                    break
                if ntype == _NT_GNU_BUILD_ID and notes[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
                    return notes[desc_at:desc_at + descsz].hex()
                pos = desc_at + ((descsz + 3) & ~3)
    except TargetFault:
        return None
    return None


@dataclass
class BinaryFinder:
    """Finds a local copy of a target binary by build-id (see the module doc).

    :param sysroot: a tree mirroring the target's paths, or holding ``.build-id/``
    :param debuginfod: server URLs (default: ``DEBUGINFOD_URLS``)
    :param fetch_remote: reads a file of the target's machine (``vFile``), or None
    """

    sysroot: str | None = None
    debuginfod: list[str] | None = None
    fetch_remote: Callable[[str], bytes] | None = None
    timeout: float = 30.0
    #: how each binary was found: (remote path, build-id, source, local path)
    found: list[tuple[str, str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.debuginfod is None:
            self.debuginfod = os.environ.get("DEBUGINFOD_URLS", "").split()
        if self.sysroot is not None and not os.path.isdir(self.sysroot):
            raise MappedTraceError(f"--sysroot {self.sysroot}: not a directory")

    def _cached(self, bid: str, name: str) -> str:
        return os.path.join(cache_dir(), bid, name)

    def _store(self, bid: str, name: str, data: bytes, origin: str) -> str:
        d = os.path.join(cache_dir(), bid)
        os.makedirs(d, mode=0o700, exist_ok=True)
        out = os.path.join(d, name)
        tmp = f"{out}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        got = _local_build_id(tmp)
        if got != bid:
            os.unlink(tmp)
            raise MissingBinary(f"{origin} gave a file with build-id {got or 'none'}, not {bid}")
        os.replace(tmp, out)
        return out

    def _link(self, bid: str, name: str, target: str) -> str:
        d = os.path.join(cache_dir(), bid)
        os.makedirs(d, mode=0o700, exist_ok=True)
        out = os.path.join(d, name)
        if os.path.realpath(out) != os.path.realpath(target):
            tmp = f"{out}.{os.getpid()}.lnk"
            os.symlink(os.path.abspath(target), tmp)
            os.replace(tmp, out)
        return out

    def find(self, path: str, bid: str) -> str:
        """A local file with build-id ``bid`` for the target's ``path``.

        :raises MissingBinary: found nowhere (the message names both).
        """
        # a file deleted (or replaced) on the target's machine since it was mapped
        path = path.removesuffix(" (deleted)")
        name = os.path.basename(path) or bid
        tried: list[str] = []
        cands = []
        if self.sysroot:
            cands += [os.path.join(self.sysroot, path.lstrip("/")),
                      os.path.join(self.sysroot, ".build-id", bid[:2], bid[2:])]
        cands.append(path)      # the same file here: only if its build-id says so
        cands.append(self._cached(bid, name))
        for c in cands:
            if os.path.isfile(c) and _local_build_id(c) == bid:
                how = "sysroot" if self.sysroot and c.startswith(self.sysroot) else \
                    "cache" if c.startswith(cache_dir()) else "local"
                if os.path.basename(c) != name:
                    c = self._link(bid, name, c)    # a build-id tree: keep the module's own name
                return self._note(path, bid, how, c)
            tried.append(c)
        for url in self.debuginfod or []:
            u = f"{url.rstrip('/')}/buildid/{bid}/executable"
            try:
                with urllib.request.urlopen(u, timeout=self.timeout) as r:
                    data = r.read(MAX_DOWNLOAD + 1)
            except (urllib.error.URLError, OSError, ValueError) as e:
                tried.append(f"{u} ({getattr(e, 'code', None) or getattr(e, 'reason', e)})")
                continue
            if len(data) > MAX_DOWNLOAD:
                tried.append(f"{u} (larger than {MAX_DOWNLOAD} bytes)")
                continue
            try:
                return self._note(path, bid, "debuginfod", self._store(bid, name, data, u))
            except MissingBinary as e:
                tried.append(e.message)
        if self.fetch_remote is not None:
            try:
                data = self.fetch_remote(path)
                return self._note(path, bid, "server", self._store(bid, name, data, f"the server's {path}"))
            except MappedTraceError as e:
                tried.append(e.message)
        raise MissingBinary(f"binary {path} (build-id {bid}) not found: tried {'; '.join(tried)}",
                            hint="give --sysroot DIR, set DEBUGINFOD_URLS, or let the server share files")

    def _note(self, path: str, bid: str, how: str, local: str) -> str:
        self.found.append((path, bid, how, local))
        return local


def localize(target: Target, finder: BinaryFinder, build_ids: dict[str, str] | None = None) -> dict[str, str]:
    """Point ``target``'s file-backed mappings (and ``exe``) at local copies of the same build.

    :param build_ids: known ``{path: build-id}`` (a snapshot's note); else read
        from the target's memory
    :returns: ``{remote path: local path}`` of the binaries that were rewritten
    :raises MissingBinary: a binary with a build-id that is found nowhere
    """
    paths = sorted({m.path for m in target.mappings if m.path.startswith("/")})
    out: dict[str, str] = {}
    for p in paths:
        bid = (build_ids or {}).get(p)
        if bid is None:
            bid = build_id_in_memory(target, p)
        if bid is False:
            continue                        # not an ELF file (a data file, locale archive…)
        if not bid:
            finder.warnings.append(f"{p}: no build-id; the file of that path on this machine is used unchecked")
            continue
        local = finder.find(p, bid)
        if local != p:
            out[p] = local
    if out:
        target.mappings = [dataclasses.replace(m, path=out.get(m.path, m.path)) for m in target.mappings]
        target.exe = out.get(target.exe, target.exe)
    target.meta.setdefault("binaries_found", []).extend(
        {"path": p, "build_id": b, "source": how, "local": loc} for p, b, how, loc in finder.found)
    target.warnings.extend(finder.warnings)
    return out
