"""One bounds-checked reader for every binary format MappedTrace decodes.

A :class:`Cursor` walks a ``bytes`` buffer; each read checks the bound and
raises :class:`~mappedtrace.errors.BadData` naming the file, section and
offset.  Layouts are declared once as named :class:`struct.Struct` constants
next to their decoder and read with :meth:`Cursor.unpack`; counts read from
input are checked with :meth:`Cursor.check_count` before they bound a loop.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import BadData

U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
U64 = struct.Struct("<Q")
I64 = struct.Struct("<q")
#: bytes of a 64-bit LEB128 integer, at most
_LEB_MAX = 10


@dataclass
class Cursor:
    """Reader over ``data`` (a section), reporting offsets as ``base + pos``.

    :param data: the bytes to read
    :param where: ``"path: .section"`` for error messages
    :param base: offset of ``data[0]`` in ``where`` (for nested cursors)
    """

    data: bytes
    where: str
    base: int = 0
    pos: int = 0

    def error(self, message: str, at: int | None = None) -> BadData:
        return BadData(self.where, self.base + (self.pos if at is None else at), message)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def seek(self, pos: int) -> None:
        if not 0 <= pos <= len(self.data):
            raise self.error(f"offset {pos:#x} is outside the {len(self.data):#x}-byte section", at=0)
        self.pos = pos

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def align(self, n: int) -> None:
        pad = (-self.pos) % n
        self.pos = min(self.pos + pad, len(self.data))

    def need(self, n: int, what: str = "data") -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(f"truncated {what}: need {n} bytes, {self.remaining} left")

    def unpack(self, st: struct.Struct, what: str = "record") -> tuple:
        self.need(st.size, what)
        v = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return v

    def bytes(self, n: int, what: str = "bytes") -> bytes:
        self.need(n, what)
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def u8(self) -> int:
        return self.unpack(U8, "u8")[0]

    def u16(self) -> int:
        return self.unpack(U16, "u16")[0]

    def u32(self) -> int:
        return self.unpack(U32, "u32")[0]

    def i32(self) -> int:
        return self.unpack(I32, "i32")[0]

    def u64(self) -> int:
        return self.unpack(U64, "u64")[0]

    def i64(self) -> int:
        return self.unpack(I64, "i64")[0]

    def uleb(self, what: str = "ULEB128 value") -> int:
        """An unsigned LEB128 integer of at most 64 bits (10 bytes)."""
        return self._leb(False, what)

    def sleb(self, what: str = "SLEB128 value") -> int:
        """A signed LEB128 integer of at most 64 bits (10 bytes)."""
        return self._leb(True, what)

    def _leb(self, signed: bool, what: str) -> int:
        data, pos = self.data, self.pos
        value = shift = 0
        for i in range(_LEB_MAX):
            if pos + i >= len(data):
                raise self.error(f"truncated {what} (LEB128 runs past the end)")
            b = data[pos + i]
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if signed and b & 0x40:
                    value -= 1 << shift
                lo, hi = (-(1 << 63), 1 << 63) if signed else (0, 1 << 64)
                if not lo <= value < hi:
                    raise self.error(f"{what} {value:#x} does not fit 64 bits")
                self.pos = pos + i + 1
                return value
        raise self.error(f"{what}: LEB128 longer than {_LEB_MAX} bytes")

    def leb_count(self, what: str) -> int:
        """A ULEB128 count of items that take at least one byte each: at most what is left."""
        n = self.uleb(f"{what} count")
        if n > self.remaining:
            raise self.error(f"{what} count {n} needs at least {n} bytes; only {self.remaining} left")
        return n

    def sub(self, start: int, length: int, what: str = "block") -> "Cursor":
        """A cursor over ``data[start:start+length]``, bounds checked."""
        if start < 0 or length < 0 or start + length > len(self.data):
            raise self.error(f"{what} [{start:#x}, +{length:#x}) runs past the end ({len(self.data):#x})", at=start if 0 <= start <= len(self.data) else 0)
        return Cursor(self.data[start:start + length], self.where, self.base + start)

    def cstr_at(self, off: int, what: str = "string") -> str:
        """NUL-terminated UTF-8 string at ``off`` (a string table lookup)."""
        if not 0 <= off < len(self.data):
            raise self.error(f"{what} offset {off:#x} outside the string table ({len(self.data):#x} bytes)")
        end = self.data.find(b"\0", off)
        if end < 0:
            raise self.error(f"{what} at {off:#x} is not NUL-terminated", at=off)
        return self.data[off:end].decode("utf-8", "replace")

    def check_count(self, count: int, item_size: int, what: str) -> int:
        """Check that ``count`` items of ``item_size`` bytes fit in what is left."""
        if count < 0 or count * item_size > self.remaining:
            raise self.error(f"{what} count {count} needs {count * item_size} bytes; only {self.remaining} left")
        return count
