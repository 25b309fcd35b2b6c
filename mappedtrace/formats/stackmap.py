"""Decoder of ``.llvm_stackmaps``: LLVM StackMap format version 3.

Layout per <https://llvm.org/docs/StackMaps.html#stack-map-format> (and
LLVM's ``StackMapParser.h``).  A linked binary's section is a *sequence* of
v3 tables, one per input object, with zero padding up to 8 bytes between
them.  Each table::

    header     u8 version (3), u8 0, u16 0
               u32 NumFunctions, u32 NumConstants, u32 NumRecords
    functions  NumFunctions × {u64 address, u64 stack size, u64 record count}
    constants  NumConstants × u64
    records    NumRecords × {u64 id, u32 instruction offset, u16 flags,
                             u16 NumLocations, NumLocations × location,
                             pad to 8, u16 0, u16 NumLiveOuts,
                             NumLiveOuts × {u16 dwarf reg, u8 0, u8 size},
                             pad to 8}
    location   u8 kind, u8 0, u16 size, u16 dwarf reg, u16 0, i32 offset/small constant

Every count is checked against the bytes that remain before it bounds a loop;
errors are :class:`~mappedtrace.errors.BadData` naming path, section, offset.

A function entry's address is absolute in LLVM's format.  MappedTrace's pass
may write it relative to the table instead (``address - table address``, so
that a shared library needs no dynamic relocation); which one is said by the
records' IDs (FORMAT.md §1, "Addresses"), so :func:`decode` takes a predicate
on a record ID and the section's address.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..binreader import Cursor
from ..errors import UnsupportedVersion

SECTION = ".llvm_stackmaps"
VERSION = 3

#: u8 version, u8 reserved, u16 reserved, u32 NumFunctions, u32 NumConstants, u32 NumRecords
HEADER = struct.Struct("<BBHIII")
#: u64 function address, u64 stack size, u64 record count
FUNCTION = struct.Struct("<QQQ")
CONSTANT = struct.Struct("<Q")
#: u64 patch point id, u32 instruction offset, u16 flags, u16 NumLocations
RECORD_HEAD = struct.Struct("<QIHH")
#: u8 kind, u8 reserved, u16 size, u16 dwarf reg, u16 reserved, i32 offset or small constant
LOCATION = struct.Struct("<BBHHHi")
#: u16 padding, u16 NumLiveOuts (after the locations, aligned to 8)
LIVEOUT_HEAD = struct.Struct("<HH")
#: u16 dwarf reg, u8 reserved, u8 size in bytes
LIVEOUT = struct.Struct("<HBB")

#: Location kind numbers of LLVM's format.
KIND_NAMES = {1: "Register", 2: "Direct", 3: "Indirect", 4: "Constant", 5: "ConstantIndex"}

#: ``stack size`` of a function whose frame size is not statically known.
UNKNOWN_STACK_SIZE = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Location:
    """One StackMap v3 location.

    ``kind`` is ``Register`` | ``Direct`` | ``Indirect`` | ``Constant`` |
    ``ConstantIndex``; ``dwarf_reg`` a DWARF register number; ``offset`` the
    signed offset of ``Direct``/``Indirect``, or the constant's value for
    ``Constant`` (sign-extended 32-bit, as a signed int) and ``ConstantIndex``
    (already looked up in the constants table: an unsigned 64-bit value).
    """

    kind: str
    size: int
    dwarf_reg: int
    offset: int


@dataclass(frozen=True)
class LiveOut:
    dwarf_reg: int
    size: int


@dataclass
class StackMapFunction:
    """A function entry: ``address`` as written (see ``relative``)."""

    address: int
    stack_size: int
    record_count: int
    #: the address field is relative to the table's start; ``resolved`` is then
    #: the section address + table offset + field (mod 2**64), else the field
    relative: bool = False
    resolved: int = 0


@dataclass
class StackMapRecord:
    """One record as written; ``function_address`` comes from the function
    entry it belongs to, ``section_offset`` is where it starts in the section."""

    id: int
    instruction_offset: int
    flags: int
    locations: list[Location]
    live_outs: list[LiveOut]
    function_address: int
    section_offset: int
    constant_indices: dict[int, int] = field(default_factory=dict)  # location index → constants index

    @property
    def pc(self) -> int:
        return (self.function_address + self.instruction_offset) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class StackMapTable:
    """One v3 table (one input object's section) at ``section_offset``."""

    section_offset: int
    size: int
    functions: list[StackMapFunction]
    constants: list[int]
    records: list[StackMapRecord]


def _skip_padding(c: Cursor) -> bool:
    """Skip zero bytes between tables; True if a table follows."""
    # Bounded by the section length: each step consumes a byte.
    while not c.at_end():
        if c.data[c.pos] != 0:
            if c.pos % 8:
                raise c.error(f"a table starts at {c.base + c.pos:#x}, which is not 8-byte aligned")
            return True
        c.pos += 1
    return False


_U64 = 0xFFFF_FFFF_FFFF_FFFF


def _never(_record_id: int) -> bool:
    return False


def _decode_table(c: Cursor, vaddr: int, relative) -> StackMapTable:
    start = c.pos
    version, r1, r2, nfun, ncon, nrec = c.unpack(HEADER, "stack map header")
    if version != VERSION:
        raise UnsupportedVersion(c.where, c.base + start,
                                 f"stack map version {version} is not supported; this build reads version {VERSION}")
    if r1 or r2:
        raise c.error(f"stack map header reserved fields are {r1:#x}, {r2:#x} (expected 0)", at=start + 1)
    # Lower bounds first: each record is at least 24 bytes (16 head + 8 live-out head).
    c.check_count(nfun, FUNCTION.size, "function")
    c.check_count(ncon, CONSTANT.size, "constant")
    if nfun * FUNCTION.size + ncon * CONSTANT.size + nrec * 24 > c.remaining:
        raise c.error(f"record count {nrec} needs at least {nrec * 24} bytes after "
                      f"{nfun} functions and {ncon} constants; only {c.remaining} left", at=start + 12)
    functions = [StackMapFunction(*FUNCTION.unpack_from(c.data, c.pos + i * FUNCTION.size)) for i in range(nfun)]
    c.skip(nfun * FUNCTION.size)
    constants = [v for (v,) in CONSTANT.iter_unpack(c.data[c.pos:c.pos + ncon * CONSTANT.size])]
    c.skip(ncon * CONSTANT.size)

    total = sum(f.record_count for f in functions)
    if total != nrec:
        raise c.error(f"the functions' record counts add up to {total}, but the header says {nrec} records",
                      at=start + 12)

    # Which entries are relative: their records' IDs say so (each record's ID
    # is read ahead of its decoding; record i of the table starts after i-1).
    ids = _record_ids(c, nrec)
    k = 0
    for f in functions:
        f.relative = any(relative(i) for i in ids[k:k + f.record_count])
        f.resolved = (vaddr + c.base + start + f.address) & _U64 if f.relative else f.address
        k += f.record_count
    records: list[StackMapRecord] = []
    owner = iter(f for f in functions for _ in range(f.record_count))
    cache: dict[tuple, Location] = {}
    for _ in range(nrec):
        records.append(_decode_record(c, constants, next(owner).resolved, cache))
    return StackMapTable(start, c.pos - start, functions, constants, records)


def _record_ids(c: Cursor, nrec: int) -> list[int]:
    """The IDs of the ``nrec`` records that start at the cursor, without
    moving it (records are walked again, fully checked, by the caller)."""
    ids: list[int] = []
    pos = c.pos
    for _ in range(nrec):
        if pos + RECORD_HEAD.size + LIVEOUT_HEAD.size > len(c.data):
            break                       # the full decode reports the overrun
        rid, _off, _flags, nloc = RECORD_HEAD.unpack_from(c.data, pos)
        ids.append(rid)
        pos += RECORD_HEAD.size + nloc * LOCATION.size
        pos += -pos % 8
        if pos + LIVEOUT_HEAD.size > len(c.data):
            break
        _pad, nlive = LIVEOUT_HEAD.unpack_from(c.data, pos)
        pos += LIVEOUT_HEAD.size + nlive * LIVEOUT.size
        pos += -pos % 8
    return ids


def _decode_record(c: Cursor, constants: list[int], function_address: int,
                   cache: dict[tuple, Location]) -> StackMapRecord:
    rstart = c.pos
    rid, ioff, flags, nloc = c.unpack(RECORD_HEAD, "record header")
    c.check_count(nloc, LOCATION.size, "location")
    raw = c.data[c.pos:c.pos + nloc * LOCATION.size]
    locs: list[Location] = []
    cidx: dict[int, int] = {}
    for i, (kind, _r, size, reg, _r2, off) in enumerate(LOCATION.iter_unpack(raw)):
        key = (kind, size, reg, off)
        loc = cache.get(key)
        if loc is not None:
            if kind == 5:
                cidx[i] = off
            locs.append(loc)
            continue
        # Locations repeat a lot ([rsp+8], Constant 0, …): build each one once.
        name = KIND_NAMES.get(kind)
        at = c.pos + i * LOCATION.size
        if name is None:
            raise c.error(f"location {i} of record {rid:#x} has kind {kind}; known kinds are 1-5", at=at)
        value = off
        if name == "ConstantIndex":
            if not 0 <= off < len(constants):
                raise c.error(f"location {i} of record {rid:#x} names constant #{off}; "
                              f"the table has {len(constants)}", at=at)
            cidx[i] = off
            value = constants[off]
        loc = cache[key] = Location(name, size, reg, value)
        locs.append(loc)
    c.skip(nloc * LOCATION.size)
    c.align(8)
    _pad, nlive = c.unpack(LIVEOUT_HEAD, "live-out header")
    c.check_count(nlive, LIVEOUT.size, "live-out")
    live = [LiveOut(reg, size) for (reg, _r, size) in
            LIVEOUT.iter_unpack(c.data[c.pos:c.pos + nlive * LIVEOUT.size])]
    c.skip(nlive * LIVEOUT.size)
    if c.pos % 8:
        # The record ends padded to 8 bytes; a section that stops short is truncated.
        c.need((-c.pos) % 8, "record padding")
        c.align(8)
    return StackMapRecord(rid, ioff, flags, locs, live, function_address, c.base + rstart, cidx)


def decode(data: bytes, where: str, vaddr: int = 0, relative=_never) -> list[StackMapTable]:
    """Decode a whole ``.llvm_stackmaps`` section (a sequence of tables).

    :param data: the section's bytes
    :param where: ``"path: .llvm_stackmaps"`` for error messages
    :param vaddr: the section's address (link-time), for relative entries
    :param relative: ``relative(record_id)`` is True when the function entry
        of that record holds its address relative to the table
    :returns: the tables in section order
    :raises BadData: on malformed input (offset = byte offset in the section)
    :raises UnsupportedVersion: on a table whose version is not 3
    """
    c = Cursor(data, where)
    tables: list[StackMapTable] = []
    # Each table consumes at least 16 bytes, so this is bounded by len(data)/16.
    while _skip_padding(c):
        tables.append(_decode_table(c, vaddr, relative))
    return tables
