"""Which of the target's mappings are malloc's heap, read from outside while it runs.

The heap walker (:class:`mappedtrace.heap.glibc.GlibcHeap`) reads every chunk
header, i.e. every page of the heap: on a paged process that would fetch every
evicted page back.  So the pager classifies mappings from ``/proc/PID/maps``
with glibc's own layout facts (the same ones the walker uses) and reads at
most the first 32 bytes of a mapping, once:

* ``[heap]``: the main arena's brk heap;
* a thread arena's heap: a read-write anonymous mapping inside a
  ``HEAP_MAX_SIZE``-aligned window whose start holds a ``heap_info``
  (``ar_ptr`` non-null, ``size`` and ``mprotect_size`` page multiples within
  ``HEAP_MAX_SIZE``);
* an mmapped chunk: a read-write anonymous mapping that starts with a chunk
  header whose flags are exactly ``IS_MMAPPED`` (the walker's own test).

Known imprecision: a mapping the program made itself that happens to start
with such a header would be paged too (paging it is still correct, only not
"heap"); a memalign'd mmapped chunk whose header is not at the mapping start is
missed (not paged, never wrong).
"""
from __future__ import annotations

import struct

from ..heap.glibc import GlibcHeap
from ..target import _kernel as K
from ..errors import MappedTraceError

HEAP_MAX_SIZE = 64 << 20
PAGE = 4096
_HEAP_INFO = struct.Struct("<QQQQ")      # ar_ptr, prev, size, mprotect_size
_CHUNK_HDR = struct.Struct("<QQ")        # prev_size, size


def _rw_anon(pid: int) -> list[tuple[int, int, str]]:
    out = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) < 5 or parts[1] != "rw-p":
                    continue
                name = parts[5].strip() if len(parts) > 5 else ""
                if name and name != "[heap]":
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, name))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class HeapRanges:
    """Classifies the heap mappings of ``pid``; remembers what it read."""

    def __init__(self, pid: int):
        self.pid = pid
        self._kind: dict[int, str | None] = {}      # mapping start -> label, None: not heap
        self._windows: set[int] = set()              # 64 MiB windows known to hold a thread heap

    def _head(self, addr: int, st: struct.Struct) -> tuple | None:
        try:
            return st.unpack(K.vm_read(self.pid, addr, st.size))
        except MappedTraceError:
            return None

    def _classify(self, lo: int, hi: int, name: str) -> str | None:
        if name == "[heap]":
            return "main"
        win = lo - lo % HEAP_MAX_SIZE
        if win in self._windows and hi <= win + HEAP_MAX_SIZE:
            return "arena"
        if lo == win:
            h = self._head(lo, _HEAP_INFO)
            if h and h[0] and h[2] and not h[2] % PAGE and h[2] <= HEAP_MAX_SIZE and h[3] <= HEAP_MAX_SIZE \
                    and (h[1] == 0 or h[1] % HEAP_MAX_SIZE == 0):
                self._windows.add(win)
                return "arena"
        c = self._head(lo, _CHUNK_HDR)
        if c and GlibcHeap._mmapped_header_ok(c[0], c[1], lo, hi):
            return "mmapped"
        return None

    def current(self) -> list[tuple[int, int, str]]:
        """``(start, end, label)`` of every heap mapping now, sorted."""
        out = []
        seen = set()
        for lo, hi, name in _rw_anon(self.pid):
            key = (lo, hi)
            seen.add(key)
            if key not in self._kind:
                self._kind[key] = self._classify(lo, hi, name)
            k = self._kind[key]
            if k:
                out.append((lo, hi, k))
        for key in [k for k in self._kind if k not in seen]:
            del self._kind[key]
        return out
