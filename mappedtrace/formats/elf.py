"""ELF helpers on pyelftools: section bytes, symbols, build-id, debug files, TLS.

Every function takes a path and caches its answer keyed by the file's
identity (real path, size, mtime), so callers may ask repeatedly.  Problems
become typed errors: a file that is missing → :class:`NoSuchFile`; not ELF or
truncated → :class:`~mappedtrace.errors.BadData` naming the file.
"""
from __future__ import annotations

import bisect
import errno
import functools
import os
import stat
from dataclasses import dataclass
from typing import NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import BadData, MappedTraceError, PermissionProblem
from ..fileio import file_kind

#: Where distributions install separate debug files (``libc6-dbg`` on Debian).
DEBUG_ROOTS: tuple[str, ...] = ("/usr/lib/debug",)

_DF_1_PIE = 0x08000000
_ELF_MAGIC = b"\x7fELF"


class NoSuchFile(MappedTraceError):
    """The path names no file (a local type until errors.py grows one)."""


class Symbol(NamedTuple):
    """One defined ELF symbol.  ``type`` and ``bind`` are lower-case names
    without the ``STT_``/``STB_`` prefix: ``func``, ``object``, ``tls``,
    ``gnu_ifunc``, ``notype`` · ``global``, ``local``, ``weak``, ``gnu_unique``."""

    name: str
    addr: int
    size: int
    type: str
    bind: str


@dataclass(frozen=True)
class Section:
    """A section's header fields and (for non-NOBITS sections) its bytes."""

    name: str
    addr: int
    offset: int
    size: int
    flags: int
    type: str
    data: bytes


# --------------------------------------------------------------------------
# opening

def _key(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NoSuchFile(f"{path}: no such file", hint="check the path") from None
    except PermissionError:
        raise PermissionProblem(f"{path}: permission denied") from None
    except OSError as e:
        raise MappedTraceError(f"{path}: {os.strerror(e.errno or errno.EIO)}") from None
    if not stat.S_ISREG(st.st_mode):     # a FIFO would block the read forever
        raise BadData(path, None, f"not a regular file ({file_kind(st.st_mode)})")
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


class _Elf:
    """An open ELF file; use as a context manager."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fh = open(path, "rb")
        except FileNotFoundError:
            raise NoSuchFile(f"{path}: no such file") from None
        except PermissionError:
            raise PermissionProblem(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise BadData(path, None, "is a directory, not an ELF file") from None
        magic = self.fh.read(4)
        self.fh.seek(0)
        if magic != _ELF_MAGIC:
            self.fh.close()
            raise BadData(path, None, f"not an ELF file (starts with {magic!r})")
        try:
            self.elf = ELFFile(self.fh)
        except Exception as e:  # pyelftools raises many kinds on a malformed header
            self.fh.close()
            raise BadData(path, None, f"malformed ELF header: {e}") from None
        if self.elf.elfclass != 64 or self.elf["e_machine"] != "EM_X86_64":
            m = self.elf["e_machine"]
            self.fh.close()
            raise BadData(path, None, f"ELF{self.elf.elfclass} {m} is not supported; MappedTrace reads x86-64 ELF64")

    def __enter__(self) -> "_Elf":
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def guard(self, what: str):
        return _Guard(self.path, what)


class _Guard:
    """Turns pyelftools' exceptions on malformed input into BadData."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, et, ev, tb) -> bool:
        if et is None or issubclass(et, MappedTraceError):
            return False
        if issubclass(et, (ELFError, ValueError, KeyError, IndexError, OSError, EOFError)) or \
                et.__module__.startswith(("construct", "elftools", "struct")):
            raise BadData(self.path, None, f"malformed ELF ({self.what}): {ev}") from None
        return False


def check_elf(path: str) -> None:
    """Raise :class:`NoSuchFile` / :class:`BadData` unless ``path`` is an x86-64 ELF64 file."""
    _info(_key(path))


@functools.lru_cache(maxsize=64)
def _info(key: tuple[str, int, int]) -> dict:
    path = key[0]
    with _Elf(path) as e, e.guard("headers"):
        segs = [(s["p_type"], s["p_vaddr"], s["p_memsz"], s["p_align"], s["p_filesz"], s["p_offset"])
                for s in e.elf.iter_segments()]
        sects = [(s.name, s["sh_addr"], s["sh_offset"], s["sh_size"], s["sh_flags"], s["sh_type"])
                 for s in e.elf.iter_sections()]
        flags1 = 0
        soname = False
        dyn = e.elf.get_section_by_name(".dynamic")
        if dyn is not None and hasattr(dyn, "iter_tags"):
            for tag in dyn.iter_tags():
                if tag.entry.d_tag == "DT_FLAGS_1":
                    flags1 = tag.entry.d_val
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = True
        return {"e_type": e.elf["e_type"], "segments": segs, "sections": sects,
                "flags1": flags1, "soname": soname}


# --------------------------------------------------------------------------
# sections

def section_headers(path: str) -> list[tuple[str, int, int, int, int, str]]:
    """``(name, addr, offset, size, flags, type)`` of every section."""
    return list(_info(_key(path))["sections"])


def section(path: str, name: str) -> Section | None:
    """The first section called ``name`` with its bytes, or None if absent.

    A ``SHT_NOBITS`` section has empty ``data``.
    """
    key = _key(path)
    for (n, addr, off, size, flags, typ) in _info(key)["sections"]:
        if n != name:
            continue
        if typ == "SHT_NOBITS":
            return Section(n, addr, off, size, flags, typ, b"")
        if off + size > key[1]:
            raise BadData(f"{path}: {name}", None,
                          f"section [{off:#x}, +{size:#x}) runs past the end of the file ({key[1]:#x} bytes)")
        with open(path, "rb") as fh:
            fh.seek(off)
            data = fh.read(size)
        return Section(n, addr, off, size, flags, typ, data)
    return None


def section_bytes(path: str, name: str) -> bytes | None:
    """The bytes of section ``name``, or None if the file has no such section."""
    s = section(path, name)
    return None if s is None else s.data


# --------------------------------------------------------------------------
# symbols

_SYMTYPES = {"STT_FUNC", "STT_OBJECT", "STT_TLS", "STT_GNU_IFUNC", "STT_NOTYPE", "STT_COMMON"}


@functools.lru_cache(maxsize=16)
def _symbols(key: tuple[str, int, int]) -> tuple[Symbol, ...]:
    path = key[0]
    out: list[Symbol] = []
    with _Elf(path) as e, e.guard("symbol table"):
        tab = e.elf.get_section_by_name(".symtab") or e.elf.get_section_by_name(".dynsym")
        if tab is None or not hasattr(tab, "iter_symbols"):
            return ()
        for s in tab.iter_symbols():
            st = s["st_info"]["type"]
            if not s.name or st not in _SYMTYPES or s["st_shndx"] == "SHN_UNDEF":
                continue
            out.append(Symbol(s.name, s["st_value"], s["st_size"],
                              st[4:].lower(), s["st_info"]["bind"][4:].lower()))
    return tuple(out)


def symbols(path: str) -> list[Symbol]:
    """Defined symbols (``.symtab``, else ``.dynsym``): ``(name, addr, size, type, bind)``.

    Cached per file; section and file symbols are left out.
    """
    return list(_symbols(_key(path)))


@functools.lru_cache(maxsize=16)
def _by_name(key: tuple[str, int, int]) -> dict[str, Symbol]:
    rank = {"global": 0, "weak": 1, "gnu_unique": 1, "local": 2}
    best: dict[str, Symbol] = {}
    for s in _symbols(key):
        cur = best.get(s.name)
        if cur is None or rank.get(s.bind, 3) < rank.get(cur.bind, 3):
            best[s.name] = s
    return best


def symbol(path: str, name: str) -> Symbol | None:
    """The symbol called ``name`` (a global one preferred over a local), or None."""
    return _by_name(_key(path)).get(name)


def symbol_address(path: str, name: str) -> int | None:
    """``st_value`` of the symbol ``name`` (for a TLS symbol: its offset in the
    module's TLS block), or None."""
    s = symbol(path, name)
    return None if s is None else s.addr


@functools.lru_cache(maxsize=16)
def _code_data_index(key: tuple[str, int, int]) -> tuple[list[int], list[Symbol]]:
    syms = sorted((s for s in _symbols(key) if s.type in ("func", "object", "gnu_ifunc") and s.addr),
                  key=lambda s: (s.addr, -s.size, s.bind != "global"))
    return [s.addr for s in syms], syms


def symbol_at(path: str, addr: int) -> Symbol | None:
    """The function or object symbol whose ``[addr, addr+size)`` contains ``addr``.

    A zero-sized symbol matches only its own address.
    """
    starts, syms = _code_data_index(_key(path))
    i = bisect.bisect_right(starts, addr) - 1
    # Symbols may nest or alias; look back a bounded number of entries.
    for j in range(i, max(i - 16, -1), -1):
        s = syms[j]
        if s.addr <= addr < s.addr + max(s.size, 1):
            return s
    return None


def function_symbols(path: str) -> list[Symbol]:
    """Function symbols sorted by address (aliases at one address collapsed,
    the global name preferred)."""
    starts, syms = _code_data_index(_key(path))
    out: list[Symbol] = []
    for s in syms:
        if s.type not in ("func", "gnu_ifunc"):
            continue
        if out and out[-1].addr == s.addr:
            continue
        out.append(s)
    return out


# --------------------------------------------------------------------------
# build-id, debug files, TLS, PIE

@functools.lru_cache(maxsize=64)
def _build_id(key: tuple[str, int, int]) -> str | None:
    path = key[0]
    with _Elf(path) as e, e.guard("notes"):
        for sec in e.elf.iter_sections():
            if sec["sh_type"] != "SHT_NOTE" or not hasattr(sec, "iter_notes"):
                continue
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    return str(note["n_desc"]).lower()
        for seg in e.elf.iter_segments():
            if seg["p_type"] != "PT_NOTE" or not hasattr(seg, "iter_notes"):
                continue
            for note in seg.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    return str(note["n_desc"]).lower()
    return None


def build_id(path: str) -> str | None:
    """The GNU build-id as lower-case hex, or None when the file has none."""
    return _build_id(_key(path))


def debug_file_for(path: str, roots: tuple[str, ...] = DEBUG_ROOTS) -> str | None:
    """The separate debug file of ``path``, or None.

    Looks in ``ROOT/.build-id/xx/yyyy….debug`` by build-id first, then by
    ``.gnu_debuglink`` name in ``ROOT/<dir of path>/``, ``<dir>/`` and
    ``<dir>/.debug/`` (gdb's order).
    """
    bid = build_id(path)
    if bid and len(bid) > 2:
        for root in roots:
            cand = os.path.join(root, ".build-id", bid[:2], bid[2:] + ".debug")
            if os.path.isfile(cand):
                return cand
    link = section_bytes(path, ".gnu_debuglink")
    if link:
        name = link.split(b"\0", 1)[0].decode("utf-8", "replace")
        if name and "/" not in name:
            d = os.path.dirname(os.path.realpath(path))
            for cand in [os.path.join(root + d, name) for root in roots] + \
                    [os.path.join(d, name), os.path.join(d, ".debug", name)]:
                if os.path.isfile(cand) and os.path.realpath(cand) != os.path.realpath(path):
                    return cand
    return None


def tls_segment(path: str) -> tuple[int, int, int] | None:
    """``(p_vaddr, p_memsz, p_align)`` of the ``PT_TLS`` segment, or None."""
    for (t, vaddr, memsz, align, _filesz, _off) in _info(_key(path))["segments"]:
        if t == "PT_TLS":
            return vaddr, memsz, align
    return None


def segment(path: str, p_type: str) -> tuple[int, int, int, int] | None:
    """``(p_vaddr, p_memsz, p_align, p_filesz)`` of the first segment of type
    ``p_type`` (``"PT_TLS"``, ``"PT_DYNAMIC"``…), or None."""
    for (t, vaddr, memsz, align, filesz, _off) in _info(_key(path))["segments"]:
        if t == p_type:
            return vaddr, memsz, align, filesz
    return None


def load_segments(path: str) -> list[tuple[int, int, int, int]]:
    """``(p_vaddr, p_memsz, p_offset, p_filesz)`` of every ``PT_LOAD`` segment."""
    return [(vaddr, memsz, off, filesz)
            for (t, vaddr, memsz, _a, filesz, off) in _info(_key(path))["segments"] if t == "PT_LOAD"]


def code_at(path: str, addr: int, n: int) -> bytes | None:
    """Up to ``n`` bytes of the file's image at link-time address ``addr``
    (within one ``PT_LOAD`` segment's file bytes), or None."""
    for vaddr, _memsz, off, filesz in load_segments(path):
        if vaddr <= addr < vaddr + filesz:
            n = min(n, vaddr + filesz - addr)
            try:
                with open(path, "rb") as f:
                    f.seek(off + addr - vaddr)
                    return f.read(n)
            except OSError:
                return None
    return None


def is_pie(path: str) -> bool:
    """True for a position-independent *executable* (loaded at a bias).

    ``ET_DYN`` with ``DF_1_PIE``, or ``ET_DYN`` with an interpreter and no
    ``DT_SONAME``.  Shared libraries are ``False`` (they are ET_DYN too, but
    not executables); ``ET_EXEC`` is ``False``.
    """
    info = _info(_key(path))
    if info["e_type"] != "ET_DYN":
        return False
    if info["flags1"] & _DF_1_PIE:
        return True
    has_interp = any(s[0] == "PT_INTERP" for s in info["segments"])
    return has_interp and not info["soname"]


def elf_type(path: str) -> str:
    """``e_type``: ``ET_EXEC``, ``ET_DYN``, ``ET_REL``, ``ET_CORE``."""
    return _info(_key(path))["e_type"]
