"""The ELF modules mapped in a target: where each binary is loaded, and its load bias.

Built from the target's mappings (``/proc/PID/maps`` or a core's ``NT_FILE``).
A module's *bias* is what to add to a link-time address of that file to get
the run-time address (0 for a non-PIE executable).  ELF files are opened
lazily with pyelftools and cached per path.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import BadData
from .fileio import open_regular
from .target.base import Target

if TYPE_CHECKING:
    from .tls import TlsIndex

PAGE = 0x1000


@lru_cache(maxsize=64)
def _elf_first_load(path: str) -> tuple[int, int] | None:
    """(vaddr, file offset) of the first PT_LOAD of ``path`` (or None if not ELF)."""
    try:
        with open_regular(path) as f:      # a device or a FIFO is no module (and could block)
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    return seg["p_vaddr"], seg["p_offset"]
    except (OSError, ELFError, ValueError, BadData):
        return None
    return None


@dataclass
class Module:
    """One ELF file mapped in the target."""

    path: str
    start: int          # lowest mapped address
    end: int            # highest mapped address (exclusive)
    bias: int           # run-time address = link-time address + bias
    exec_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def to_link(self, addr: int) -> int:
        return addr - self.bias

    def to_run(self, addr: int) -> int:
        return addr + self.bias

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)


class ModuleMap:
    """The modules of a target, looked up by address or by name."""

    def __init__(self, target: Target):
        self.target = target
        groups: dict[str, list] = {}
        for m in target.mappings:
            if m.path.startswith("/") and not m.path.endswith(" (deleted)"):
                groups.setdefault(m.path, []).append(m)
        mods = []
        for path, maps in groups.items():
            maps.sort(key=lambda m: m.start)
            first = _elf_first_load(path)
            if first is None:
                continue
            vaddr, foff = first
            base_map = next((m for m in maps if m.offset == foff - foff % PAGE), maps[0])
            bias = base_map.start - (vaddr - vaddr % PAGE) - (base_map.offset - (foff - foff % PAGE))
            mods.append(Module(path, maps[0].start, maps[-1].end, bias,
                               [(m.start, m.end) for m in maps if m.executable]))
        mods.sort(key=lambda x: x.start)
        self.modules = mods
        self._starts = [x.start for x in mods]

    def module_at(self, addr: int) -> Module | None:
        """The module whose mapped range contains ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.modules[i].contains(addr):
            return self.modules[i]
        return None

    def find(self, basename_prefix: str) -> Module | None:
        """First module whose file name starts with ``basename_prefix`` (e.g. ``"libc.so"``)."""
        for x in self.modules:
            if x.name.startswith(basename_prefix):
                return x
        return None

    @property
    def main(self) -> Module | None:
        """The main executable (by the target's exe path, else the first module)."""
        exe = self.target.exe
        for x in self.modules:
            if exe and (x.path == exe or os.path.realpath(x.path) == os.path.realpath(exe)):
                return x
        return self.modules[0] if self.modules else None

    @cached_property
    def tls(self) -> "TlsIndex":
        """Every module's TLS as the dynamic linker recorded it (a
        :class:`~mappedtrace.tls.TlsIndex`, read once from the target's link maps)."""
        from .tls import read_tls_index      # tls.py names Module and ModuleMap
        return read_tls_index(self.target, self)

    def __iter__(self):
        return iter(self.modules)
