"""Decoder of ``.mtstack``: MappedTrace's compact stack maps (FORMAT.md §1a).

The pass writes the records LLVM would put in ``.llvm_stackmaps`` (StackMap
v3) in a denser form: per object one block with a dictionary of distinct
locations and one of distinct location lists ("shapes"), then per function
its records as (ID delta, return-address delta, shape index), integers in
LEB128.  :func:`decode` returns the same :class:`~.stackmap.StackMapTable`
objects as :func:`.stackmap.decode` would for LLVM's table of the same code
(record for record: ID, instruction offset, locations, live-outs, function
address, constants), so every consumer reads one or the other alike.

Block::

    header   4s magic "MTSK", u16 version (2; 1 is read too), u16 header size (16),
             u32 block size (header included), u32 reserved (0)
    counts   ULEB functions, constants, locations, shapes, records
    constants  × u64 (LLVM's constant pool, in its order)
    locations  × {u8 kind (1-5), ULEB size, ULEB DWARF reg, SLEB offset/constant}
    shapes     × {location list, ULEB m, m × {ULEB reg, ULEB size}}, the location
                 list: version 1: ULEB n, n × ULEB location index; version 2:
                 ULEB n, ULEB tokens, tokens × {ULEB (run << 1 | 1), ULEB start:
                 a run copied from the previous shape's list | ULEB (run << 1),
                 run × ULEB location index}
    functions  × {u8 flags (bit 0 RELATIVE), i32 (address - this field's address)
                  if RELATIVE else u64 address, ULEB stack size, ULEB records,
                  records × {SLEB ID - previous ID of the block (mod 2^64),
                             ULEB instruction offset - previous offset of the
                             function (the first: the offset), ULEB shape}}

Every count is checked against the bytes left (each item takes at least one
byte) before it bounds a loop; errors are :class:`~mappedtrace.errors.BadData`
naming path, section and offset.
"""
from __future__ import annotations

import struct

from ..binreader import Cursor
from ..errors import UnsupportedVersion
from .stackmap import KIND_NAMES, LiveOut, Location, StackMapFunction, StackMapRecord, StackMapTable

SECTION = ".mtstack"
MAGIC = b"MTSK"
VERSION = 2
#: versions this build reads (1: a shape lists its location indices; 2: runs
#: copied from the previous shape and literal runs)
VERSIONS = (1, 2)
#: locations of one record at most (StackMap v3 counts them in a u16)
MAX_SHAPE = 0xFFFF
#: 4s magic, u16 version, u16 header size, u32 block size, u32 reserved
HEADER = struct.Struct("<4sHHII")
FN_RELATIVE = 1
_U64 = (1 << 64) - 1


def _uleb(c: Cursor, what: str) -> int:
    return c.uleb(what)


def _sleb(c: Cursor, what: str) -> int:
    return c.sleb(what)


def _count(c: Cursor, what: str) -> int:
    return c.leb_count(what)


def _shape_indices(b: Cursor, i: int, prev: list[int]) -> list[int]:
    """Version 2: shape ``i``'s location indices, from runs copied from the
    previous shape's (``prev``) and literal runs."""
    at = b.pos
    n = _uleb(b, "shape length")
    if n > MAX_SHAPE:
        raise b.error(f"shape {i} has {n} locations; a record has at most {MAX_SHAPE}", at=at)
    ntok = _count(b, "shape token")
    out: list[int] = []
    for _ in range(ntok):
        t = _uleb(b, "shape token")
        run = t >> 1
        if run == 0 or len(out) + run > n:
            raise b.error(f"shape {i}: a run of {run} locations does not fit its {n}", at=at)
        if t & 1:
            a = _uleb(b, "copied run start")
            if a + run > len(prev):
                raise b.error(f"shape {i} copies [{a}, {a + run}) of the previous shape's {len(prev)} locations",
                              at=at)
            out.extend(prev[a:a + run])
        else:
            b.check_count(run, 1, "location index")
            out.extend(_uleb(b, "location index") for _ in range(run))
    if len(out) != n:
        raise b.error(f"shape {i}'s runs hold {len(out)} locations, not {n}", at=at)
    return out


def _decode_block(c: Cursor, vaddr: int) -> StackMapTable:
    start = c.pos
    magic, version, hsize, bsize, _res = c.unpack(HEADER, "stack table header")
    if magic != MAGIC:
        raise c.error(f"bad stack table magic {magic!r} (expected {MAGIC!r})", at=start)
    if version not in VERSIONS:
        raise UnsupportedVersion(c.where, c.base + start,
                                 f"stack table version {version} is not supported; this build reads versions "
                                 f"{VERSIONS[0]}-{VERSIONS[-1]}")
    if hsize < HEADER.size or bsize < hsize or start + bsize > len(c.data):
        raise c.error(f"stack table header size {hsize} / block size {bsize} do not fit the "
                      f"{len(c.data) - start} bytes left", at=start + 6)
    b = c.sub(start, bsize, "stack table block")
    b.seek(hsize)
    nfun = _count(b, "function")
    ncon = _count(b, "constant")
    b.check_count(ncon, 8, "constant")
    nloc = _count(b, "location")
    nshape = _count(b, "shape")
    nrec = _count(b, "record")
    constants = [v for (v,) in struct.iter_unpack("<Q", b.data[b.pos:b.pos + 8 * ncon])]
    b.skip(8 * ncon)
    locs: list[tuple[Location, int | None]] = []   # (location, constant index or None)
    for i in range(nloc):
        at = b.pos
        kind = b.u8()
        size = _uleb(b, "location size")
        reg = _uleb(b, "location register")
        off = _sleb(b, "location offset")
        name = KIND_NAMES.get(kind)
        if name is None:
            raise b.error(f"location {i} has kind {kind}; known kinds are 1-5", at=at)
        if size > 0xFFFF or reg > 0xFFFF or not -(1 << 31) <= off < 1 << 31:
            raise b.error(f"location {i}: size {size}, register {reg} or offset {off} out of range", at=at)
        if name == "ConstantIndex":
            if not 0 <= off < ncon:
                raise b.error(f"location {i} names constant #{off}; the block has {ncon}", at=at)
            locs.append((Location(name, size, reg, constants[off]), off))
        else:
            locs.append((Location(name, size, reg, off), None))
    shapes: list[tuple[list[Location], dict[int, int], list[LiveOut]]] = []
    prev: list[int] = []
    for i in range(nshape):
        at = b.pos
        idx = _shape_indices(b, i, prev) if version >= 2 else \
            [_uleb(b, "location index") for _ in range(_count(b, "shape location"))]
        prev = idx
        sl: list[Location] = []
        cidx: dict[int, int] = {}
        for k, li in enumerate(idx):
            if li >= nloc:
                raise b.error(f"shape {i} names location #{li}; the block has {nloc}", at=at)
            loc, ci = locs[li]
            if ci is not None:
                cidx[k] = ci
            sl.append(loc)
        m = _count(b, "live-out")
        lo = [LiveOut(_uleb(b, "live-out register"), _uleb(b, "live-out size")) for _ in range(m)]
        shapes.append((sl, cidx, lo))
    functions: list[StackMapFunction] = []
    records: list[StackMapRecord] = []
    prev_id = 0
    for fi in range(nfun):
        at = b.pos
        flags = b.u8()
        if flags & ~FN_RELATIVE:
            raise b.error(f"function {fi} has unknown flags {flags:#x}", at=at)
        if flags & FN_RELATIVE:
            field = b.pos
            written = b.i32()
            resolved = (vaddr + b.base + field + written) & _U64
        else:
            written = resolved = b.u64()
        stack_size = _uleb(b, "stack size")
        count = _count(b, "record")
        if len(records) + count > nrec:
            raise b.error(f"function {fi}'s {count} records exceed the block's {nrec}", at=at)
        functions.append(StackMapFunction(written, stack_size, count, bool(flags & FN_RELATIVE), resolved))
        ioff = 0
        for _ in range(count):
            rat = b.pos
            prev_id = (prev_id + _sleb(b, "record ID delta")) & _U64
            ioff += _uleb(b, "instruction offset delta")
            if ioff > 0xFFFF_FFFF:
                raise b.error(f"record {prev_id:#x}: instruction offset {ioff:#x} exceeds 32 bits", at=rat)
            si = _uleb(b, "shape index")
            if si >= nshape:
                raise b.error(f"record {prev_id:#x} names shape #{si}; the block has {nshape}", at=rat)
            sl, cidx, lo = shapes[si]
            records.append(StackMapRecord(prev_id, ioff, 0, sl, lo, resolved, b.base + rat, cidx))
    if len(records) != nrec:
        raise b.error(f"the functions hold {len(records)} records, but the header says {nrec}", at=hsize)
    if not b.at_end():
        raise b.error(f"{b.remaining} bytes left over after the last function of the block")
    c.pos = start + bsize
    return StackMapTable(start, bsize, functions, constants, records)


def decode(data: bytes, where: str, vaddr: int = 0) -> list[StackMapTable]:
    """Decode a whole ``.mtstack`` section (a sequence of blocks).

    :param data: the section's bytes
    :param where: ``"path: .mtstack"`` for error messages
    :param vaddr: the section's address (link-time), for relative function addresses
    :returns: one :class:`StackMapTable` per block, in section order
    :raises BadData: on malformed input (offset = byte offset in the section)
    :raises UnsupportedVersion: on a block whose version is not in :data:`VERSIONS`
    """
    c = Cursor(data, where)
    tables: list[StackMapTable] = []
    # Each block consumes at least its 16-byte header; zero bytes between
    # blocks (alignment a linker may add) are skipped one by one.
    while not c.at_end():
        if data[c.pos] == 0:
            c.pos += 1
            continue
        tables.append(_decode_block(c, vaddr))
    return tables
