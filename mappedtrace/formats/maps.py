"""The decoded pointer maps of one binary: the stack maps joined with ``.mtmap``.

:meth:`BinaryMaps.load` reads the stack maps (``.mtstack``, the compact form
the pass writes, and/or LLVM's ``.llvm_stackmaps`` of older builds; both
decode to the same records) and ``.mtmap`` (spec: ``llvm_pass/FORMAT.md``),
keeps the MappedTrace records (ID tag ``0x4D54``), turns each record's
``(descriptor, location)`` operand pairs into :class:`MapEntry` values and
indexes them by PC; functions come from ``.mtmap`` with sizes from the ELF
symbol table, so :meth:`BinaryMaps.function_at` answers for any code address
(functions not compiled with the pass are reported ``skipped``).

Addresses are link-time addresses (the decoders resolve the relative ones of
FORMAT.md, "Addresses"); for a PIE or a shared library the caller adds the
module's load bias (:class:`~mappedtrace.modules.Module`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..errors import BadData
from . import elf
from . import allocsites as _as
from . import mtmap as _mt
from . import mtstack as _ms
from . import stackmap as _sm
from .mtmap import (AllocaInfo, FunctionInfo, GlobalInfo, Slot, TypeInfo,  # noqa: F401 (re-exported API)
                    SLOT_CONSERVATIVE, SLOT_FUNCTION, SLOT_UNTYPED, SLOT_WEAK,
                    TYPE_ERASED, TYPE_FLEX, TYPE_HAS_UNION, TYPE_RUST)
from .stackmap import Location  # noqa: F401 (re-exported API)

__all__ = [
    "Location", "MapEntry", "MapRecord", "Slot", "TypeInfo", "GlobalInfo", "AllocaInfo",
    "FunctionInfo", "BinaryMaps", "SLOT_UNTYPED", "SLOT_FUNCTION", "SLOT_CONSERVATIVE",
    "SLOT_WEAK", "TYPE_HAS_UNION", "TYPE_FLEX", "TYPE_ERASED", "TYPE_RUST",
    "decode_id", "decode_entries",
]

#: Bits 63..48 of a MappedTrace record ID.
ID_TAG = 0x4D54
ID_KIND_CALL = 1
ID_KIND_LOOP = 2
_KIND_NAMES = {ID_KIND_CALL: "call", ID_KIND_LOOP: "loop"}

ROLE_VALUE = 0
ROLE_SLOT = 1
ROLE_DERIVED = 2
_ROLE_NAMES = {ROLE_VALUE: "value", ROLE_SLOT: "slot", ROLE_DERIVED: "derived"}
_TYPE_MASK = (1 << 62) - 1
_U64 = (1 << 64) - 1

#: Number of ``Constant`` locations that open a statepoint record (cc, flags, #deopt).
STATEPOINT_HEADER = 3

#: DWARF numbers of the callee-saved registers (rbx, rbp, r12-r15): the only
#: registers whose value at a call's return address is the value at the call.
CALLEE_SAVED_DWARF = frozenset({3, 6, 12, 13, 14, 15})

SKIPPED_NO_MTMAP = "not compiled with the MappedTrace pass (no .mtmap entry)"


@dataclass(frozen=True)
class MapEntry:
    """One mapped thing at a PC.

    ``role`` is ``"value"`` (the location holds a pointer whose pointee has
    type ``type_id``) or ``"slot"`` (the location is the address of stack
    memory holding an object of type ``type_id``); ``type_id`` 0 is unknown.
    ``"derived"`` is a pointer equal to another VALUE of the record plus
    ``offset``: ``location`` is that value's location, ``type_id`` 0.  It
    points into the object its base points into, so the tracer needs only the
    base; it is there so that every live pointer's value can be recovered.
    """

    role: str
    type_id: int
    location: Location
    offset: int = 0


@dataclass
class MapRecord:
    """The entries valid at ``pc`` (link-time absolute address).

    ``kind`` is ``"call"`` (``pc`` is a call's return address) or ``"loop"``
    (a zero-byte loop map point).  When a call site and a loop map point share
    a PC, the record holds both sets of entries and ``kind`` is ``"call"``.
    """

    pc: int
    kind: str
    function_address: int
    entries: list[MapEntry]


#: Bit 39 of a MappedTrace record ID: the function entry of the record's
#: function holds its address relative to the table (FORMAT.md §1).
ID_RELATIVE_FN = 1 << 39


def _relative_entry(record_id: int) -> bool:
    return record_id >> 48 == ID_TAG and bool(record_id & ID_RELATIVE_FN)


def decode_id(record_id: int) -> str | None:
    """``"call"``, ``"loop"``, or None for an ID that is not a MappedTrace record."""
    if record_id >> 48 != ID_TAG:
        return None
    return _KIND_NAMES.get((record_id >> 40) & 0xFF)


class _Warnings:
    """Collects warnings, one line per kind of problem with a count."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}
        self.count: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        if kind not in self.first:
            self.first[kind] = message
        self.count[kind] = self.count.get(kind, 0) + 1

    def lines(self) -> list[str]:
        out = []
        for k, m in self.first.items():
            n = self.count[k]
            out.append(m if n == 1 else f"{m} (and {n - 1} more like it)")
        return out


def decode_entries(rec: _sm.StackMapRecord, kind: str, where: str,
                   warn: _Warnings | None = None) -> list[MapEntry]:
    """The :class:`MapEntry` list of one MappedTrace record (FORMAT.md §1).

    :raises BadData: when the statepoint header or a descriptor is malformed
    """
    w = warn or _Warnings()
    locs = rec.locations
    at = rec.section_offset
    if kind == "call":
        if len(locs) < STATEPOINT_HEADER or any(l.kind != "Constant" for l in locs[:STATEPOINT_HEADER]):
            raise BadData(where, at, f"call-site record {rec.id:#x} does not start with the 3 constant "
                                     f"statepoint header locations")
        ndeopt = locs[2].offset
        if not 0 <= ndeopt <= len(locs) - STATEPOINT_HEADER:
            raise BadData(where, at, f"call-site record {rec.id:#x} says {ndeopt} deopt operands; "
                                     f"it has {len(locs) - STATEPOINT_HEADER} locations after the header")
        # After the deopt operands LLVM lists a (base, derived) GC pointer pair
        # for every deopt value it spilled as a managed pointer: they repeat
        # deopt locations, so they are ignored without a warning (FORMAT.md §1).
        ops = locs[STATEPOINT_HEADER:STATEPOINT_HEADER + ndeopt]
    else:
        ops = locs
    if len(ops) % 2:
        w.add("odd", f"{where}+{at:#x}: record {rec.id:#x} has an odd number ({len(ops)}) of operands; "
                     f"the last one is ignored")
    out: list[MapEntry] = []
    #: pair index -> the VALUE entry decoded from it (bases of DERIVED pairs)
    values: dict[int, MapEntry] = {}
    for i in range(0, len(ops) - 1, 2):
        d, loc = ops[i], ops[i + 1]
        if d.kind not in ("Constant", "ConstantIndex"):
            raise BadData(where, at, f"record {rec.id:#x}: operand {i} should be a constant descriptor, "
                                     f"found a {d.kind} location")
        desc = d.offset & _U64
        role, tid = desc >> 62, desc & _TYPE_MASK
        if role not in _ROLE_NAMES:
            w.add("role", f"{where}+{at:#x}: record {rec.id:#x}: descriptor {desc:#x} has reserved role {role}; "
                          f"pair ignored")
            continue
        if role == ROLE_DERIVED:
            base = values.get(tid)
            if loc.kind not in ("Constant", "ConstantIndex") or tid >= i // 2:
                w.add("derived", f"{where}+{at:#x}: record {rec.id:#x}: a derived pointer whose base is pair "
                                 f"{tid} and whose offset is a {loc.kind} location (expected an earlier pair "
                                 f"and a constant); pair ignored")
            elif base is not None:   # a base that is null or was ignored leaves nothing to derive
                off = loc.offset if loc.kind == "Constant" else (loc.offset ^ (1 << 63)) - (1 << 63)
                out.append(_entry("derived", 0, base.location, off))
            continue
        if loc.kind == "Constant" and loc.offset == 0:
            continue  # a null pointer constant-folded by the backend: nothing to trace
        if role == ROLE_SLOT and loc.kind not in ("Direct", "Register", "Indirect"):
            # Direct [reg+off] is the usual form; now and then SelectionDAG hands
            # the alloca's address over in a register or a spill slot instead
            # (seen once in SQLite's balance()): the location still yields the address.
            w.add("slotkind", f"{where}+{at:#x}: record {rec.id:#x}: a stack slot at a {loc.kind} location "
                              f"(expected its address); pair ignored")
            continue
        if kind == "call" and loc.kind == "Register" and loc.dwarf_reg not in CALLEE_SAVED_DWARF:
            # The callee may overwrite a caller-saved register: by the time a
            # tracer sees this frame the value is gone (a map bug; see FORMAT.md §1).
            w.add("callersaved", f"{where}+{at:#x}: record {rec.id:#x}: a {_ROLE_NAMES[role]} in caller-saved "
                                 f"DWARF register {loc.dwarf_reg} at a call site is clobbered by the call; "
                                 f"pair ignored")
            continue
        if role == ROLE_VALUE and loc.kind in ("Register", "Indirect") and loc.size != 8:
            w.add("size", f"{where}+{at:#x}: record {rec.id:#x}: a {loc.size}-byte pointer value; "
                          f"only 8-byte values are mapped, pair ignored")
            continue
        me = _entry(_ROLE_NAMES[role], tid, loc)
        if role == ROLE_VALUE:
            values[i // 2] = me
        out.append(me)
    return out


def _entry(role: str, tid: int, loc: Location, offset: int = 0) -> MapEntry:
    key = (role, tid, loc, offset)
    me = _ENTRY_CACHE.get(key)
    if me is None:
        if len(_ENTRY_CACHE) > 1 << 16:
            _ENTRY_CACHE.clear()
        me = _ENTRY_CACHE[key] = MapEntry(role, tid, loc, offset)
    return me


#: An epilogue is at most a few pops and a stack adjustment.
_EPILOGUE_BYTES = 24
_EPILOGUE_MAX_INSNS = 8
_CS = None


def _is_epilogue(code: bytes | None, pc: int) -> bool:
    """``code`` (at ``pc``) is ``pop``s of registers, ``add``/``lea`` to rsp,
    ``leave``, ``mov rsp, rbp`` and nops, then ``ret``: it reads nothing."""
    global _CS
    if not code:
        return False
    if _CS is None:
        import capstone
        _CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for n, (_a, _s, mn, ops) in enumerate(_CS.disasm_lite(code, pc)):
        if n >= _EPILOGUE_MAX_INSNS:
            return False
        if mn == "ret" and not ops:
            return True
        if mn in ("nop", "leave") or (mn == "pop" and "[" not in ops) or (mn == "mov" and ops == "rsp, rbp"):
            continue
        if mn in ("add", "lea") and ops.startswith("rsp, ") and "rip" not in ops:
            continue
        return False
    return False


#: Equal entries repeat across records; MapEntry is frozen, so share them.
_ENTRY_CACHE: dict[tuple, MapEntry] = {}


class BinaryMaps:
    """The maps of one binary.

    :ivar path: the binary
    :ivar has_maps: False when it has none of ``.mtstack``, ``.llvm_stackmaps``, ``.mtmap``
        (``.mttypes`` alone is no maps: it only holds types)
    :ivar records: :class:`MapRecord` by PC
    :ivar functions: :class:`FunctionInfo` of ``.mtmap`` (plus functions that
        have stack map records but no ``.mtmap`` entry), sizes from the symtab
    :ivar types: :class:`TypeInfo` by id, deduplicated across modules
    :ivar globals: :class:`GlobalInfo`; a TLS global's ``address`` is its
        offset in the module's TLS block (from the ELF symbol), 0 if unresolved
    :ivar warnings: non-fatal problems met while loading
    :ivar section_sizes: bytes of ``.mtstack``, ``.llvm_stackmaps``, ``.mtmap`` and
        ``.mttypes`` (0 if absent)
    :ivar tables: the raw stack map tables (``.mtstack`` blocks first, then the
        ``.llvm_stackmaps`` tables); ``chunks``: the raw ``.mtmap`` chunks
    :ivar foreign_records: stack map records whose ID is not a MappedTrace ID
    """

    def __init__(self, path: str):
        self.path = path
        self.has_maps = False
        self.records: dict[int, MapRecord] = {}
        self.functions: list[FunctionInfo] = []
        self.types: dict[int, TypeInfo] = {}
        self.globals: list[GlobalInfo] = []
        self.warnings: list[str] = []
        self.section_sizes: dict[str, int] = {_ms.SECTION: 0, _sm.SECTION: 0, _mt.SECTION: 0,
                                              _mt.TYPES_SECTION: 0}
        self.tables: list[_sm.StackMapTable] = []
        self.chunks: list[_mt.Chunk] = []
        self.foreign_records = 0
        #: allocation sites of a ``--alloc-sites`` build (``.mtsites``), record addresses link-time
        self.sites: list[_as.AllocSite] = []
        #: the ``.mtsites`` blocks (one per module built with ``--alloc-sites``)
        self.site_blocks: list[_as.SiteBlock] = []
        self._by_fn: dict[int, list[int]] = {}
        self._starts: list[int] = []
        self._spans: list[tuple[int, int, FunctionInfo | None]] = []
        self._synth: dict[int, FunctionInfo] = {}
        self._returns: dict[int, bool] = {}

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str) -> "BinaryMaps":
        """Read and decode the maps of ``path``.

        :raises NoSuchFile: the file does not exist
        :raises BadData: not ELF, or a malformed map section (message names
            the section and the offset in it)
        :raises UnsupportedVersion: a map section in a version this build does not read
        """
        self = cls(path)
        elf.check_elf(path)
        ms = elf.section(path, _ms.SECTION)
        sm = elf.section(path, _sm.SECTION)
        mt = elf.section(path, _mt.SECTION)
        self.has_maps = ms is not None or sm is not None or mt is not None
        etype = elf.elf_type(path)
        if self.has_maps and etype == "ET_REL":
            self.warnings.append(f"{path}: a relocatable object: addresses in the maps are not relocated")
        warn = _Warnings()
        tt = elf.section(path, _mt.TYPES_SECTION)
        if mt is not None or tt is not None:
            where = f"{path}: {_mt.SECTION}"
            mw: list[str] = []
            if mt is not None:
                self.section_sizes[_mt.SECTION] = mt.size
                self.chunks = _mt.decode(mt.data, where, mw, mt.addr)
            records: list[TypeInfo] = []
            if tt is not None:
                self.section_sizes[_mt.TYPES_SECTION] = tt.size
                records = _mt.decode_types(tt.data, f"{path}: {_mt.TYPES_SECTION}", mw)
            self.types = _mt.merge_types(self.chunks, mw, where, records)
            self.warnings.extend(mw)
        seen: set[tuple[int, int]] = set()
        if ms is not None:
            self.section_sizes[_ms.SECTION] = ms.size
            where = f"{path}: {_ms.SECTION}"
            tables = _ms.decode(ms.data, where, ms.addr)
            self.tables.extend(tables)
            seen = {(r.id, r.pc) for t in tables for r in t.records}
            self._join_records(where, tables, warn)
        if sm is not None:
            self.section_sizes[_sm.SECTION] = sm.size
            where = f"{path}: {_sm.SECTION}"
            tables = _sm.decode(sm.data, where, sm.addr, _relative_entry)
            if seen:
                # A build with MAPPEDTRACE_LLVM_STACKMAPS=1 writes each record
                # to both sections; objects of older builds linked in have
                # theirs in .llvm_stackmaps only.
                for t in tables:
                    t.records = [r for r in t.records if (r.id, r.pc) not in seen]
            self.tables.extend(tables)
            self._join_records(where, tables, warn)
        st = elf.section(path, _as.SECTION)
        if st is not None and self.has_maps:
            self.sites, self.site_blocks = _as.decode_blocks(st.data, f"{path}: {_as.SECTION}", st.addr)
        self.warnings.extend(warn.lines())
        self._join_functions()
        self._join_globals()
        return self

    def _join_records(self, where: str, tables: list[_sm.StackMapTable], warn: _Warnings) -> None:
        for t in tables:
            for r in t.records:
                kind = decode_id(r.id)
                if kind is None:
                    self.foreign_records += 1
                    continue
                entries = decode_entries(r, kind, where, warn)
                pc = r.pc
                cur = self.records.get(pc)
                if cur is None:
                    self.records[pc] = MapRecord(pc, kind, r.function_address, entries)
                    continue
                if cur.function_address != r.function_address:
                    warn.add("pcfn", f"{where}+{r.section_offset:#x}: records at {pc:#x} belong to two "
                                     f"functions ({cur.function_address:#x}, {r.function_address:#x})")
                # A call's return address can also be a loop map point: both
                # descriptions hold at that PC, so keep the union.
                seen = set(cur.entries)
                cur.entries.extend(e for e in entries if e not in seen)
                if kind == "call":
                    cur.kind = "call"
        for pc, rec in self.records.items():
            self._by_fn.setdefault(rec.function_address, []).append(pc)
        for pcs in self._by_fn.values():
            pcs.sort()

    def _join_functions(self) -> None:
        by_addr: dict[int, FunctionInfo] = {}
        for ch in self.chunks:
            for f in ch.functions:
                if f.address:
                    sym = elf.symbol_at(self.path, f.address)
                    if sym is not None and sym.addr == f.address:
                        f.size = sym.size
                        if f.name == _mt.THUNK_NAME and f.reason == _mt.STD_REASONS[2]:
                            f.name = sym.name   # version 4 leaves a thunk's name to its symbol
                    by_addr.setdefault(f.address, f)
                self.functions.append(f)
        # Functions with records but no .mtmap entry (e.g. an object built by
        # plain LLVM stack maps): instrumented as far as the records go.
        for addr, pcs in sorted(self._by_fn.items()):
            if addr in by_addr or not addr:
                continue
            sym = elf.symbol_at(self.path, addr)
            name = sym.name if sym is not None and sym.addr == addr else f"fn_{addr:x}"
            kinds = [self.records[p].kind for p in pcs]
            f = FunctionInfo(name, addr, sym.size if sym is not None and sym.addr == addr else 0,
                             "instrumented", "", kinds.count("call"), kinds.count("loop"), 0, [])
            by_addr[addr] = f
            self.functions.append(f)
        # Spans for function_at: known functions, then every other function symbol.
        spans: dict[int, tuple[int, FunctionInfo | None]] = {a: (f.size, f) for a, f in by_addr.items()}
        for s in elf.function_symbols(self.path):
            if s.addr not in spans:
                spans[s.addr] = (s.size, None)
        starts = sorted(spans)
        self._starts = starts
        for i, a in enumerate(starts):
            size, f = spans[a]
            end = a + size if size else (starts[i + 1] if i + 1 < len(starts) else a + 1)
            self._spans.append((a, end, f))

    def _join_globals(self) -> None:
        for ch in self.chunks:
            for g in ch.globals:
                if g.tls and not g.address:
                    off = elf.symbol_address(self.path, g.name)
                    if off is None:
                        self.warnings.append(f"{self.path}: thread-local {g.name} is not in the symbol table; "
                                             f"its pointers cannot be found")
                    else:
                        g.address = off
                self.globals.append(g)

    # --------------------------------------------------------------- queries
    def record_at(self, pc: int) -> MapRecord | None:
        """The record whose PC is exactly ``pc`` (link-time address), or None."""
        return self.records.get(pc)

    def returns_at(self, pc: int) -> bool:
        """True when the code at ``pc`` (a return address, link-time) only
        restores callee-saved registers and the stack pointer, then returns.

        A frame stopped there holds nothing live: the call was in tail
        position (the pass leaves such calls plain, so that the backend may
        make them jumps; see ``n_tail_calls``).  The registers it restores
        belong to outer frames, which the unwinder recovers for them.
        """
        hit = self._returns.get(pc)
        if hit is None:
            hit = self._returns[pc] = _is_epilogue(elf.code_at(self.path, pc, _EPILOGUE_BYTES), pc)
        return hit

    def function_at(self, pc: int) -> FunctionInfo | None:
        """The function containing ``pc``: its ``.mtmap`` entry, or, for code
        the pass did not compile, a ``skipped`` entry built from the ELF
        symbol table; None outside every function symbol."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        start, end, f = self._spans[i]
        if not start <= pc < end:
            return None
        if f is not None:
            return f
        syn = self._synth.get(start)
        if syn is None:
            sym = elf.symbol_at(self.path, start)
            name = sym.name if sym is not None else f"fn_{start:x}"
            syn = FunctionInfo(name, start, end - start, "skipped", SKIPPED_NO_MTMAP, 0, 0, 0, [])
            self._synth[start] = syn
        return syn

    def map_point_pcs(self, function_address: int) -> list[int]:
        """Sorted PCs of the records of the function at ``function_address``."""
        return list(self._by_fn.get(function_address, ()))

    def type_name(self, type_id: int) -> str:
        """The name of type ``type_id`` (``"?"`` for 0, ``"type#<hex>"`` if not in the table)."""
        if type_id == 0:
            return "?"
        t = self.types.get(type_id)
        return t.name if t is not None and t.name else f"type#{type_id:x}"
