"""The tracer's own memory: a budget checked before the work (``--max-memory``).

What an analysis holds (issue #13 item 3; measured with
benchmarks/trace/mem_phases.py and bench_scale.py, benchmarks/trace/RESULTS.md):
the interpreter and its modules, the captured copy of the target's memory (a
fork or stop-copy capture holds it once; a snapshot file is mapped, its pages
shared with the page cache but counted in RSS once touched), and per heap
chunk a few columns: the walk's (state, list, arena: 4 bytes, the free
chunks' headers and sizes), the graph's addresses and sizes (16, the in-use
rows of the walk's own columns), the marker's state and type (5), its bucket
index (2–4), the graph's ``how`` and ``ambiguous`` (2), and the temporaries
of the phase at the peak.  :func:`estimate` adds these up.  The per-chunk
figure is for the C marking kernel; the numpy fallback (no C compiler) needs
more (it keeps a position column and makes its candidates in batches).  Not
counted either: the kernel's first build (once per install and kernel
source, in the first analysis: cffi and setuptools, about 60 MiB more).
"""
from __future__ import annotations

import re

from .errors import MappedTraceError

#: interpreter, numpy, cffi, the maps, the roots and the reporters, and the
#: slices (1 M rows) of the whole-heap passes: 76–77 MiB measured (the 1 M and
#: 4 M chunk runs of bench_scale), rounded up
BASE_BYTES = 96 << 20
#: peak bytes per heap chunk beyond the copy and the base: 31–32 measured
#: (bench_scale: between 1 M and 4 M chunks, ``leaks PID`` precise and
#: conservative and ``leaks SNAPSHOT``), rounded up to cover a free chunk,
#: which costs more than one in use (its header and size kept apart, and its
#: row left unused in the shared columns)
PER_CHUNK_BYTES = 40

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class MemoryLimit(MappedTraceError):
    """The analysis would need more memory than ``--max-memory`` allows."""

    exit_code = 3


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512M``, ``1.5G``, ``2GiB`` or ``1048576`` (powers of 1024).

    :raises ValueError: not a size.
    """
    m = _SIZE_RE.match(text or "")
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 512M, 1.5G, 2GiB, 1048576)")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"{text!r}: a size must be positive")
    return n


def fmt_size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def estimate(copy_bytes: int, chunks: int | None) -> int:
    """Peak bytes an analysis of a target needs: the copy it holds, plus
    :data:`PER_CHUNK_BYTES` per heap chunk (none when not known yet), plus :data:`BASE_BYTES`."""
    return BASE_BYTES + max(copy_bytes, 0) + PER_CHUNK_BYTES * max(chunks or 0, 0)


def check(limit: int | None, copy_bytes: int, chunks: int | None, what: str) -> None:
    """Refuse (:class:`MemoryLimit`) when :func:`estimate` exceeds ``limit``.

    :param what: the target, for the message
    :param chunks: the heap's chunk count, or None before the walk (the
        estimate is then a lower bound: the copy alone)
    """
    if limit is None:
        return
    need = estimate(copy_bytes, chunks)
    if need <= limit:
        return
    parts = (f"{fmt_size(copy_bytes)} of its memory to hold and {chunks:,} heap chunks" if chunks is not None
             else f"{fmt_size(copy_bytes)} of its memory to hold, before its heap chunks are counted")
    raise MemoryLimit(f"{what}: the analysis needs at least {fmt_size(need)} ({parts}), over "
                      f"--max-memory {fmt_size(limit)}" if chunks is None else
                      f"{what}: the analysis needs about {fmt_size(need)} ({parts}), over "
                      f"--max-memory {fmt_size(limit)}",
                      hint="raise --max-memory, or analyse on a machine with more memory "
                           "(mappedtrace snapshot PID -o FILE, then copy FILE there)")
