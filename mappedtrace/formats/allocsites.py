"""Decoder of ``.mtsites``: the allocation sites of a ``--alloc-sites`` build.

Spec: ``llvm_pass/FORMAT.md`` §4.  The section is a sequence of blocks (one per
module, 8-byte aligned, zero padding between them); each block has a 32-byte
header (40 bytes since the module's untyped pointer writes are counted),
``n_sites`` 24-byte records and a string table.  A site's *id* is the
run-time address of its record: the section's address plus the record's
offset, plus the module's load bias.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..binreader import Cursor
from ..errors import UnsupportedVersion

SECTION = ".mtsites"
MAGIC = 0x5453544D            # "MTST"
VERSION = 1
HEADER = struct.Struct("<IHHIIIIII")    # magic version header_size block_size n_sites record_size strtab_off strtab_size module
#: the 40-byte header's two more fields: flags, untyped_pointer_writes
HEADER_WRITES = struct.Struct("<II")
#: block flags: ``untyped_pointer_writes`` holds the module's count
BLOCK_WRITES_COUNTED = 0x1
RECORD = struct.Struct("<QIIIHBB")      # type_id file function line column kind flags
#: site kinds (FORMAT.md §4)
KINDS = {1: "malloc", 2: "calloc", 3: "realloc", 4: "aligned_alloc", 5: "wrapper"}
#: record flags: the function returns the site's result (an allocation wrapper's own site)
SITE_RETURNED = 0x1
#: record flags: the site is a call to a wrapper named by ``--alloc-fn``
SITE_WRAPPER_CALL = 0x2
#: record flags: the request is a multiple of the type's size (``n * sizeof(T)``): an array of it
SITE_ARRAY = 0x4
#: record flags: the result is used only as pointer-free memory (``char *``, sds): a byte buffer
SITE_BYTES = 0x8
#: the multiplier of the site word (AllocSites.cpp SiteMix): odd, a sign-extended imm32
SITE_MIX = 0xFFFFFFFF9E3779B1


@dataclass(frozen=True)
class AllocSite:
    """One allocation site.

    :ivar address: link-time address of its record (add the load bias for its id)
    :ivar type_id: the type the allocation's result is used as (0 unknown)
    """

    address: int
    type_id: int
    file: str
    function: str
    line: int
    column: int
    kind: str
    module: str = ""
    flags: int = 0

    @property
    def where(self) -> str:
        """``file:line in function`` (what a report prints)."""
        loc = f"{self.file or '?'}:{self.line}" if self.line else (self.file or "?")
        return f"{loc} in {self.function}" if self.function else loc


@dataclass(frozen=True)
class SiteBlock:
    """One module's block: whether (and how many) untyped pointer writes it counted.

    :ivar counted: the pass counted the module's untyped pointer writes (a
        40-byte header with flag ``BLOCK_WRITES_COUNTED``)
    :ivar untyped_writes: pointer-carrying writes into memory of unknown or
        byte/scalar type (llvm_pass/PointerStores.cpp); byte-buffer sites are
        trusted for scanning only where every module counted 0
    """

    module: str
    counted: bool
    untyped_writes: int


def _skip_padding(c: Cursor) -> bool:
    while not c.at_end():
        if c.data[c.pos] != 0:
            if c.pos % 8:
                raise c.error(f"a block starts at {c.base + c.pos:#x}, which is not 8-byte aligned")
            return True
        c.pos += 1
    return False


def decode(data: bytes, where: str, section_address: int) -> list[AllocSite]:
    """Every site of a ``.mtsites`` section (see :func:`decode_blocks`)."""
    return decode_blocks(data, where, section_address)[0]


def decode_blocks(data: bytes, where: str, section_address: int) -> tuple[list[AllocSite], list[SiteBlock]]:
    """Every site of a ``.mtsites`` section, and what each block says of its module.

    :param section_address: the section's link-time address (``sh_addr``)
    :raises BadData: malformed blocks (with section and offset);
        :class:`UnsupportedVersion` for a version other than 1
    """
    c = Cursor(data, where)
    out: list[AllocSite] = []
    blocks: list[SiteBlock] = []
    # every block consumes at least HEADER.size bytes: bounded by len(data)
    while _skip_padding(c):
        start = c.pos
        magic, version, hsize, bsize, n, rsize, soff, ssize, mod = c.unpack(HEADER, "block header")
        if magic != MAGIC:
            raise c.error(f"bad block magic {magic:#x} (want {MAGIC:#x}, 'MTST')", at=start)
        if version != VERSION:
            raise UnsupportedVersion(where, start, f"{SECTION} version {version} is not supported; "
                                     f"this build reads version {VERSION}")
        if hsize < HEADER.size or rsize < RECORD.size or bsize < hsize or bsize % 8:
            raise c.error(f"bad block sizes: header {hsize}, record {rsize}, block {bsize}", at=start)
        blk = c.sub(start, bsize, "block")
        strings = blk.sub(soff, ssize, "string table")
        recs = blk.sub(hsize, soff - hsize if soff >= hsize else -1, "records")
        recs.check_count(n, rsize, "site")
        module = strings.cstr_at(mod, "module name") if mod else ""
        bflags = untyped = 0
        if hsize >= HEADER.size + HEADER_WRITES.size:
            bflags, untyped = blk.sub(HEADER.size, HEADER_WRITES.size, "header").unpack(HEADER_WRITES, "header")
        blocks.append(SiteBlock(module, bool(bflags & BLOCK_WRITES_COUNTED), untyped))
        for i in range(n):
            recs.seek(i * rsize)
            tid, f, fn, line, col, kind, flags = recs.unpack(RECORD, "site record")
            out.append(AllocSite(section_address + start + hsize + i * rsize, tid,
                                 strings.cstr_at(f, "file name") if f else "",
                                 strings.cstr_at(fn, "function name") if fn else "",
                                 line, col, KINDS.get(kind, f"kind{kind}"), module, flags))
        c.seek(start + bsize)
    return out, blocks
