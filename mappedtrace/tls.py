"""Thread-local storage of every module, from the dynamic linker's own records.

glibc's ``ld.so`` keeps one ``struct link_map`` per loaded object, chained
from ``_r_debug.r_map`` (the address the main executable's ``DT_DEBUG``
dynamic entry holds once ``ld.so`` has run).  Each record names the module's
TLS: ``l_tls_modid`` (its index in every thread's DTV), ``l_tls_offset``
(where its block sits below the thread pointer when it is in static TLS) and
``l_tls_blocksize``.  A link map is matched to a mapped module by ``l_ld``,
the run-time address of the module's dynamic section, never by file name
(``libjq.so.1`` in the link map is ``libjq.so.1.0.4`` in ``/proc/PID/maps``).

x86-64 uses TLS variant II: a static block ends ``l_tls_offset`` bytes
below the thread pointer (``fs_base``), so ``block = tp - l_tls_offset``; a
module loaded by ``dlopen`` gets a block allocated on first use, found in the
thread's DTV (``tcbhead_t.dtv`` at ``tp + 8``; ``dtv[-1]`` is the number of
entries, ``dtv[modid]`` the block, ``-1`` while unallocated).

Where the TLS fields are inside ``struct link_map`` is private to glibc
(glibc 2.36: ``l_tls_initimage`` at 1104, ``l_tls_modid`` at 1152; gdb's
``ptype/o struct link_map`` with libc6-dbg).  The offset is not trusted: the
fields ``l_tls_initimage_size, l_tls_blocksize, l_tls_align,
l_tls_firstbyte_offset`` must equal what the module's own ``PT_TLS`` says
(``p_filesz, p_memsz, p_align, p_vaddr % p_align``), checked on every module;
when the 2.36 offset does not match, the record is searched for that
signature (another glibc), and a module whose record does not match is
reported as not located rather than guessed.

Not covered: objects loaded with ``dlmopen`` into other namespaces (their
chains hang off ``_r_debug_extended.r_next``); only the base namespace is read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import MappedTraceError, TargetFault
from .formats import elf

if TYPE_CHECKING:   # modules.py imports this module lazily
    from .modules import Module, ModuleMap
    from .target.base import Target, ThreadState

#: struct r_debug: r_version, r_map (the head of the link-map chain)
R_DEBUG = struct.Struct("<i4xQ")
#: the public head of struct link_map: l_addr, l_name, l_ld, l_next
LINK_MAP_HEAD = struct.Struct("<4Q")
#: l_tls_initimage .. l_tls_modid (seven words)
LINK_MAP_TLS = struct.Struct("<Q6Q")
#: glibc 2.36's offset of l_tls_initimage in struct link_map (tried first)
TLS_FIELDS_2_36 = 1104
#: bytes of a link map searched for the TLS fields when the 2.36 offset does not fit
LINK_MAP_SEARCH = 4096
#: Elf64_Dyn: d_tag, d_val
DYN = struct.Struct("<qQ")
DT_NULL, DT_DEBUG = 0, 21
AT_BASE = 7
#: bounds on the walks (counts read from the target are bounds to check)
MAX_LINK_MAPS = 4096
MAX_DYNAMIC = 1024
#: l_tls_offset values meaning "not in static TLS" (glibc: NO_TLS_OFFSET 0,
#: FORCED_DYNAMIC_TLS_OFFSET -1)
_NOT_STATIC = (0, (1 << 64) - 1)
#: a larger l_tls_offset is not believed (glibc's static TLS is a few KiB to MiB):
#: the block is then looked up in the DTV
MAX_STATIC_TLS = 1 << 30


@dataclass(frozen=True)
class TlsModule:
    """One module with a TLS block, as the dynamic linker recorded it."""

    module: "Module | None"    # the mapped module (None: its l_ld is in no mapped file)
    name: str                  # l_name ("" for the main executable)
    link_map: int              # address of its struct link_map
    modid: int                 # l_tls_modid: its DTV index
    static_offset: int | None  # l_tls_offset when the block is in static TLS (block = tp - offset)
    blocksize: int             # l_tls_blocksize (p_memsz)
    align: int


@dataclass
class TlsIndex:
    """The TLS modules of a target (:func:`read_tls_index`), and why some are missing."""

    modules: list[TlsModule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: False when the link-map chain could not be read at all
    complete: bool = False

    def for_module(self, module: "Module") -> TlsModule | None:
        """The TLS record of ``module`` (matched by its mapped range), or None."""
        for tm in self.modules:
            if tm.module is not None and tm.module.start == module.start:
                return tm
        return None

    def block(self, target: "Target", thread: "ThreadState", tm: TlsModule) -> int | None:
        """Start of ``tm``'s TLS block in ``thread``, or None (no thread
        pointer, a dynamic block not allocated in that thread yet).

        :raises TargetFault: when the DTV of a dynamic module cannot be read
        """
        tp = thread.regs.get("fs_base", 0)
        if not tp:
            return None
        if tm.static_offset is not None:
            return tp - tm.static_offset
        return target.tls_block(thread, tm.modid)


def read_tls_index(target: "Target", modules: "ModuleMap") -> TlsIndex:
    """Every module with TLS, from ``_r_debug``'s link-map chain.

    Never raises on a bad chain: what could not be read becomes a warning and
    the index holds what was read (``complete`` False when nothing was).
    """
    out = TlsIndex()
    try:
        r_debug = _r_debug_address(target, modules)
        if r_debug is None:
            main = modules.main
            if main is not None and main.exists and elf.segment(main.path, "PT_DYNAMIC") is not None:
                out.warnings.append("no _r_debug (ld.so not found): TLS modules not read from the link maps")
            return out        # a static executable: its own TLS block is at the thread pointer
        _version, lm = R_DEBUG.unpack(target.read(r_debug, R_DEBUG.size))
        tls_at: int | None = None
        seen: set[int] = set()
        for _ in range(MAX_LINK_MAPS):
            if lm == 0:
                break
            if lm in seen:
                out.warnings.append(f"link-map chain loops back to {lm:#x}: read up to there")
                break
            seen.add(lm)
            _l_addr, l_name, l_ld, l_next = LINK_MAP_HEAD.unpack(target.read(lm, LINK_MAP_HEAD.size))
            mod = modules.module_at(l_ld) if l_ld else None
            seg = _tls_segment(mod)
            name = _cstr(target, l_name)
            if seg is not None:
                if tls_at is None:
                    tls_at = _find_tls_fields(target, lm, seg)
                tm = _tls_record(target, lm, tls_at, seg, mod, name) if tls_at is not None else None
                if tm is None:
                    out.warnings.append(f"link map of {mod.name} at {lm:#x}: its TLS fields do not "
                                        f"match its PT_TLS segment; its thread-locals are not located")
                else:
                    out.modules.append(tm)
            lm = l_next
        else:
            out.warnings.append(f"link-map chain longer than {MAX_LINK_MAPS} entries: read that many")
        out.complete = True
    except TargetFault as e:
        out.warnings.append(f"link-map chain unreadable ({e.message}); TLS modules read so far: "
                            f"{len(out.modules)}")
        out.complete = bool(out.modules)
    except MappedTraceError as e:
        out.warnings.append(f"TLS modules not read from the link maps: {e.message}")
    return out


def _tls_segment(mod: "Module | None") -> tuple[int, int, int, int] | None:
    if mod is None or not mod.exists:
        return None
    try:
        seg = elf.segment(mod.path, "PT_TLS")
    except MappedTraceError:
        return None
    return seg if seg is not None and seg[1] > 0 else None


def _cstr(target: "Target", addr: int) -> str:
    if not addr:
        return ""
    try:
        return target.read_cstr(addr, 4096).decode("utf-8", "replace")
    except TargetFault:
        return "?"


def _r_debug_address(target: "Target", modules: "ModuleMap") -> int | None:
    """``&_r_debug``: the main executable's ``DT_DEBUG`` entry, else ld.so's
    ``_r_debug`` symbol (ld.so found by ``AT_BASE``, not by name)."""
    main = modules.main
    dyn = elf.segment(main.path, "PT_DYNAMIC") if main is not None and main.exists else None
    if dyn is not None:
        vaddr, memsz = dyn[0], dyn[1]
        n = min(memsz // DYN.size, MAX_DYNAMIC)
        data = target.read(main.to_run(vaddr), n * DYN.size)
        for i in range(n):
            tag, val = DYN.unpack_from(data, i * DYN.size)
            if tag == DT_NULL:
                break
            if tag == DT_DEBUG and val:
                return val
    base = target.auxv_entries().get(AT_BASE)
    ld = modules.module_at(base) if base else None
    if ld is not None and ld.exists:
        sym = elf.symbol(ld.path, "_r_debug")
        if sym is not None:
            return ld.to_run(sym.addr)
    return None


def _expected(seg: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    vaddr, memsz, align, filesz = seg
    return filesz, memsz, align, (vaddr & (align - 1)) if align else 0


def _find_tls_fields(target: "Target", lm: int, seg: tuple[int, int, int, int]) -> int | None:
    """Offset of ``l_tls_initimage`` in a link map whose module's PT_TLS is ``seg``."""
    want = _expected(seg)
    m = target.mapping_at(lm)
    if m is None:
        return None
    n = min(LINK_MAP_SEARCH, m.end - lm) // 8 * 8
    words = struct.unpack(f"<{n // 8}Q", target.read(lm, n))
    fits = [k for k in range(0, len(words) - 6)
            if tuple(words[k + 1:k + 5]) == want and 0 < words[k + 6] <= MAX_LINK_MAPS]
    if TLS_FIELDS_2_36 // 8 in fits:
        return TLS_FIELDS_2_36
    return fits[0] * 8 if len(fits) == 1 else None


def _tls_record(target: "Target", lm: int, at: int, seg: tuple[int, int, int, int], mod: "Module",
                name: str) -> TlsModule | None:
    _init, filesz, memsz, align, first, offset, modid = LINK_MAP_TLS.unpack(
        target.read(lm + at, LINK_MAP_TLS.size))
    if (filesz, memsz, align, first) != _expected(seg) or not 0 < modid <= MAX_LINK_MAPS:
        return None
    static = offset if offset not in _NOT_STATIC and offset <= MAX_STATIC_TLS else None
    return TlsModule(mod, name, lm, modid, static, memsz, align)
