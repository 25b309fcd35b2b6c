"""Stack unwinding from DWARF call frame information (step 5 of DESIGN.md).

For every thread the :class:`Unwinder` walks the stack frame by frame and
recovers, in each frame, the registers whose values are *known* there: the
stack pointer (the CFA of the callee), the return address, and the
callee-saved registers (``rbx rbp r12–r15``) from the CFI rules of each
callee.  The maps of instrumented code place pointer values in callee-saved
registers at call sites, so a register in :attr:`Frame.regs` is a value the
tracer may trust; a register whose value is not known is absent, never guessed.

Sources of unwind information, per module, parsed lazily and cached:

* ``.eh_frame`` located through ``.eh_frame_hdr``'s sorted search table (one FDE
  is parsed per new PC, so libc costs milliseconds, not a full parse);
* ``.debug_frame`` of the file or of its separate debug file (build-id), for
  PCs ``.eh_frame`` does not cover (a full parse into a sorted table);
* the vDSO image, read from the target's memory;
* a frame-pointer fallback (``rbp`` chain, validated to stay inside the stack
  mapping and to grow upward) where no CFI covers a PC;
* signal frames: an FDE whose CIE augmentation has ``S`` (glibc's
  ``__restore_rt``) makes the next frame's registers come from the
  ``ucontext_t`` the kernel pushed (:data:`UCONTEXT_GREGS` offsets).

CFI instructions are executed here (DWARF 5 §6.4), not with pyelftools'
``get_decoded()``: the row is computed only up to the PC asked for, and
``DW_CFA_GNU_args_size`` and ``DW_CFA_def_cfa_sf`` are handled as the standard
says.  pyelftools parses the CIE/FDE records and their instruction lists.

The walk never raises on a bad stack: it stops and appends a one-line reason
to :attr:`Unwinder.warnings`.  Depth is bounded, and the CFA must grow from
frame to frame (except across a signal frame, which may switch stacks).

Known imprecision (checked against LLDB in ``tests/test_unwind*.py``):

* the frame-pointer fallback knows only rbp in the caller; if the *top* frame
  has no CFI and is stopped before its ``push rbp``/``mov rsp, rbp``, the rbp
  chain skips its caller (no instruction decoding is attempted);
* signal frames are recognised by the CIE's ``S`` augmentation (glibc); a
  restorer without it is unwound by its CFI expressions, when it has them;
* CFI and symbols are read from the file at the mapped path now: a file
  replaced on disk since the process mapped it gives wrong answers (the
  cache key is path, size and mtime; build-ids are not compared);
* only general registers are tracked; rules for vector registers are ignored.
"""
from __future__ import annotations

import bisect
import io
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from elftools.common.exceptions import ELFError, DWARFError
from elftools.dwarf.callframe import CIE, FDE, CallFrameInfo
from elftools.dwarf.constants import DW_CFA
from elftools.dwarf.structs import DWARFStructs
from elftools.elf.elffile import ELFFile

from .binreader import Cursor
from .errors import BadData, MappedTraceError, TargetFault
from .modules import Module, ModuleMap
from .target.base import CALLEE_SAVED, DWARF_REGS, Target, ThreadState

_DWARF_NUM = {name: num for num, name in DWARF_REGS.items()}

__all__ = ["Frame", "Unwinder", "UCONTEXT_GREGS", "UCONTEXT_MCONTEXT_OFFSET"]

#: DWARF register number of the return address column on x86-64.
RA_REG = 16

# --- the kernel's signal frame ----------------------------------------------
# When a signal handler returns into glibc's __restore_rt, rsp points at the
# ucontext_t of struct rt_sigframe (the pretcode word has been popped):
#   ucontext_t { u64 uc_flags; ucontext_t *uc_link; stack_t uc_stack (24 bytes);
#                mcontext_t uc_mcontext; ... }
#   mcontext_t.gregs[23] in the order REG_R8 … REG_CR2 (<sys/ucontext.h>).
#: Offset of ``uc_mcontext`` (its ``gregs``) in ``ucontext_t``.
UCONTEXT_MCONTEXT_OFFSET = 40
#: Register → byte offset inside ``uc_mcontext.gregs`` (``REG_*`` index × 8).
UCONTEXT_GREGS: dict[str, int] = {
    name: 8 * i for i, name in enumerate((
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi",
        "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "eflags"))
}
_GREGS = struct.Struct("<18Q")
#: Offset of ``uc_mcontext.fpregs`` (pointer to the saved FPU/xsave area) in ``ucontext_t``.
UCONTEXT_FPREGS_OFFSET = UCONTEXT_MCONTEXT_OFFSET + 23 * 8
#: ``struct _fpx_sw_bytes`` inside the fxsave area: magic1, extended_size (the
#: bytes of the whole saved area), xfeatures, xstate_size (<asm/sigcontext.h>).
_FPX_SW_BYTES_OFFSET = 464
_FPX_SW_BYTES = struct.Struct("<IIQI")
_FP_XSTATE_MAGIC1 = 0x46505853
_FXSAVE_SIZE = 512
#: Most bytes a signal frame may take (ucontext, siginfo, xsave area).
_MAX_SIGFRAME = 0x10000

#: Registers an unwinder tracks (the general purpose registers and rip).
_TRACKED = tuple(DWARF_REGS.values())

#: Bound on DWARF expression length (ops) and on the stack it may build.
_MAX_EXPR_OPS = 64
#: Bound on CFI instructions executed for one row.
_MAX_CFI_INSNS = 100_000


@dataclass
class Frame:
    """One frame of a thread's stack, 0 = the innermost.

    ``pc`` is the thread's rip for frame 0 and for a frame interrupted by a
    signal; for every other frame it is the return address (the PC that
    stack map records key on).  ``regs`` holds only the registers
    whose values in this frame are known: in frames > 0 the callee-saved ones
    the CFI recovers (or that no callee changed), rsp and rip; after a signal
    frame every general register; after a frame-pointer step only rbp.
    ``[sp_low, sp_high)`` is the frame's stack memory; for the last frame of
    a walk that stopped early, ``sp_high`` is the end of its stack mapping.
    ``how`` says how this frame's registers were found: ``top`` (the thread's
    own), ``cfi`` (the callee's CFI), ``frame-pointer`` (the callee's rbp
    chain), ``signal`` (the ucontext_t of a signal frame).
    """

    index: int
    pc: int
    cfa: int | None
    regs: dict[str, int]
    module: str | None
    function: str | None
    how: str                 # "top" | "cfi" | "frame-pointer" | "signal"
    sp_low: int
    sp_high: int
    #: symbol + offset, e.g. ``"main+0x1c"`` (empty when unknown)
    symbol_offset: int | None = None
    #: callee-saved registers this frame's CFI row leaves alone (no rule, or
    #: "same value"): the function has not saved them, so by the ABI they still
    #: hold its caller's values, and the caller's frame says what they mean
    keeps: frozenset[str] = frozenset()

    @property
    def lookup_pc(self) -> int:
        """The PC that identifies the instruction this frame is at (pc - 1 after a call)."""
        return self.pc - 1 if self.how in ("cfi", "frame-pointer") else self.pc

    def __str__(self) -> str:
        fn = self.function or "??"
        if self.function and self.symbol_offset is not None:
            fn += f"+{self.symbol_offset:#x}"
        mod = os.path.basename(self.module) if self.module else "?"
        return f"#{self.index:<3} {self.pc:#018x} {fn} ({mod}) [{self.how}]"


# --- small readers ------------------------------------------------------------

def _uleb(c: Cursor) -> int:
    result = shift = 0
    for _ in range(10):
        b = c.u8()
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result
    raise c.error("LEB128 number longer than 10 bytes")


def _sleb(c: Cursor) -> int:
    result = shift = 0
    for _ in range(10):
        b = c.u8()
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result
    raise c.error("LEB128 number longer than 10 bytes")


# DW_EH_PE pointer encodings (LSB Core spec, .eh_frame_hdr)
_PE_OMIT = 0xFF
_PE_FORMATS = {0x00: "Q", 0x02: "H", 0x03: "I", 0x04: "Q", 0x0A: "h", 0x0B: "i", 0x0C: "q"}


def _read_encoded(c: Cursor, enc: int, sec_addr: int) -> int:
    """A DW_EH_PE-encoded pointer from ``.eh_frame_hdr`` (absptr/pcrel/datarel)."""
    fmt = _PE_FORMATS.get(enc & 0x0F)
    app = enc & 0x70
    if fmt is None or app not in (0x00, 0x10, 0x30):
        raise c.error(f"unsupported pointer encoding {enc:#x}")
    pos = c.pos
    val = c.unpack(struct.Struct("<" + fmt), "encoded pointer")[0]
    if app == 0x10:
        val += sec_addr + c.base + pos
    elif app == 0x30:
        val += sec_addr
    return val & 0xFFFFFFFFFFFFFFFF


# --- DWARF expressions (the subset CFI uses) -----------------------------------

class _ExprError(Exception):
    pass


def _eval_expr(code: bytes, regs: dict[str, int], read_u64: Callable[[int], int],
               push_cfa: int | None = None) -> int:
    """Evaluate a DWARF location expression of a CFI rule; returns the top of stack.

    Supports the operations the x86-64 toolchains emit in CFI (PLT entries,
    glibc's signal trampoline, realigned stacks): ``breg*``, ``bregx``,
    ``deref``, constants, arithmetic, comparisons, stack ops.  A register that
    is unknown, or an unsupported op, raises :class:`_ExprError`.
    """
    c = Cursor(bytes(code), "CFI expression")
    stack: list[int] = [] if push_cfa is None else [push_cfa]
    M = 0xFFFFFFFFFFFFFFFF

    def reg(num: int) -> int:
        name = DWARF_REGS.get(num)
        if name is None or name not in regs:
            raise _ExprError(f"expression uses unknown register {num}")
        return regs[name]

    def pop() -> int:
        if not stack:
            raise _ExprError("expression stack underflow")
        return stack.pop()

    for _ in range(_MAX_EXPR_OPS):
        if c.at_end():
            break
        op = c.u8()
        if 0x70 <= op <= 0x8F:                      # DW_OP_breg0..31
            stack.append((reg(op - 0x70) + _sleb(c)) & M)
        elif op == 0x92:                            # DW_OP_bregx
            r = _uleb(c)
            stack.append((reg(r) + _sleb(c)) & M)
        elif 0x30 <= op <= 0x4F:                    # DW_OP_lit0..31
            stack.append(op - 0x30)
        elif op == 0x08:
            stack.append(c.u8())
        elif op == 0x09:
            stack.append(struct.unpack("<b", c.bytes(1))[0] & M)
        elif op == 0x0A:
            stack.append(c.u16())
        elif op == 0x0B:
            stack.append(struct.unpack("<h", c.bytes(2))[0] & M)
        elif op == 0x0C:
            stack.append(c.u32())
        elif op == 0x0D:
            stack.append(c.i32() & M)
        elif op == 0x0E:
            stack.append(c.u64())
        elif op == 0x0F:
            stack.append(c.i64() & M)
        elif op == 0x10:                            # DW_OP_constu
            stack.append(_uleb(c) & M)
        elif op == 0x11:                            # DW_OP_consts
            stack.append(_sleb(c) & M)
        elif op == 0x06:                            # DW_OP_deref
            stack.append(read_u64(pop()))
        elif op == 0x12:                            # dup
            v = pop(); stack += [v, v]
        elif op == 0x13:                            # drop
            pop()
        elif op == 0x14:                            # over
            if len(stack) < 2:
                raise _ExprError("expression stack underflow")
            stack.append(stack[-2])
        elif op == 0x16:                            # swap
            b, a = pop(), pop(); stack += [b, a]
        elif op == 0x23:                            # plus_uconst
            stack.append((pop() + _uleb(c)) & M)
        elif op in _BINOPS:
            b, a = pop(), pop()
            stack.append(_BINOPS[op](a, b) & M)
        elif op == 0x96:                            # nop
            pass
        else:
            raise _ExprError(f"unsupported DWARF expression op {op:#x}")
        if len(stack) > _MAX_EXPR_OPS:
            raise _ExprError("expression stack too deep")
    else:
        raise _ExprError("expression longer than the bound")
    if not stack:
        raise _ExprError("expression left an empty stack")
    return stack[-1]


def _signed(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


_BINOPS: dict[int, Callable[[int, int], int]] = {
    0x1A: lambda a, b: a & b,
    0x1C: lambda a, b: a - b,
    0x1E: lambda a, b: a * b,
    0x21: lambda a, b: a | b,
    0x22: lambda a, b: a + b,
    0x24: lambda a, b: a << b if b < 64 else 0,
    0x25: lambda a, b: a >> b if b < 64 else 0,
    0x27: lambda a, b: a ^ b,
    0x29: lambda a, b: int(a == b),
    0x2A: lambda a, b: int(_signed(a) >= _signed(b)),
    0x2B: lambda a, b: int(_signed(a) > _signed(b)),
    0x2C: lambda a, b: int(_signed(a) <= _signed(b)),
    0x2D: lambda a, b: int(_signed(a) < _signed(b)),
    0x2E: lambda a, b: int(a != b),
}


# --- CFI rows -----------------------------------------------------------------

@dataclass
class _Row:
    """The unwind rule row for one PC: how to find the CFA and each register."""

    cfa_reg: int | None = None
    cfa_off: int = 0
    cfa_expr: bytes | None = None
    #: DWARF register → (rule, arg): "u" undefined, "s" same value, "o" offset(N),
    #: "vo" val_offset(N), "r" register(R), "e" expression, "ve" val_expression
    rules: dict[int, tuple[str, object]] = field(default_factory=dict)
    signal: bool = False          # the CIE says 'S': this is a signal trampoline
    ra_reg: int = RA_REG


def _copy_row(r: _Row) -> _Row:
    return _Row(r.cfa_reg, r.cfa_off, r.cfa_expr, dict(r.rules), r.signal, r.ra_reg)


def _execute(row: _Row, insns, caf: int, daf: int, loc: int, target: int,
             initial: _Row | None, where: str) -> _Row:
    """Run CFI instructions from ``loc`` until the row for ``target`` is complete."""
    stack: list[_Row] = []
    for n, ins in enumerate(insns):
        if n > _MAX_CFI_INSNS:
            raise BadData(where, None, "too many CFI instructions")
        op, a = ins.opcode, ins.args
        if op == DW_CFA.advance_loc or op in (DW_CFA.advance_loc1, DW_CFA.advance_loc2, DW_CFA.advance_loc4):
            loc += a[0] * caf
            if loc > target:
                return row
        elif op == DW_CFA.set_loc:
            loc = a[0]
            if loc > target:
                return row
        elif op == DW_CFA.def_cfa:
            row.cfa_reg, row.cfa_off, row.cfa_expr = a[0], a[1], None
        elif op == DW_CFA.def_cfa_sf:
            row.cfa_reg, row.cfa_off, row.cfa_expr = a[0], a[1] * daf, None
        elif op == DW_CFA.def_cfa_register:
            row.cfa_reg, row.cfa_expr = a[0], None
        elif op == DW_CFA.def_cfa_offset:
            row.cfa_off = a[0]
        elif op == DW_CFA.def_cfa_offset_sf:
            row.cfa_off = a[0] * daf
        elif op == DW_CFA.def_cfa_expression:
            row.cfa_expr = bytes(a[0])
        elif op == DW_CFA.undefined:
            row.rules[a[0]] = ("u", None)
        elif op == DW_CFA.same_value:
            row.rules[a[0]] = ("s", None)
        elif op in (DW_CFA.offset, DW_CFA.offset_extended, DW_CFA.offset_extended_sf):
            row.rules[a[0]] = ("o", a[1] * daf)
        elif op in (DW_CFA.val_offset, DW_CFA.val_offset_sf):
            row.rules[a[0]] = ("vo", a[1] * daf)
        elif op == DW_CFA.register:
            row.rules[a[0]] = ("r", a[1])
        elif op == DW_CFA.expression:
            row.rules[a[0]] = ("e", bytes(a[1]))
        elif op == DW_CFA.val_expression:
            row.rules[a[0]] = ("ve", bytes(a[1]))
        elif op in (DW_CFA.restore, DW_CFA.restore_extended):
            if initial is not None and a[0] in initial.rules:
                row.rules[a[0]] = initial.rules[a[0]]
            else:
                row.rules.pop(a[0], None)
        elif op == DW_CFA.remember_state:
            if len(stack) > 64:
                raise BadData(where, None, "DW_CFA_remember_state nested deeper than 64")
            stack.append(_copy_row(row))
        elif op == DW_CFA.restore_state:
            if not stack:
                raise BadData(where, None, "DW_CFA_restore_state without remember_state")
            saved = stack.pop()
            saved.signal, saved.ra_reg = row.signal, row.ra_reg
            row = saved
        elif op in (DW_CFA.nop, DW_CFA.GNU_args_size):
            pass
        else:
            raise BadData(where, None, f"unsupported CFI instruction {op!r}")
    return row


class _CfiSource:
    """The CFI of one ELF image (a file or the vDSO), with lazy FDE lookup by link-time PC."""

    def __init__(self, name: str, elf: ELFFile, debug_elf: Callable[[], ELFFile | None] | None = None):
        self.name = name
        self._elf = elf
        self._debug_elf = debug_elf
        self._rows: dict[int, _Row | None] = {}
        self._cies: dict[tuple[int, int], _Row] = {}
        self._eh: CallFrameInfo | None = None
        self._hdr: tuple[list[int], list[int]] | None = None
        self._eh_sorted: tuple[list[int], list[FDE]] | None = None
        self._dbg_sorted: tuple[list[int], list[FDE]] | None = None
        self._eh_addr = 0
        self._bad: set[int] = set()         # offsets of FDEs that failed to parse
        self._init_eh()

    @staticmethod
    def _structs() -> DWARFStructs:
        return DWARFStructs(little_endian=True, dwarf_format=32, address_size=8)

    def _init_eh(self) -> None:
        sec = self._elf.get_section_by_name(".eh_frame")
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            return
        data = sec.data()
        self._eh_addr = sec["sh_addr"]
        self._eh = CallFrameInfo(io.BytesIO(data), len(data), sec["sh_addr"], self._structs(), for_eh_frame=True)
        hdr = self._elf.get_section_by_name(".eh_frame_hdr")
        if hdr is not None and hdr["sh_type"] != "SHT_NOBITS":
            try:
                self._hdr = self._parse_hdr(hdr.data(), hdr["sh_addr"])
            except BadData:
                self._hdr = None

    def _parse_hdr(self, data: bytes, addr: int) -> tuple[list[int], list[int]] | None:
        c = Cursor(data, f"{self.name}: .eh_frame_hdr")
        version, ptr_enc, count_enc, table_enc = c.unpack(struct.Struct("<4B"), "header")
        if version != 1:
            raise c.error(f".eh_frame_hdr version {version} is not supported; this build reads version 1")
        if ptr_enc != _PE_OMIT:
            _read_encoded(c, ptr_enc, addr)
        if count_enc == _PE_OMIT or table_enc != 0x3B:      # datarel | sdata4, what every linker writes
            return None
        count = _read_encoded(c, count_enc, addr)
        c.check_count(count, 8, "search table")
        locs, fdes = [], []
        for a, b in struct.iter_unpack("<ii", c.bytes(8 * count, "search table")):
            locs.append((a + addr) & 0xFFFFFFFFFFFFFFFF)
            fdes.append((b + addr) & 0xFFFFFFFFFFFFFFFF)
        return locs, fdes

    # -- lookup -------------------------------------------------------------
    def row_for(self, pc: int) -> _Row | None:
        """The CFI row at link-time ``pc``, or None if no FDE covers it."""
        if pc in self._rows:
            return self._rows[pc]
        row = None
        try:
            fde = self._fde_for(pc)
            if fde is not None:
                row = self._row_in(fde, pc)
        except BadData:
            self._rows[pc] = None           # warn once per PC, then treat it as uncovered
            raise
        if len(self._rows) < 1 << 16:
            self._rows[pc] = row
        return row

    def _fde_for(self, pc: int) -> FDE | None:
        fde = None
        if self._eh is not None:
            if self._hdr is not None:
                locs, offs = self._hdr
                i = bisect.bisect_right(locs, pc) - 1
                if i >= 0:
                    fde = self._parse_at(self._eh, offs[i] - self._eh_addr, ".eh_frame")
            else:
                if self._eh_sorted is None:
                    self._eh_sorted = self._sorted(self._eh, ".eh_frame")
                fde = self._bisect(self._eh_sorted, pc)
            if fde is not None and not _covers(fde, pc):
                fde = None
        if fde is None:
            if self._dbg_sorted is None:
                self._dbg_sorted = self._load_debug_frame()
            fde = self._bisect(self._dbg_sorted, pc)
        return fde

    def _parse_at(self, cfi: CallFrameInfo, off: int, sec: str) -> FDE | None:
        if off in self._bad:
            return None                     # already reported
        try:
            e = cfi._parse_entry_at(off)  # one record: pyelftools has no public call for it
        except (ELFError, DWARFError, ValueError, KeyError, AssertionError, struct.error) as e:
            self._bad.add(off)
            raise BadData(f"{self.name}: {sec}", off, f"cannot parse FDE: {e}") from None
        return e if isinstance(e, FDE) else None

    def _sorted(self, cfi: CallFrameInfo, sec: str) -> tuple[list[int], list[FDE]]:
        try:
            ents = [e for e in cfi.get_entries() if isinstance(e, FDE)]
        except (ELFError, DWARFError, ValueError, KeyError, AssertionError, struct.error) as e:
            raise BadData(f"{self.name}: {sec}", None, f"cannot parse CFI: {e}") from None
        ents.sort(key=lambda f: f["initial_location"])
        return [f["initial_location"] for f in ents], ents

    @staticmethod
    def _bisect(table: tuple[list[int], list[FDE]], pc: int) -> FDE | None:
        locs, fdes = table
        i = bisect.bisect_right(locs, pc) - 1
        if i >= 0 and _covers(fdes[i], pc):
            return fdes[i]
        return None

    def _load_debug_frame(self) -> tuple[list[int], list[FDE]]:
        for elf in (self._elf, self._debug_elf() if self._debug_elf else None):
            if elf is None:
                continue
            sec = elf.get_section_by_name(".debug_frame")
            if sec is None or sec["sh_type"] == "SHT_NOBITS":
                continue
            data = sec.data()
            cfi = CallFrameInfo(io.BytesIO(data), len(data), sec["sh_addr"], self._structs(), for_eh_frame=False)
            try:
                return self._sorted(cfi, ".debug_frame")
            except BadData:
                continue
        return [], []

    def _row_in(self, fde: FDE, pc: int) -> _Row:
        cie: CIE = fde.cie
        where = f"{self.name}: FDE at {fde.offset:#x}"
        key = (cie.offset, cie["CIE_id"])     # CIE_id: 0 in .eh_frame, all ones in .debug_frame
        init = self._cies.get(key)
        caf, daf = cie["code_alignment_factor"], cie["data_alignment_factor"]
        if init is None:
            aug = cie["augmentation"] or b""
            init = _Row(signal=b"S" in aug, ra_reg=cie["return_address_register"])
            init = _execute(init, cie.instructions, caf, daf, 0, -1 + (1 << 64), None, where)
            self._cies[key] = init
        return _execute(_copy_row(init), fde.instructions, caf, daf, fde["initial_location"], pc, init, where)


def _covers(fde: FDE, pc: int) -> bool:
    lo = fde["initial_location"]
    return lo <= pc < lo + fde["address_range"]


# --- symbols ------------------------------------------------------------------

_ELF64_SYM = struct.Struct("<IBBHQQ")
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_STB_LOCAL = 0


class _Symbols:
    """Function symbols of one file (plus its debug file), sorted by address."""

    def __init__(self, elfs: list[tuple[str, ELFFile]]):
        # address -> (rank, size, name); aliases at one address: the one with a
        # size, then global/weak over local, then the plainest (fewest leading
        # underscores, shortest) name wins
        seen: dict[int, tuple[tuple[int, int, int, int], int, str]] = {}
        for name, elf in elfs:
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if sec is None or sec["sh_type"] == "SHT_NOBITS":
                    continue
                try:
                    strtab = elf.get_section(sec["sh_link"]).data()
                    data = sec.data()
                except (ELFError, ValueError, IndexError):
                    continue
                sc = Cursor(strtab, f"{name}: {secname} strings")
                n = len(data) // _ELF64_SYM.size
                for st_name, info, _other, shndx, value, size in _ELF64_SYM.iter_unpack(
                        data[:n * _ELF64_SYM.size]):
                    if (info & 0xF) not in (_STT_FUNC, _STT_GNU_IFUNC) or shndx == 0 or value == 0:
                        continue
                    try:
                        sym = sc.cstr_at(st_name)
                    except BadData:
                        continue
                    rank = (size == 0, (info >> 4) == _STB_LOCAL, len(sym) - len(sym.lstrip("_")), len(sym))
                    old = seen.get(value)
                    if old is None or rank < old[0]:
                        seen[value] = (rank, size, sym)
        if elfs:
            for addr, sym in _plt_stubs(elfs[-1][1]):
                seen.setdefault(addr, ((0, 0, 0, 0), _PLT_ENTRY, sym))
        items = sorted(seen.items())
        self._addrs = [a for a, _ in items]
        self._vals = [(size, sym) for _, (_rank, size, sym) in items]

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the function containing link-time ``addr``."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        size, name = self._vals[i]
        start = self._addrs[i]
        if size and addr >= start + size:
            return None
        return name, addr - start


_ELF64_RELA = struct.Struct("<QQq")
_PLT_ENTRY = 16


def _plt_stubs(elf: ELFFile) -> list[tuple[int, str]]:
    """``(address, "name@plt")`` of each PLT stub of ``.plt`` / ``.plt.sec``.

    A stub is named by the GOT slot its ``jmp *slot(%rip)`` (``ff 25 disp32``,
    possibly after ``endbr64``/``bnd``) goes through, and the ``.rela.plt``
    relocation of that slot.  (The order of ``.rela.plt`` does not follow the
    stubs: libc's has IRELATIVE entries and its own order.)
    """
    rela, dynsym = elf.get_section_by_name(".rela.plt"), elf.get_section_by_name(".dynsym")
    if rela is None or dynsym is None:
        return []
    try:
        relocs = rela.data()
        syms = dynsym.data()
        strs = Cursor(elf.get_section(dynsym["sh_link"]).data(), ".dynstr")
    except (ELFError, ValueError, IndexError):
        return []
    slots: dict[int, str] = {}
    nsyms = len(syms) // _ELF64_SYM.size
    for off, info, _add in _ELF64_RELA.iter_unpack(relocs[:len(relocs) // _ELF64_RELA.size * _ELF64_RELA.size]):
        idx = info >> 32
        if 0 < idx < nsyms:
            try:
                slots[off] = strs.cstr_at(_ELF64_SYM.unpack_from(syms, idx * _ELF64_SYM.size)[0])
            except BadData:
                continue
    out = []
    for secname in (".plt", ".plt.sec"):
        sec = elf.get_section_by_name(secname)
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            continue
        data, base = sec.data(), sec["sh_addr"]
        for pos in range(0, len(data) - _PLT_ENTRY + 1, _PLT_ENTRY):
            k = data.find(b"\xff\x25", pos, pos + 9)
            if k < 0 or k + 6 > len(data):
                continue
            slot = base + k + 6 + struct.unpack_from("<i", data, k + 2)[0]
            name = slots.get(slot)
            if name is not None:
                out.append((base + pos, name + "@plt"))
    return out


def _debug_file_for(elf: ELFFile) -> str | None:
    """The separate debug file found through the build-id (``/usr/lib/debug/.build-id/xx/rest.debug``)."""
    sec = elf.get_section_by_name(".note.gnu.build-id")
    if sec is None:
        return None
    try:
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                bid = note["n_desc"]
                p = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
                return p if os.path.exists(p) else None
    except (ELFError, ValueError):
        return None
    return None


class _FileData:
    """The CFI and symbols of one ELF image (a file or the vDSO), opened lazily.

    Independent of where the image is loaded, so one instance serves every
    target that maps the same file (see :func:`_file_data`).
    """

    def __init__(self, name: str, opener: Callable[[], ELFFile]):
        self.name = name
        self._opener = opener
        self._elf: ELFFile | None = None
        self._dbg: ELFFile | None | bool = False
        self._cfi: _CfiSource | None = None
        self._syms: _Symbols | None = None
        self.broken: str | None = None

    @property
    def elf(self) -> ELFFile:
        if self._elf is None:
            self._elf = self._opener()
        return self._elf

    def debug_elf(self) -> ELFFile | None:
        if self._dbg is False:
            self._dbg = None
            path = None
            if not self.name.startswith("["):
                try:
                    from .formats.elf import debug_file_for
                    path = debug_file_for(self.name)
                except (ImportError, MappedTraceError, OSError, TypeError, ValueError):
                    path = _debug_file_for(self.elf)
            if path:
                try:
                    self._dbg = ELFFile(open(path, "rb"))
                except (OSError, ELFError):
                    self._dbg = None
        return self._dbg  # type: ignore[return-value]

    @property
    def cfi(self) -> _CfiSource:
        if self._cfi is None:
            self._cfi = _CfiSource(self.name, self.elf, self.debug_elf)
        return self._cfi

    def symbol(self, link_pc: int) -> tuple[str, int] | None:
        if self._syms is None:
            elfs = [(self.name, self.elf)]
            dbg = self.debug_elf()
            if dbg is not None:
                elfs.insert(0, (self.name + " (debug)", dbg))
            self._syms = _Symbols(elfs)
        return self._syms.lookup(link_pc)


#: Per-file data shared by every Unwinder, keyed by (real path, size, mtime).
_FILES: dict[tuple[str, int, int], _FileData] = {}
_FILES_MAX = 32


def _file_data(path: str) -> _FileData:
    """The cached :class:`_FileData` of ``path`` (re-read when the file changed)."""
    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (path, -1, -1)
    fd = _FILES.pop(key, None)
    if fd is None:
        fd = _FileData(path, lambda: ELFFile(open(path, "rb")))
        while len(_FILES) >= _FILES_MAX:
            _FILES.pop(next(iter(_FILES)))   # the least recently used
    _FILES[key] = fd
    return fd


class _Image:
    """One ELF image as mapped in one target: its file data and load bias."""

    def __init__(self, data: _FileData, bias: int):
        self.data = data
        self.bias = bias
        self.name = data.name

    @property
    def broken(self) -> str | None:
        return self.data.broken

    @broken.setter
    def broken(self, why: str | None) -> None:
        self.data.broken = why

    @property
    def cfi(self) -> _CfiSource:
        return self.data.cfi

    def symbol(self, pc: int) -> tuple[str, int] | None:
        return self.data.symbol(pc - self.bias)


# --- the unwinder ---------------------------------------------------------------

class Unwinder:
    """Unwinds the threads of a stopped target with CFI.

    :param target: the stopped process or snapshot
    :param modules: its modules (built from ``target`` when omitted)
    :param max_depth: most frames returned per thread

    Parsed CFI, rows per PC and symbols are cached per file (shared by every
    Unwinder in the process, re-read when the file changes), so unwinding many
    threads, or many snapshots of one program, is cheap.
    """

    def __init__(self, target: Target, modules: ModuleMap | None = None, max_depth: int = 512):
        self.target = target
        self.modules = modules if modules is not None else ModuleMap(target)
        self.max_depth = max_depth
        #: one-line reasons why an unwind stopped early, or a source was skipped
        self.warnings: list[str] = []
        self._images: dict[str, _Image] = {}
        self._vdso: tuple[int, int, _Image] | None | bool = False

    # -- images ---------------------------------------------------------------
    def _image_at(self, pc: int) -> tuple[_Image | None, str | None]:
        m: Module | None = self.modules.module_at(pc)
        if m is not None:
            img = self._images.get(m.path)
            if img is None:
                img = self._images[m.path] = _Image(_file_data(m.path), m.bias)
            return img, m.path
        v = self._vdso_image()
        if v is not None and v[0] <= pc < v[1]:
            return v[2], "[vdso]"
        return None, None

    def _vdso_image(self) -> tuple[int, int, _Image] | None:
        if self._vdso is False:
            self._vdso = None
            for mp in self.target.mappings:
                if mp.path == "[vdso]":
                    try:
                        data = self.target.read(mp.start, mp.size)
                        elf = ELFFile(io.BytesIO(data))
                        first = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
                        bias = mp.start - first["p_vaddr"] + first["p_offset"]
                    except (TargetFault, ELFError, StopIteration, ValueError) as e:
                        self.warnings.append(f"[vdso] at {mp.start:#x}: cannot read its ELF image ({e})")
                        break
                    self._vdso = (mp.start, mp.end, _Image(_FileData("[vdso]", lambda elf=elf: elf), bias))
                    break
        return self._vdso  # type: ignore[return-value]

    def _image_call(self, img: _Image, fn: Callable[[], object], what: str) -> object:
        if img.broken:
            return None
        try:
            return fn()
        except (OSError, ELFError, DWARFError) as e:
            img.broken = f"{img.name}: cannot read {what}: {e}"
            self.warnings.append(img.broken)
        except BadData as e:
            self.warnings.append(e.message)
        except (ValueError, KeyError, IndexError, AttributeError, TypeError, struct.error) as e:
            self.warnings.append(f"{img.name}: unusable {what} ({type(e).__name__}: {e})")
        return None

    def symbolize(self, pc: int) -> tuple[str | None, str | None, int | None]:
        """(module path, function name, offset in it) for a run-time ``pc``."""
        img, path = self._image_at(pc)
        if img is None:
            return None, None, None
        s = self._image_call(img, lambda: img.symbol(pc), "symbols")
        if s is None:
            return path, None, None
        return path, s[0], s[1]  # type: ignore[index]

    # -- walking --------------------------------------------------------------
    def unwind_all(self) -> dict[int, list[Frame]]:
        """The frames of every thread of the target, by thread id (see :meth:`unwind`)."""
        return {th.tid: self.unwind(th) for th in self.target.threads}

    def unwind(self, thread: ThreadState) -> list[Frame]:
        """The frames of ``thread``, innermost first.

        Never raises on a bad stack: the walk stops and a one-line reason is
        appended to :attr:`warnings`.  When it stops early like that (or at
        the depth bound), the last frame's ``sp_high`` is extended to the end
        of its stack mapping, so a conservative scan of that frame still
        covers the part of the stack that was not unwound.
        """
        t = self.target
        regs = {n: v for n, v in thread.regs.items() if n in _TRACKED}
        how = "top"
        frames: list[Frame] = []
        stack_map = t.mapping_at(thread.regs.get("rsp", 0))
        problem: str | None = None
        for index in range(self.max_depth):
            pc = regs.get("rip")
            rsp = regs.get("rsp")
            if pc is None or rsp is None:
                break
            lookup = pc - 1 if how in ("cfi", "frame-pointer") else pc
            img, path = self._image_at(lookup)
            func = off = None
            if img is not None:
                s = self._image_call(img, lambda: img.symbol(lookup), "symbols")
                if s is not None:
                    func, off = s  # type: ignore[misc]
                    off += pc - lookup
            frame = Frame(index, pc, None, dict(regs), path, func, how, rsp, rsp, off)
            frames.append(frame)
            where = f"thread {thread.tid}: frame #{index} at {pc:#x}"
            try:
                new_regs, cfa, new_how, why = self._step(frame, img, lookup, stack_map)
            except TargetFault as e:
                problem = f"{where}: {e.message}"
                break
            except (_ExprError, BadData) as e:
                problem = f"{where}: {e.message if isinstance(e, BadData) else e}"
                break
            except (ValueError, KeyError, IndexError, AttributeError, TypeError, struct.error) as e:
                # malformed unwind data that slipped past pyelftools' checks
                problem = f"{where}: unusable unwind data ({type(e).__name__}: {e})"
                break
            if new_how == "signal" and img is not None and lookup != pc:
                # a signal trampoline's FDE starts one byte early on purpose;
                # name the frame by its own PC (``__restore_rt``)
                s = self._image_call(img, lambda: img.symbol(pc), "symbols")
                if s is not None:
                    frame.function, frame.symbol_offset = s  # type: ignore[misc]
            frame.cfa = cfa
            if cfa is not None:
                frame.sp_high = cfa
            if new_how == "signal":
                frame.sp_high = self._sigframe_end(rsp, cfa)
            frame.keeps = self._row_keeps if new_how == "cfi" else frozenset()
            if why:
                problem = f"{where}: {why}"
                break
            if "rip" not in new_regs:
                break                                   # the CFI says: the outermost frame
            if new_regs["rip"] == 0:
                problem = f"{where}: return address is 0"
                break
            nsp = new_regs.get("rsp")
            if new_how == "signal":
                # the handler may have run on another stack (sigaltstack)
                stack_map = t.mapping_at(nsp) if nsp is not None else None
            elif nsp is None or nsp <= rsp:
                problem = (f"{where}: stack pointer does not grow "
                           f"({rsp:#x} -> {'unknown' if nsp is None else hex(nsp)})")
                break
            regs, how = new_regs, new_how
        else:
            problem = f"thread {thread.tid}: the depth bound of {self.max_depth} frames"
        if problem is not None:
            self.warnings.append(f"{problem}; unwinding stopped")
            last = frames[-1] if frames else None
            m = t.mapping_at(last.sp_low) if last is not None else None
            if last is not None and m is not None and m.end > last.sp_high:
                last.sp_high = m.end
        return frames

    def _step(self, frame: Frame, img: _Image | None, lookup: int, stack_map
              ) -> tuple[dict[str, int], int | None, str, str | None]:
        """Registers of the caller of ``frame``: (regs, cfa of frame, how, reason-to-stop)."""
        row = None
        self._row_keeps: frozenset[str] = frozenset()
        if img is not None:
            row = self._image_call(img, lambda: img.cfi.row_for(lookup - img.bias), "CFI")
        regs = frame.regs
        if isinstance(row, _Row):
            return self._apply_row(row, regs)
        # no CFI: the rbp chain
        rbp = regs.get("rbp")
        if rbp is None:
            return {}, None, "frame-pointer", "no CFI for this PC and rbp is unknown"
        if not (regs["rsp"] <= rbp and stack_map is not None and stack_map.contains(rbp)
                and stack_map.contains(rbp + 15)):
            return {}, None, "frame-pointer", (
                f"no CFI for this PC and rbp {rbp:#x} is not a frame pointer into the stack")
        saved_rbp = self.target.read_u64(rbp)
        ra = self.target.read_u64(rbp + 8)
        cfa = rbp + 16
        new = {"rsp": cfa, "rip": ra, "rbp": saved_rbp}
        return new, cfa, "frame-pointer", None

    def _apply_row(self, row: _Row, regs: dict[str, int]
                   ) -> tuple[dict[str, int], int | None, str, str | None]:
        read = self.target.read_u64
        if row.cfa_expr is not None:
            cfa = _eval_expr(row.cfa_expr, regs, read)
        else:
            name = DWARF_REGS.get(row.cfa_reg) if row.cfa_reg is not None else None
            if name is None or name not in regs:
                return {}, None, "cfi", f"CFA register {row.cfa_reg} is unknown"
            cfa = (regs[name] + row.cfa_off) & 0xFFFFFFFFFFFFFFFF
        if row.signal:
            return self._signal_regs(regs, cfa)
        new: dict[str, int] = {}
        # callee-saved registers without a rule keep their value (SysV ABI);
        # caller-saved ones without a rule are unknown in the caller.
        for name in CALLEE_SAVED:
            if name in regs:
                new[name] = regs[name]
        self._row_keeps = frozenset(n for n in CALLEE_SAVED if n in regs and
                                    row.rules.get(_DWARF_NUM[n], ("s", None))[0] == "s")
        new["rsp"] = cfa
        ra_rule = row.rules.get(row.ra_reg)
        if ra_rule is None or ra_rule[0] == "u":
            # the end of the stack (e.g. _start, clone3 mark rip undefined)
            return {}, cfa, "cfi", None
        for num, (kind, arg) in row.rules.items():
            name = DWARF_REGS.get(num)
            if name is None:
                continue
            if kind == "u":
                new.pop(name, None)
            elif kind == "s":
                if name in regs:
                    new[name] = regs[name]
                else:
                    new.pop(name, None)
            elif kind == "o":
                new[name] = read((cfa + arg) & 0xFFFFFFFFFFFFFFFF)
            elif kind == "vo":
                new[name] = (cfa + arg) & 0xFFFFFFFFFFFFFFFF
            elif kind == "r":
                src = DWARF_REGS.get(arg)
                if src in regs:
                    new[name] = regs[src]
                else:
                    new.pop(name, None)
            elif kind == "e":
                new[name] = read(_eval_expr(arg, regs, read, push_cfa=cfa))
            elif kind == "ve":
                new[name] = _eval_expr(arg, regs, read, push_cfa=cfa)
        if row.ra_reg != RA_REG:
            # the return address column is another register (never on x86-64 in practice)
            ra = new.pop(DWARF_REGS.get(row.ra_reg, ""), None)
            new.pop("rip", None)
            if ra is not None:
                new["rip"] = ra
        if "rip" not in new:
            return new, cfa, "cfi", "the return address is not recoverable"
        return new, cfa, "cfi", None

    def _sigframe_end(self, rsp: int, cfa: int | None) -> int:
        """End of the signal frame at ``rsp`` (a ``__restore_rt`` frame's stack range).

        On the interrupted stack the CFA (the interrupted rsp) bounds it; on an
        alternate signal stack the CFA is on another stack, so the frame ends
        with its saved FPU area (``uc_mcontext.fpregs`` + ``extended_size``).
        """
        m = self.target.mapping_at(rsp)
        if cfa is not None and m is not None and m.contains(cfa - 1) and 0 < cfa - rsp <= _MAX_SIGFRAME:
            return cfa
        try:
            fp = self.target.read_u64(rsp + UCONTEXT_FPREGS_OFFSET)
            size = _FXSAVE_SIZE
            if fp:
                magic, ext, _xf, _xs = _FPX_SW_BYTES.unpack(
                    self.target.read(fp + _FPX_SW_BYTES_OFFSET, _FPX_SW_BYTES.size))
                if magic == _FP_XSTATE_MAGIC1:
                    size = ext
                end = fp + size
                if rsp < end <= rsp + _MAX_SIGFRAME:
                    return end
        except TargetFault:
            pass
        # the ucontext_t and the siginfo_t that follows it, at least
        return rsp + UCONTEXT_FPREGS_OFFSET + 8 + 1024

    def _signal_regs(self, regs: dict[str, int], cfa: int
                     ) -> tuple[dict[str, int], int | None, str, str | None]:
        # rsp of the trampoline frame points at the ucontext_t (the return
        # address into __restore_rt has been popped by the handler's ret).
        base = regs["rsp"] + UCONTEXT_MCONTEXT_OFFSET
        raw = self.target.read(base, _GREGS.size)
        vals = _GREGS.unpack(raw)
        by_off = {8 * i: v for i, v in enumerate(vals)}
        new = {name: by_off[off] for name, off in UCONTEXT_GREGS.items() if name != "eflags"}
        return new, cfa, "signal", None
