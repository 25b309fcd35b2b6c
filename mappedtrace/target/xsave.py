"""The XSAVE area of a thread (``NT_X86_XSTATE``), laid out so debuggers read it.

``PTRACE_GETREGSET NT_X86_XSTATE`` returns the standard (non-compacted) XSAVE
format with the offsets CPUID leaf 0xD gives on *this* CPU.  They are Intel's
fixed offsets on Intel CPUs, but AMD CPUs without MPX put the AVX-512 state
lower (opmask at 832, not 1088): the kernel's own core files carry an
``NT_X86_XSAVE_LAYOUT`` note for that, which older debuggers do not read —
gdb 13 computes the size and offsets from XCR0 alone, warns that the section
is "too small" and shows the upper halves of ymm/zmm as unavailable.

So a snapshot stores each thread's area in Intel's layout (the layout every
reader assumes: :data:`STANDARD`), copied component by component from the
CPU's offsets, and writes the ``NT_X86_XSAVE_LAYOUT`` note describing what it
wrote (records of ``struct x86_xfeat_component``, ``<uapi/linux/elf.h>``).
Where this CPU's offsets cannot be learned (CPUID refused) or a component has
no standard place, the area is kept as the kernel gave it, and the note says
so — exactly what the kernel itself would write.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import struct

#: ``NT_X86_XSAVE_LAYOUT`` (Linux 6.11+), owner "LINUX"
NT_X86_XSAVE_LAYOUT = 0x205
#: struct x86_xfeat_component: type, size, offset, flags
XFEAT = struct.Struct("<IIII")
#: offset of XCR0 in the ptrace/core XSAVE area (the kernel's sw_reserved word 0)
XCR0_OFFSET = 464
#: the legacy FXSAVE area and the XSAVE header come first in every layout
LEGACY = 576

#: component → (offset, size) in Intel's standard layout (SDM vol. 1 §13.4): AVX,
#: MPX BNDREGS and BNDCSR, AVX-512 opmask, ZMM_Hi256 and Hi16_ZMM, PKRU, AMX.
STANDARD: dict[int, tuple[int, int]] = {
    2: (576, 256), 3: (960, 64), 4: (1024, 64), 5: (1088, 64), 6: (1152, 512),
    7: (1664, 1024), 9: (2688, 8), 17: (2752, 64), 18: (2816, 8192),
}

# cpuid(leaf, subleaf, uint32_t out[4]) in x86-64 machine code (System V ABI):
#   push rbx; mov eax, edi; mov ecx, esi; mov r8, rdx; cpuid;
#   mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
# (tests/hostile/test_cores.py disassembles it with capstone)
CPUID_CODE = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808"
                           "4189500c" "5b" "c3")


@functools.cache
def _cpuid_fn():
    """A callable running CPUID in this process, or None where an executable
    page cannot be had (a W^X policy)."""
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(CPUID_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            return None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(addr)
    fn._page = page     # keep the code mapped as long as the function lives
    return fn


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int] | None:
    """(eax, ebx, ecx, edx) of CPUID ``leaf``/``subleaf``, or None if it cannot run."""
    fn = _cpuid_fn()
    if fn is None:
        return None
    out = (ctypes.c_uint32 * 4)()
    fn(leaf, subleaf, out)
    return tuple(out)   # type: ignore[return-value]


@functools.cache
def cpu_layout() -> dict[int, tuple[int, int]] | None:
    """component → (offset, size) of this CPU's standard-format XSAVE area (CPUID 0xD)."""
    if cpuid(0) is None or cpuid(0)[0] < 0xD:
        return None
    out = {}
    for i in range(2, 64):
        eax, ebx, _, _ = cpuid(0xD, i)
        if eax:
            out[i] = (ebx, eax)
    return out


def features(area: bytes) -> int:
    """The XCR0 the kernel recorded in ``area`` (0 if too short)."""
    return struct.unpack_from("<Q", area, XCR0_OFFSET)[0] if len(area) >= XCR0_OFFSET + 8 else 0


def _components(xcr0: int) -> list[int]:
    return [i for i in range(2, 64) if xcr0 >> i & 1]


def to_standard(area: bytes, layout: dict[int, tuple[int, int]] | None = None) -> tuple[bytes, list[tuple[int, int, int]]]:
    """``area`` (the kernel's, in this CPU's layout) in Intel's layout.

    :param layout: the CPU's layout (default: :func:`cpu_layout`)
    :returns: (the area, its layout records ``[(component, size, offset)]``)
        — the area unchanged, with the CPU's records, where it cannot be moved.
    """
    layout = cpu_layout() if layout is None else layout
    comps = _components(features(area))
    if not layout or any(c not in layout for c in comps):
        return area, []
    if any(c not in STANDARD or STANDARD[c][1] != layout[c][1] for c in comps) \
            or any(layout[c][0] + layout[c][1] > len(area) for c in comps):
        return area, [(c, layout[c][1], layout[c][0]) for c in comps]
    size = max([LEGACY] + [STANDARD[c][0] + STANDARD[c][1] for c in comps])
    out = bytearray(size)
    out[:LEGACY] = area[:LEGACY]
    for c in comps:
        (so, n), (co, _) = STANDARD[c], layout[c]
        out[so:so + n] = area[co:co + n]
    return bytes(out), [(c, STANDARD[c][1], STANDARD[c][0]) for c in comps]


def layout_note(records: list[tuple[int, int, int]]) -> bytes:
    """The ``NT_X86_XSAVE_LAYOUT`` descriptor for ``records`` (component, size, offset)."""
    return b"".join(XFEAT.pack(c, n, off, 0) for c, n, off in records)
