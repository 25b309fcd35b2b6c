"""Decoders of ``.mtmap`` and ``.mttypes``, MappedTrace's own sections
(spec: ``llvm_pass/FORMAT.md`` §2, §2a).

``.mtmap`` is a sequence of chunks (one per module), zero padding between
them.  Versions 1–3: a 56/64-byte header and four tables found by chunk
offsets: types, functions, globals and a string table (version 2: 48-byte
type headers + 32-byte slots + 24-byte fields, 40-byte functions + 24-byte
allocas, 32-byte globals; version 3: the same entries in LEB128).  Version 4
(what the pass writes): a 12-byte header, LEB128 counts, then the id table,
functions, globals and strings in that order; no types — each type is a
record of its own in ``.mttypes``, where the linker kept one copy of each
(:func:`decode_types`).  Types are deduplicated by id across chunks and
records: the first definition wins, a different one under the same id is a
warning; STORED slots (words one module found the program storing pointers
into) are merged from every definition.

Addresses: a version 1 chunk holds absolute (link-time) addresses; a version
2 chunk holds ``address - chunk address`` unless the entry's ABSOLUTE flag
is set (FORMAT.md §2, "Addresses"); :func:`decode` turns both into link-time
addresses when it is given the section's address.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..binreader import Cursor
from ..errors import UnsupportedVersion

SECTION = ".mtmap"
#: the type records of version 4 chunks (FORMAT.md §2a)
TYPES_SECTION = ".mttypes"
MAGIC = b"MTMP"
VERSION = 4
#: versions this build reads (1: absolute addresses only, no type fields;
#: 2: fixed-size tables; 3: LEB128 tables, type ids by reference; 4: the
#: types in ``.mttypes``, 4-byte relative addresses)
VERSIONS = (1, 2, 3, 4)
#: version of a ``.mttypes`` record (its first byte)
TYPE_RECORD_VERSION = 1

#: magic, u16 version, u16 header_size, u32 chunk_size, u32 flags, u32 n_types,
#: u32 n_functions, u32 n_globals, u32 strtab_size, u32 types_off,
#: u32 functions_off, u32 globals_off, u32 strtab_off, u32 module_name, u32 reserved
CHUNK_HEADER = struct.Struct("<4sHHIIIIIIIIIIII")
#: u64 type_id, u64 size, u32 name, u8 kind, u8 reserved, u16 flags, u32 n_slots,
#: u32 n_fields (version 2; reserved 0 in version 1), u64 elem_type, u64 flex_offset
TYPE_HEADER = struct.Struct("<QQIBBHIIQQ")
#: u64 offset, u64 target, u32 count, u32 stride, u32 flags, u32 reserved
SLOT = struct.Struct("<QQIIII")
#: u64 offset, u64 type_id, u32 name, u32 flags (version 2)
FIELD = struct.Struct("<QQII")
#: u64 address, u32 name, u32 reason, u16 status, u16 flags, u32 n_callsites,
#: u32 n_loop_points, u32 n_unmapped_calls, u32 n_allocas, u32 n_tail_calls
FUNCTION = struct.Struct("<QIIHHIIIII")
#: u64 type_id, u64 size, u32 name, u32 reserved
ALLOCA = struct.Struct("<QQII")
#: u64 address, u64 size, u64 type_id, u32 name, u32 flags
GLOBAL = struct.Struct("<QQQII")

#: version 3: u32 n_ids, u32 ids_off (the id table of type references), after the 56 bytes above
HEADER_V3_TAIL = struct.Struct("<II")
HEADER_V3_SIZE = 64
#: version 4: magic, u16 version, u16 header_size (12), u32 chunk_size; ULEB counts follow
HEADER_V4 = struct.Struct("<4sHHI")
#: version 4 function flags: no address (not emitted); a varargs thunk (nothing
#: follows the address); loop points, unmapped and tail calls written (else 0);
#: bits 4-5: the status; allocas written (else none)
FUNCTION_NO_ADDRESS = 0x2
FUNCTION_THUNK = 0x4
FUNCTION_COUNTS = 0x8
FUNCTION_ALLOCAS = 0x40
#: version 4: reasons written as a number below STD_REASON_LIMIT (FORMAT.md §2,
#: "Version 4"); the pass's StdReasons, same order
STD_REASONS = (
    "some calls cannot be mapped (intrinsics lowered to calls, inline asm, musttail, bundles)",
    "the returns_twice call (setjmp) itself is no map point",
    "varargs thunk",
)
STD_REASON_LIMIT = 16
#: name of a thunk entry when the ELF symbol table does not name its address
THUNK_NAME = "__mappedtrace_va_thunk"

assert CHUNK_HEADER.size == 56 and TYPE_HEADER.size == 48 and SLOT.size == 32 and FIELD.size == 24
assert FUNCTION.size == 40 and ALLOCA.size == 24 and GLOBAL.size == 32

# Slot flags
SLOT_UNTYPED = 0x1
SLOT_FUNCTION = 0x2
SLOT_CONSERVATIVE = 0x4
SLOT_WEAK = 0x8
#: a word the declared type calls non-pointer where the program stores a pointer
#: (found by the pass; always with UNTYPED | CONSERVATIVE)
SLOT_STORED = 0x10
# Field flags
FIELD_BASE = 0x1
FIELD_TEMPLATE_ARG = 0x2
#: a variant of a Rust enum with data (variants overlap; which one is live is not known)
FIELD_VARIANT = 0x4
# Type flags
TYPE_HAS_UNION = 0x1
TYPE_FLEX = 0x2
TYPE_ERASED = 0x4
TYPE_RUST = 0x8
# Chunk flags
CHUNK_RUST = 0x1
CHUNK_O0 = 0x2
# Global flags
GLOBAL_TLS = 0x1
GLOBAL_CONSTANT = 0x2
#: (version 2) the address is absolute, not relative to the chunk
GLOBAL_ABSOLUTE = 0x4
# Function flags (version 2)
FUNCTION_ABSOLUTE = 0x1
_U64 = 0xFFFF_FFFF_FFFF_FFFF

TYPE_KINDS = ("unknown", "scalar", "pointer", "struct", "union", "array", "function", "enum")
FUNCTION_STATUS = ("instrumented", "skipped", "partial")


@dataclass
class Slot:
    """A pointer-sized word (or ``count`` of them, ``stride`` apart) in an object."""

    offset: int
    target: int
    count: int = 1
    stride: int = 0
    flags: int = 0


@dataclass(frozen=True)
class Field:
    """A named member of a struct/union/class at ``offset`` (a base class
    when ``flags & FIELD_BASE``), or a template type argument
    (``FIELD_TEMPLATE_ARG``, offset 0), or a Rust enum's variant
    (``FIELD_VARIANT``: variants overlap)."""

    offset: int
    type_id: int
    name: str
    flags: int = 0

    @property
    def template_arg(self) -> bool:
        return bool(self.flags & FIELD_TEMPLATE_ARG)


@dataclass
class TypeInfo:
    """A type of the type table; ``kind`` is one of :data:`TYPE_KINDS`."""

    id: int
    name: str
    size: int
    kind: str
    flags: int = 0
    slots: list[Slot] | tuple = ()
    elem_type: int = 0
    flex_offset: int = 0
    #: members and template arguments (version 2 maps; empty in version 1)
    fields: list[Field] | tuple = ()

    @property
    def members(self) -> list[Field]:
        """The data members and base classes, in offset order."""
        return sorted((f for f in self.fields if not f.template_arg), key=lambda f: f.offset)

    @property
    def template_args(self) -> list[Field]:
        """The template type arguments, in declaration order."""
        return [f for f in self.fields if f.template_arg]


@dataclass
class AllocaInfo:
    name: str
    type_id: int
    size: int


@dataclass
class FunctionInfo:
    """A function: ``status`` is ``instrumented`` | ``skipped`` | ``partial``;
    ``size`` comes from the ELF symbol table (0 when unknown)."""

    name: str
    address: int
    size: int
    status: str
    reason: str
    n_callsites: int
    n_loop_points: int
    n_unmapped_calls: int
    allocas: list[AllocaInfo] = field(default_factory=list)
    #: calls in tail position left plain (nothing of the caller is live after them)
    n_tail_calls: int = 0


@dataclass
class GlobalInfo:
    """A global or thread-local holding pointers.  For ``tls`` the decoder
    leaves ``address`` 0; :mod:`maps` fills in the offset in the TLS block."""

    name: str
    address: int
    size: int
    type_id: int
    tls: bool
    constant: bool


@dataclass
class Chunk:
    """One module's chunk at ``section_offset``."""

    section_offset: int
    size: int
    flags: int
    module_name: str
    types: list[TypeInfo]
    functions: list[FunctionInfo]
    globals: list[GlobalInfo]

    @property
    def rust(self) -> bool:
        return bool(self.flags & CHUNK_RUST)


def _skip_padding(c: Cursor) -> bool:
    # Chunks of versions 1-3 are 8-byte aligned; version 4 chunks are not
    # aligned at all: a chunk starts at the first non-zero byte (its magic).
    while not c.at_end():
        if c.data[c.pos] != 0:
            return True
        c.pos += 1
    return False


class _Strings:
    def __init__(self, c: Cursor):
        self.c = c

    def get(self, off: int, what: str) -> str:
        if off == 0 and not self.c.data:
            return ""
        return self.c.cstr_at(off, what)


def _table(chunk: Cursor, off: int, end: int, what: str) -> Cursor:
    if off < CHUNK_HEADER.size and end > off:
        raise chunk.error(f"{what} offset {off:#x} overlaps the chunk header", at=0)
    return chunk.sub(off, end - off, what)


def _decode_chunk(c: Cursor, warnings: list[str], vaddr: int) -> Chunk:
    start = c.pos
    magic, version = c.unpack(HEADER_V4, "chunk header")[:2] if c.remaining >= HEADER_V4.size else (None, None)
    c.seek(start)
    if magic == MAGIC and version == 4:
        return _decode_chunk_v4(c, warnings, vaddr)
    if start % 8:
        raise c.error(f"a version 1-3 chunk starts at {c.base + start:#x}, which is not 8-byte aligned")
    (magic, version, hsize, csize, flags, ntyp, nfun, nglob, strsz,
     typ_off, fun_off, glob_off, str_off, modname, _res) = c.unpack(CHUNK_HEADER, "chunk header")
    if magic != MAGIC:
        raise c.error(f"bad chunk magic {magic!r} (expected {MAGIC!r})", at=start)
    if version not in VERSIONS:
        raise UnsupportedVersion(c.where, c.base + start + 4,
                                 f".mtmap version {version} is not supported; this build reads versions "
                                 f"{VERSIONS[0]}-{VERSIONS[-1]}")
    # Version 2: an address is relative to the chunk's own address.
    base = (vaddr + c.base + start) if version >= 2 else None
    if hsize < CHUNK_HEADER.size:
        raise c.error(f"chunk header size {hsize} is smaller than {CHUNK_HEADER.size}", at=start + 6)
    if csize < hsize or csize % 8 or start + csize > len(c.data):
        raise c.error(f"chunk size {csize:#x} is invalid (header {hsize:#x}, multiple of 8, "
                      f"{len(c.data) - start:#x} bytes left in the section)", at=start + 8)
    ch = c.sub(start, csize, "chunk")
    c.seek(start + csize)
    if version >= 3:
        return _decode_chunk_v3(ch, c.base + start, hsize, flags, ntyp, nfun, nglob, strsz,
                                typ_off, fun_off, glob_off, str_off, modname, warnings, base)

    # Fixed-size tables: the whole table must lie in the chunk.
    if str_off + strsz > csize:
        raise ch.error(f"string table [{str_off:#x}, +{strsz:#x}) runs past the chunk end ({csize:#x})", at=44)
    strtab = _Strings(_table(ch, str_off, str_off + strsz, "string table"))
    if glob_off + nglob * GLOBAL.size > csize:
        raise ch.error(f"global table [{glob_off:#x}, +{nglob}×{GLOBAL.size}) runs past the chunk end ({csize:#x})", at=24)
    module = strtab.get(modname, "module name")

    # Variable-size tables: walk them within [offset, chunk end).
    types: list[TypeInfo] = []
    tc = _table(ch, typ_off, csize, "type table") if ntyp else None
    if tc is not None:
        tc.check_count(ntyp, TYPE_HEADER.size, "type")
        for _ in range(ntyp):
            types.append(_decode_type(tc, strtab, warnings, version))
    functions: list[FunctionInfo] = []
    fc = _table(ch, fun_off, csize, "function table") if nfun else None
    if fc is not None:
        fc.check_count(nfun, FUNCTION.size, "function")
        for _ in range(nfun):
            functions.append(_decode_function(fc, strtab, warnings, base))
    glob: list[GlobalInfo] = []
    if nglob:
        gc = _table(ch, glob_off, glob_off + nglob * GLOBAL.size, "global table")
        for _ in range(nglob):
            addr, size, tid, name, gflags = gc.unpack(GLOBAL, "global")
            if addr and base is not None and not gflags & GLOBAL_ABSOLUTE:
                addr = (base + addr) & _U64
            glob.append(GlobalInfo(strtab.get(name, "global name"), addr, size, tid,
                                   bool(gflags & GLOBAL_TLS), bool(gflags & GLOBAL_CONSTANT)))
    return Chunk(c.base + start, csize, flags, module, types, functions, glob)


def _decode_chunk_v3(ch: Cursor, at: int, hsize: int, flags: int, ntyp: int, nfun: int, nglob: int,
                     strsz: int, typ_off: int, fun_off: int, glob_off: int, str_off: int, modname: int,
                     warnings: list[str], base: int) -> Chunk:
    """Version 3 (FORMAT.md §2): the tables in LEB128, a type id written as a
    reference (0; 1..n_types: a type of this chunk; past those: the id table)."""
    csize = len(ch.data)
    if hsize < HEADER_V3_SIZE:
        raise ch.error(f"version 3 chunk header size {hsize} is smaller than {HEADER_V3_SIZE}", at=6)
    nids, ids_off = HEADER_V3_TAIL.unpack_from(ch.data, CHUNK_HEADER.size)
    for what, off, end in (("string table", str_off, str_off + strsz), ("id table", ids_off, ids_off + 8 * nids),
                           ("type table", typ_off, typ_off), ("function table", fun_off, fun_off),
                           ("global table", glob_off, glob_off)):
        if (off < hsize and end > off) or end > csize:
            raise ch.error(f"{what} [{off:#x}, {end:#x}) is outside the chunk body [{hsize:#x}, {csize:#x})", at=32)
    for what, n, off in (("type", ntyp, typ_off), ("function", nfun, fun_off), ("global", nglob, glob_off)):
        if n and off < hsize:
            raise ch.error(f"{what} table offset {off:#x} overlaps the {hsize}-byte chunk header", at=32)
    strtab = _Strings(_table(ch, str_off, str_off + strsz, "string table"))
    module = strtab.get(modname, "module name")
    extra = [v for (v,) in struct.iter_unpack("<Q", ch.data[ids_off:ids_off + 8 * nids])]
    tc = _table(ch, typ_off, csize, "type table")
    # Each type takes at least 16 bytes (its id and 8 one-byte fields).
    tc.check_count(ntyp, 16, "type")
    ids = [0] * ntyp
    types: list[TypeInfo] = []

    def ref(c: Cursor, what: str) -> int:
        r = c.uleb(what)
        if r > ntyp + nids:
            raise c.error(f"{what} {r} names neither one of the {ntyp} types nor one of the {nids} ids")
        return r

    def resolve(r: int) -> int:
        return 0 if r == 0 else ids[r - 1] if r <= ntyp else extra[r - 1 - ntyp]

    for i in range(ntyp):
        tat = tc.pos
        tid = tc.u64()
        ids[i] = tid
        size, name, kname, tflags, nfields, elem, flex, slots = _leb_type_head(
            tc, tid, lambda: tc.uleb("type name"), lambda what: ref(tc, what), warnings, tc.base + tat)
        fields: list[Field] = []
        for _ in range(nfields):
            foff = tc.uleb("field offset")
            ftype = ref(tc, "field type")
            fname = tc.uleb("field name")
            fields.append(Field(foff, ftype, strtab.get(fname, "field name"), tc.uleb("field flags")))
        types.append(TypeInfo(tid, strtab.get(name, "type name"), size, kname, tflags, slots, elem, flex, fields))
    for t in types:
        t.elem_type = resolve(t.elem_type)
        t.slots = [Slot(s.offset, resolve(s.target), s.count, s.stride, s.flags) for s in t.slots]
        t.fields = [Field(f.offset, resolve(f.type_id), f.name, f.flags) for f in t.fields]
    fc = _table(ch, fun_off, csize, "function table")
    # Each function takes at least 17 bytes (its address and 9 one-byte fields).
    fc.check_count(nfun, 17, "function")
    functions: list[FunctionInfo] = []
    for _ in range(nfun):
        fat = fc.pos
        addr = fc.u64()
        fname = strtab.get(fc.uleb("function name"), "function name")
        reason = strtab.get(fc.uleb("reason"), "reason")
        status, fflags = fc.u8(), fc.u8()
        ncs, nlp, nun = fc.uleb("call sites"), fc.uleb("loop points"), fc.uleb("unmapped calls")
        nall = fc.leb_count("alloca")
        ntail = fc.uleb("tail calls")
        if addr and not fflags & FUNCTION_ABSOLUTE:
            addr = (base + addr) & _U64
        if status < len(FUNCTION_STATUS):
            sname = FUNCTION_STATUS[status]
        else:
            warnings.append(f"{fc.where}+{fc.base + fat:#x}: function {fname} has unknown status {status}; "
                            f"treated as skipped")
            sname = "skipped"
        allocas = []
        for _ in range(nall):
            tid = resolve(ref(fc, "alloca type"))
            asize = fc.uleb("alloca size")
            allocas.append(AllocaInfo(strtab.get(fc.uleb("alloca name"), "alloca name"), tid, asize))
        functions.append(FunctionInfo(fname, addr, 0, sname, reason, ncs, nlp, nun, allocas, ntail))
    gc = _table(ch, glob_off, csize, "global table")
    # Each global takes at least 12 bytes (its address and 4 one-byte fields).
    gc.check_count(nglob, 12, "global")
    glob: list[GlobalInfo] = []
    for _ in range(nglob):
        addr = gc.u64()
        size = gc.uleb("global size")
        tid = resolve(ref(gc, "global type"))
        name = strtab.get(gc.uleb("global name"), "global name")
        gflags = gc.uleb("global flags")
        if addr and not gflags & GLOBAL_ABSOLUTE:
            addr = (base + addr) & _U64
        glob.append(GlobalInfo(name, addr, size, tid, bool(gflags & GLOBAL_TLS), bool(gflags & GLOBAL_CONSTANT)))
    return Chunk(at, csize, flags, module, types, functions, glob)


def _decode_chunk_v4(c: Cursor, warnings: list[str], vaddr: int) -> Chunk:
    """Version 4 (FORMAT.md §2, "Version 4"): 12-byte header, ULEB counts, id
    table, functions, globals, strings; types by id only (``.mttypes``)."""
    start = c.pos
    _magic, _version, hsize, csize = c.unpack(HEADER_V4, "chunk header")
    if hsize < HEADER_V4.size:
        raise c.error(f"chunk header size {hsize} is smaller than {HEADER_V4.size}", at=start + 6)
    if csize < hsize or start + csize > len(c.data):
        raise c.error(f"chunk size {csize:#x} is invalid (header {hsize:#x}, "
                      f"{len(c.data) - start:#x} bytes left in the section)", at=start + 8)
    ch = c.sub(start, csize, "chunk")
    c.seek(start + csize)
    at = c.base + start
    base = vaddr + at
    ch.seek(hsize)
    flags = ch.uleb("chunk flags")
    nfun = ch.leb_count("function")
    nglob = ch.leb_count("global")
    nids = ch.uleb("id count")
    ch.check_count(nids, 8, "id")
    strsz = ch.uleb("string table size")
    modname = ch.uleb("module name")
    if strsz > ch.remaining:
        raise ch.error(f"string table of {strsz:#x} bytes is longer than the {ch.remaining:#x} bytes left")
    strtab = _Strings(ch.sub(csize - strsz, strsz, "string table"))
    module = strtab.get(modname, "module name")
    ids = [ch.u64() for _ in range(nids)]
    body = ch.sub(ch.pos, csize - strsz - ch.pos, "tables")

    def ref(what: str) -> int:
        r = body.uleb(what)
        if r > nids:
            raise body.error(f"{what} {r} is past the {nids} ids of the chunk")
        return ids[r - 1] if r else 0

    def addr(fl: int, absolute: int) -> int:
        if fl & absolute:
            return body.u64()
        return (base + body.i32()) & _U64

    functions: list[FunctionInfo] = []
    for _ in range(nfun):
        fat = body.pos
        fflags = body.u8()
        if fflags & 0x80:
            raise body.error(f"function entry has unknown flags {fflags:#x}", at=fat)
        address = 0 if fflags & FUNCTION_NO_ADDRESS else addr(fflags, FUNCTION_ABSOLUTE)
        status = (fflags >> 4) & 3
        if fflags & FUNCTION_THUNK:
            # named by its ELF symbol where there is one (BinaryMaps)
            functions.append(FunctionInfo(THUNK_NAME, address, 0, FUNCTION_STATUS[2], STD_REASONS[2], 0, 0, 1, []))
            continue
        fname = strtab.get(body.uleb("function name"), "function name")
        r = body.uleb("reason")
        if r == 0:
            reason = ""
        elif r < STD_REASON_LIMIT:
            if r > len(STD_REASONS):
                raise body.error(f"reason number {r} is not one of the {len(STD_REASONS)} known", at=fat)
            reason = STD_REASONS[r - 1]
        else:
            reason = strtab.get(r - STD_REASON_LIMIT, "reason")
        ncs = body.uleb("call sites")
        nlp = nun = ntail = 0
        if fflags & FUNCTION_COUNTS:
            nlp, nun, ntail = body.uleb("loop points"), body.uleb("unmapped calls"), body.uleb("tail calls")
        nall = body.leb_count("alloca") if fflags & FUNCTION_ALLOCAS else 0
        if status < len(FUNCTION_STATUS):
            sname = FUNCTION_STATUS[status]
        else:
            warnings.append(f"{body.where}+{body.base + fat:#x}: function {fname} has unknown status {status}; "
                            f"treated as skipped")
            sname = "skipped"
        allocas = []
        for _ in range(nall):
            tid = ref("alloca type")
            asize = body.uleb("alloca size")
            allocas.append(AllocaInfo(strtab.get(body.uleb("alloca name"), "alloca name"), tid, asize))
        functions.append(FunctionInfo(fname, address, 0, sname, reason, ncs, nlp, nun, allocas, ntail))
    glob: list[GlobalInfo] = []
    for _ in range(nglob):
        gflags = body.u8()
        address = 0 if gflags & GLOBAL_TLS else addr(gflags, GLOBAL_ABSOLUTE)
        size = body.uleb("global size")
        tid = ref("global type")
        name = strtab.get(body.uleb("global name"), "global name")
        glob.append(GlobalInfo(name, address, size, tid, bool(gflags & GLOBAL_TLS), bool(gflags & GLOBAL_CONSTANT)))
    if not body.at_end():
        raise body.error(f"{body.remaining} bytes after the last global of the chunk")
    return Chunk(at, csize, flags, module, [], functions, glob)


def decode_types(data: bytes, where: str, warnings: list[str] | None = None) -> list[TypeInfo]:
    """Decode a ``.mttypes`` section (FORMAT.md §2a): one record per type,
    byte-aligned, zero bytes between records skipped.

    :param data: the section's bytes
    :param where: ``"path: .mttypes"`` for error messages
    :param warnings: list that non-fatal problems are appended to
    :returns: the types in section order (one per record; two records of one
        id, which differ in their STORED slots, are both returned: see :func:`merge_types`)
    :raises BadData: on malformed input; :class:`UnsupportedVersion` on a record version other than 1
    """
    warns = warnings if warnings is not None else []
    c = Cursor(data, where)
    out: list[TypeInfo] = []
    # Each record consumes at least 2 bytes: bounded by len(data) / 2.
    while not c.at_end():
        if c.data[c.pos] == 0:
            c.pos += 1
            continue
        at = c.pos
        version = c.u8()
        if version != TYPE_RECORD_VERSION:
            raise UnsupportedVersion(c.where, c.base + at, f".mttypes record version {version} is not supported; "
                                                           f"this build reads version {TYPE_RECORD_VERSION}")
        size = c.uleb("record size")
        r = c.sub(c.pos, size, "type record") if size <= c.remaining else None
        if r is None:
            raise c.error(f"type record of {size:#x} bytes runs past the section end ({c.remaining:#x} left)", at=at)
        c.skip(size)
        out.append(_decode_type_record(r, warns))
    return out


def _leb_type_head(c: Cursor, tid: int, name_of, ref, warnings: list[str], at: int):
    """A type's size, name, kind, flags, field count, element, flexible-array offset and
    pointer slots, in the LEB128 layout that `.mtmap` version 3 chunks and `.mttypes`
    records share (FORMAT.md §2); they differ only in how a name and a type are named
    (``name_of``, ``ref``).  The fields that follow are the caller's."""
    size = c.uleb("type size")
    name = name_of()
    kind = c.u8()
    tflags = c.uleb("type flags")
    nslots = c.leb_count(f"slot (type {tid:#x})")
    nfields = c.leb_count(f"field (type {tid:#x})")
    elem = ref("element type")
    flex = c.uleb("flex offset")
    if kind < len(TYPE_KINDS):
        kname = TYPE_KINDS[kind]
    else:
        warnings.append(f"{c.where}+{at:#x}: type {tid:#x} has unknown kind {kind}; treated as unknown")
        kname = "unknown"
    slots: list[Slot] = []
    off = 0
    for k in range(nslots):
        off = (off + c.sleb("slot offset delta")) & _U64
        target = ref("slot target")
        count = c.uleb("slot count")
        stride = c.uleb("slot stride") if count > 1 else 0
        sflags = c.uleb("slot flags")
        if count < 1:
            raise c.error(f"slot {k} of type {tid:#x} has count 0")
        slots.append(Slot(off, target, count, stride, sflags))
    return size, name, kname, tflags, nfields, elem, flex, slots


def _decode_type_record(r: Cursor, warnings: list[str]) -> TypeInfo:
    tid = r.u64()
    nids = r.uleb("id count")
    r.check_count(nids, 8, "id")
    ids = [r.u64() for _ in range(nids)]

    def ref(what: str) -> int:
        v = r.uleb(what)
        if v > nids + 1:
            raise r.error(f"{what} {v} is past the {nids} ids of type {tid:#x}")
        return 0 if v == 0 else tid if v == 1 else ids[v - 2]

    def text(what: str) -> str:
        n = r.uleb(f"{what} length")
        return r.bytes(n, what).decode("utf-8", "replace")

    size, name, kname, tflags, nfields, elem, flex, slots = _leb_type_head(
        r, tid, lambda: text("type name"), ref, warnings, r.base)
    fields: list[Field] = []
    foff = 0
    for _ in range(nfields):
        foff = (foff + r.sleb("field offset delta")) & _U64
        ftype = ref("field type")
        fname = text("field name")
        fields.append(Field(foff, ftype, fname, r.uleb("field flags")))
    if not r.at_end():
        raise r.error(f"{r.remaining} bytes after the last field of type {tid:#x}")
    return TypeInfo(tid, name, size, kname, tflags, slots, elem, flex, fields)


def _decode_type(c: Cursor, strtab: _Strings, warnings: list[str], version: int = VERSION) -> TypeInfo:
    at = c.pos
    tid, size, name, kind, _r, flags, nslots, nfields, elem, flex = c.unpack(TYPE_HEADER, "type header")
    if version < 2:
        nfields = 0             # reserved in version 1
    c.check_count(nslots, SLOT.size, f"slot (type {tid:#x})")
    if kind < len(TYPE_KINDS):
        kname = TYPE_KINDS[kind]
    else:
        warnings.append(f"{c.where}+{c.base + at:#x}: type {tid:#x} has unknown kind {kind}; treated as unknown")
        kname = "unknown"
    slots = [Slot(o, t, n, s, f) for (o, t, n, s, f, _r3) in
             SLOT.iter_unpack(c.data[c.pos:c.pos + nslots * SLOT.size])]
    for i, s in enumerate(slots):
        if s.count < 1:
            raise c.error(f"slot {i} of type {tid:#x} has count 0", at=c.pos + i * SLOT.size + 16)
    c.skip(nslots * SLOT.size)
    c.check_count(nfields, FIELD.size, f"field (type {tid:#x})")
    fields = [Field(o, t, strtab.get(n, "field name"), f) for (o, t, n, f) in
              FIELD.iter_unpack(c.data[c.pos:c.pos + nfields * FIELD.size])]
    c.skip(nfields * FIELD.size)
    return TypeInfo(tid, strtab.get(name, "type name"), size, kname, flags, slots, elem, flex, fields)


def _decode_function(c: Cursor, strtab: _Strings, warnings: list[str], base: int | None) -> FunctionInfo:
    at = c.pos
    addr, name, reason, status, fflags, ncs, nlp, nun, nall, ntail = c.unpack(FUNCTION, "function header")
    if addr and base is not None and not fflags & FUNCTION_ABSOLUTE:
        addr = (base + addr) & _U64
    c.check_count(nall, ALLOCA.size, "alloca")
    fname = strtab.get(name, "function name")
    if status < len(FUNCTION_STATUS):
        sname = FUNCTION_STATUS[status]
    else:
        warnings.append(f"{c.where}+{c.base + at:#x}: function {fname} has unknown status {status}; treated as skipped")
        sname = "skipped"
    allocas = []
    for _ in range(nall):
        tid, size, aname, _r3 = c.unpack(ALLOCA, "alloca")
        allocas.append(AllocaInfo(strtab.get(aname, "alloca name"), tid, size))
    return FunctionInfo(fname, addr, 0, sname, strtab.get(reason, "reason"), ncs, nlp, nun, allocas, ntail)


def decode(data: bytes, where: str, warnings: list[str] | None = None, vaddr: int = 0) -> list[Chunk]:
    """Decode a whole ``.mtmap`` section.

    :param data: the section's bytes
    :param where: ``"path: .mtmap"`` for error messages
    :param warnings: list that non-fatal problems are appended to
    :param vaddr: the section's (link-time) address: version 2 addresses are
        relative to their chunk and come out as link-time addresses
    :returns: the chunks in section order (types *not* yet deduplicated; see
        :func:`merge_types`)
    :raises BadData: on malformed input; :class:`UnsupportedVersion` on a version not in :data:`VERSIONS`
    """
    warns = warnings if warnings is not None else []
    c = Cursor(data, where)
    chunks: list[Chunk] = []
    # Each chunk consumes at least 56 bytes: bounded by len(data) / 56.
    while _skip_padding(c):
        chunks.append(_decode_chunk(c, warns, vaddr))
    return chunks


def _declared(slots) -> list[Slot]:
    return [s for s in slots if not s.flags & SLOT_STORED]


def _shape(slots) -> list[tuple]:
    # a slot's place and kind, not its target's id: ids hash pointees by name, and a
    # module that only declares the pointee names it by a ``decl:`` id (FORMAT.md §3)
    # that _resolve_declared maps to the same definition
    return [(s.offset, s.count, s.stride, s.flags) for s in _declared(slots)]


def _same(a: TypeInfo, b: TypeInfo) -> bool:
    """Same declared layout (STORED slots aside: each module finds its own)."""
    return (a.size, a.kind, a.flags, _shape(a.slots), a.flex_offset) == \
        (b.size, b.kind, b.flags, _shape(b.slots), b.flex_offset)


def _with_stored(a: TypeInfo, b: TypeInfo) -> TypeInfo:
    """``a`` with the STORED slots of ``b`` it lacks.  Runs are compared whole
    (a count is not a loop bound); a word that two different runs cover is
    read twice, which repeats an edge and changes nothing else."""
    have = {(s.offset, s.count, s.stride) for s in a.slots if s.flags & SLOT_STORED}
    extra = [s for s in b.slots if s.flags & SLOT_STORED and (s.offset, s.count, s.stride) not in have]
    if not extra:
        return a
    return TypeInfo(a.id, a.name, a.size, a.kind, a.flags, sorted([*a.slots, *extra], key=lambda s: s.offset),
                    a.elem_type, a.flex_offset, a.fields)


def merge_types(chunks: list[Chunk], warnings: list[str], where: str = ".mtmap",
                records: list[TypeInfo] = ()) -> dict[int, TypeInfo]:
    """Types of all chunks, then of the ``.mttypes`` ``records``, by id: the
    first definition wins; a different layout under an id already seen adds
    a warning.  STORED slots are the union over every definition of the same
    layout."""
    out: dict[int, TypeInfo] = {}
    sources = [(ch.module_name, t) for ch in chunks for t in ch.types]
    sources += [(TYPES_SECTION, t) for t in records]
    for module, t in sources:
        cur = out.get(t.id)
        if cur is None:
            out[t.id] = t
        elif _same(cur, t):
            out[t.id] = _with_stored(cur, t)
        else:
            warnings.append(f"{where}: type {t.id:#x} ({t.name}) in module {module or '?'} "
                            f"differs from its first definition ({cur.name}, {cur.size} bytes, "
                            f"{len(cur.slots)} slots); keeping the first")
    _resolve_declared(out)
    return out


def _resolve_declared(types: dict[int, TypeInfo]) -> None:
    """A type only declared in some module (an UNKNOWN entry, FORMAT.md §3
    ``decl:``) stands for the program's one definition of that name, when
    there is exactly one; with none or several it stays unknown (pointers to
    it are untyped and what they reach is scanned conservatively)."""
    defs: dict[str, set[int]] = {}
    for tid, t in types.items():
        if t.kind in ("struct", "union") and t.size > 0 and t.name:
            defs.setdefault(t.name, set()).add(tid)
    for tid, t in list(types.items()):
        if t.kind == "unknown" and t.size == 0 and len(defs.get(t.name, ())) == 1:
            types[tid] = types[next(iter(defs[t.name]))]
