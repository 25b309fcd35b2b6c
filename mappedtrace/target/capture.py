"""Capture a stopped process into memory: stop-copy or copy-on-write fork (DESIGN step 3).

Two modes, one result (:class:`CapturedTarget`, a :class:`Target` whose memory
is served from the captured copy):

``stop-copy``
    While every thread is stopped, copy every mapping that cannot be
    reproduced from files (anonymous and private-writable memory: heap,
    stacks, ``.data``/``.bss``, the vDSO) with ``process_vm_readv``, then
    resume.  The copy goes into a buffer allocated *and faulted in* before
    the stop (``MAP_POPULATE``), so the pause is the copy itself.

``fork``
    While every thread is stopped, make one thread run a ``clone`` system call
    at a ``syscall; ret`` that already exists in libc, driven by syscall
    stops (no breakpoint, no single step), with ``PTRACE_O_TRACECLONE`` so
    that the copy-on-write child starts traced and never runs a user
    instruction.  The thread's registers, signal mask and the stack bytes
    used are restored exactly (an interrupted system call restarts as it
    would have), the process is resumed at once, and the memory is read from
    the child at leisure; then the child is killed.  The child is created
    with ``CLONE_PARENT``: it is a sibling of the target, not its child.

The target survives this tracer being SIGKILLed at any point (issue #13):
attach and stop-copy leave only ptrace stops, which the kernel undoes when
the tracer dies.  In fork mode the borrowed thread is *armed* before its
registers are touched: a signal frame holding its own state sits below its
stack, and the ``ret`` after the ``clone`` leads into ``rt_sigreturn``
(:func:`inject_clone`), so a thread left without its tracer finishes the
clone and puts itself back; the child returns into ``exit``.  What is not
exact then (only then): a system call interrupted by the stop is issued
again from the start (a sleep starts over), the stack bytes below the red
zone keep the frame, and a tracer killed between the clone and
``PTRACE_O_EXITKILL`` on the child leaves that child to exit by itself.
``--settle`` is the one mode with a fatal window (a single step's pending
SIGTRAP: see :func:`snapshot_process`).

Read-only file-backed mappings are not copied (their bytes are in the files):
:class:`CapturedTarget` reads them from the file named in the mapping, and the
list of such mappings is kept (``meta["file_backed"]``).  ``[vvar]`` and
``[vsyscall]`` are never copied.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _kernel as k
from .base import Mapping, Target, ThreadState
from . import settle as _settle
from . import xsave
from .live import LiveTarget, ThreadSnapshot, anon_file_ranges, parse_maps
from ..errors import BadData, MappedTraceError, NoSuchProcess, PermissionProblem, TargetFault
from ..fileio import open_regular

MODES = ("stop-copy", "fork")
PAGE = 4096
#: mappings never copied: kernel pages that are not process memory
_SKIP_PATHS = ("[vvar]", "[vsyscall]", "[vvar_vclock]")
#: one process_vm_readv call moves at most this much (the kernel caps at ~2 GiB)
_BATCH_BYTES = 1 << 30
#: madvise(2): fault in writable pages now (Linux 5.14; Python's mmap module has no name for it)
_MADV_POPULATE_WRITE = 23
#: bound on wait rounds while the injected clone runs
_INJECT_ROUNDS = 64
CLONE_PARENT = 0x00008000
EINVAL = 22

Progress = Callable[[int, int], None]      # (bytes done, bytes total)


@dataclass
class Piece:
    """A contiguous range of captured memory (``data`` None: not captured)."""

    start: int
    size: int
    data: memoryview | None = None

    @property
    def end(self) -> int:
        return self.start + self.size


def wants_copy(m: Mapping) -> bool:
    # (file-backed mappings with copy-on-write pages are copied too: see
    # live.anon_file_ranges; that needs /proc/PID/smaps, so it is not decided here)
    """Whether a mapping must be copied (it cannot be reproduced from a file)."""
    if not m.readable or m.path in _SKIP_PATHS:
        return False
    if m.writable or m.path == "" or m.path.startswith("[") or m.path.endswith("(deleted)"):
        return True
    # shared memory and memfd mappings have no stable file to re-read
    return m.path.startswith(("/dev/shm/", "/memfd:", "/SYSV"))


def plan_bytes(mappings: list[Mapping]) -> int:
    """Bytes a capture of ``mappings`` copies."""
    return sum(m.size for m in mappings if wants_copy(m))


class _Arena:
    """Destination buffers, faulted in ahead of the stop where possible."""

    def __init__(self, size: int, populate: bool = True):
        self._bufs: list[mmap.mmap] = []
        self._cur: mmap.mmap | None = None
        self._off = 0
        if size > 0:
            self._grow(size, populate)

    def _grow(self, size: int, populate: bool) -> None:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        # (no MADV_HUGEPAGE: tried for the 2 GiB case, the copy into huge pages took
        # 15.0 s where plain pages took 3.6 s, on the same busy machine; the kernel's
        # defrag setting is "madvise", i.e. it compacts memory on those faults)
        self._cur = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if populate:
            try:
                self._cur.madvise(_MADV_POPULATE_WRITE)
            except OSError:         # before Linux 5.14: touch a byte per page
                np.frombuffer(self._cur, np.uint8)[::PAGE] = 0
        self._bufs.append(self._cur)
        self._off = 0

    def take(self, size: int) -> tuple[mmap.mmap, int]:
        if self._cur is None or self._off + size > len(self._cur):
            self._grow(max(size, 64 << 20), populate=False)
        off = self._off
        self._off += size
        return self._cur, off

    def close(self) -> None:
        for b in self._bufs:
            try:
                b.close()
            except BufferError:     # a memoryview still refers to it: let GC do it
                pass
        self._bufs.clear()


class _Reader:
    """Scatter reads with process_vm_readv, or with ``/proc/PID/mem``.

    ``via_mem`` reads ``/proc/PID/mem`` from the start: the way to read a
    copy-on-write fork child.  process_vm_readv pins the pages it reads
    (``FOLL_PIN``), and since Linux 5.19 pinning an anonymous page that is
    still shared after a fork first *unshares* it (``gup_must_unshare`` in
    mm/gup.c): the child gets a private copy of every page read.  Measured
    (2.1 GiB heap of 20 M objects, benchmarks/trace/RESULTS.md): 5.1–5.6 s/GiB
    and 1.5–1.8 GiB more memory used, against 1.1–1.2 s/GiB and nothing extra
    through ``/proc/PID/mem`` (``FOLL_GET``, no unshare).  Pages a process owns
    alone are read about 15 % faster with process_vm_readv, so that stays the
    way for a stopped process (stop-copy: the pause is the copy), unless it
    shares pages with a fork child of its own (:func:`shares_pages`).
    """

    def __init__(self, pid: int, via_mem: bool = False):
        self.pid = pid
        self.fd: int | None = None
        if via_mem:
            self._open_mem()

    def _open_mem(self) -> None:
        try:
            self.fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
        except FileNotFoundError:
            raise NoSuchProcess(f"process {self.pid} exited while being read") from None
        except OSError:
            raise PermissionProblem(f"not permitted to read the memory of process {self.pid}",
                                    hint="run as root or with CAP_SYS_PTRACE") from None

    def __call__(self, pieces: list[tuple[int, int, object, int]]) -> int:
        if self.fd is None:
            try:
                return k.vm_readv(self.pid, pieces)
            except PermissionProblem:
                self._open_mem()
        done = 0
        for addr, size, buf, off in pieces:         # same contract: stop at the first short read
            try:
                n = os.preadv(self.fd, [memoryview(buf)[off:off + size]], addr)
            except OSError:
                n = 0
            done += n
            if n != size:
                break
        return done

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def copy_ranges(pid: int, ranges: list[tuple[int, int]], arena: _Arena,
                progress: Progress | None = None, *, via_mem: bool = False
                ) -> tuple[list[Piece], list[tuple[int, int]]]:
    """Copy ``(start, size)`` ranges of ``pid`` into ``arena``.

    :param via_mem: read through ``/proc/PID/mem`` (for a fork child: see :class:`_Reader`).
    :returns: the captured pieces and the unreadable ``(start, size)`` holes
        (pages the kernel refused, e.g. beyond the end of a mapped file).
    :raises NoSuchProcess: the process vanished.
    """
    reader = _Reader(pid, via_mem)
    try:
        return _copy_ranges(reader, ranges, arena, progress)
    finally:
        reader.close()


def _copy_ranges(reader: "_Reader", ranges: list[tuple[int, int]], arena: _Arena,
                 progress: Progress | None) -> tuple[list[Piece], list[tuple[int, int]]]:
    todo = []
    for start, size in ranges:
        buf, off = arena.take(size)
        todo.append((start, size, buf, off))
    total = sum(s for _, s, _, _ in todo)
    pieces: list[Piece] = []
    holes: list[tuple[int, int]] = []
    done = 0
    i = 0
    while i < len(todo):
        batch, nbytes = [], 0
        while i < len(todo) and len(batch) < k.IOV_MAX and (not batch or nbytes + todo[i][1] <= _BATCH_BYTES):
            if todo[i][1] > _BATCH_BYTES and not batch:      # split a huge range
                s, n, b, o = todo[i]
                todo[i:i + 1] = [(s + x, min(_BATCH_BYTES, n - x), b, o + x) for x in range(0, n, _BATCH_BYTES)]
            batch.append(todo[i])
            nbytes += todo[i][1]
            i += 1
        got = reader(batch)
        if got == nbytes:
            for s, n, b, o in batch:
                pieces.append(Piece(s, n, memoryview(b)[o:o + n]))
        else:
            # Something in the batch is unreadable: redo it range by range, page-wise
            # where a range is short (bounded: every step advances by a page).
            for s, n, b, o in batch:
                _copy_slow(reader, s, n, b, o, pieces, holes)
        done += nbytes
        if progress:
            progress(done, total)
    return pieces, holes


def _copy_slow(reader: _Reader, s: int, n: int, b: mmap.mmap, o: int, pieces: list[Piece],
               holes: list[tuple[int, int]]) -> None:
    pos = 0
    while pos < n:
        got = reader([(s + pos, n - pos, b, o + pos)])
        if got > 0:
            got -= got % PAGE if got < n - pos else 0
            pieces.append(Piece(s + pos, got, memoryview(b)[o + pos:o + pos + got]))
            pos += got
            continue
        # first page unreadable: a hole of one page
        step = min(PAGE - ((s + pos) % PAGE), n - pos)
        if holes and holes[-1][0] + holes[-1][1] == s + pos:
            holes[-1] = (holes[-1][0], holes[-1][1] + step)
        else:
            holes.append((s + pos, step))
        pos += step


def _buffer_address(data: memoryview) -> int:
    return int(np.frombuffer(data, np.uint8).ctypes.data) if data.nbytes else 0


def _join_pieces(pieces: list[Piece]) -> list[Piece]:
    """Adjacent pieces whose bytes are adjacent in one buffer become one piece
    (a range read in batches, a heap the kernel shows as two mappings), so
    that :meth:`CapturedTarget.view` can hand out a whole heap segment."""
    out: list[Piece] = []
    last_addr = 0
    for p in pieces:
        if p.data is None or not p.size:
            out.append(p)
            continue
        addr = _buffer_address(p.data)
        q = out[-1] if out else None
        if (q is not None and q.data is not None and q.end == p.start and q.data.obj is p.data.obj
                and last_addr + q.size == addr):
            base = _buffer_address(memoryview(q.data.obj))
            off = last_addr - base
            out[-1] = Piece(q.start, q.size + p.size, memoryview(q.data.obj).cast("B")[off:off + q.size + p.size])
        else:
            out.append(p)
            last_addr = addr
    return out


class CapturedTarget(Target):
    """A process as captured: threads, mappings, auxv, and memory from the copy.

    Memory not copied (read-only file-backed mappings) is read from the mapped
    file at the mapping's offset, if the file is still there.
    """

    def __init__(self, *, pid: int | None, threads: list, mappings: list[Mapping], auxv: bytes,
                 exe: str, pieces: list[Piece], meta: dict | None = None,
                 warnings: list[str] | None = None):
        super().__init__(pid=pid, threads=threads, mappings=list(mappings), auxv=auxv, exe=exe,
                         meta=dict(meta or {}), warnings=list(warnings or []))
        self.pieces = _join_pieces(sorted(pieces, key=lambda p: p.start))
        self._piece_starts = [p.start for p in self.pieces]
        self._files: dict[str, object] = {}
        #: mapped files that must not be read for bytes missing from the copy
        #: (a snapshot opened where the file on disk is not the one that was mapped)
        self.untrusted_files: set[str] = set()
        self._arena: _Arena | None = None
        self._child: int | None = None

    # --- memory -----------------------------------------------------------
    def piece_at(self, addr: int) -> Piece | None:
        i = bisect.bisect_right(self._piece_starts, addr) - 1
        if i >= 0 and self.pieces[i].start <= addr < self.pieces[i].end:
            return self.pieces[i]
        return None

    def view(self, addr: int, size: int) -> memoryview | None:
        """The captured bytes of ``[addr, addr + size)`` in place, when one
        captured piece holds them all (else None: :meth:`read_into` copies)."""
        p = self.piece_at(addr)
        if p is None or p.data is None or addr + size > p.end or size < 0:
            return None
        return p.data[addr - p.start:addr - p.start + size]

    def _read_into(self, addr: int, view: memoryview) -> None:
        # piece by piece straight into ``view``: no intermediate bytes
        # (the generic path built the range twice over before copying it)
        size = len(view)
        pos, end = addr, addr + size
        while pos < end:                       # bounded: each round advances or raises
            p = self.piece_at(pos)
            if p is None or p.data is None:
                j = bisect.bisect_right(self._piece_starts, pos)
                stop = min(end, self.pieces[j].start) if j < len(self.pieces) else end
                m = self.mapping_at(pos)
                stop = min(stop, m.end) if m is not None else stop
                if stop <= pos:
                    raise TargetFault(addr, size)
                view[pos - addr:stop - addr] = self._read(pos, stop - pos)
                pos = stop
                continue
            n = min(end, p.end) - pos
            view[pos - addr:pos - addr + n] = p.data[pos - p.start:pos - p.start + n]
            pos += n

    def _read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        pos = addr
        end = addr + size
        while pos < end:                       # bounded: each round advances or raises
            p = self.piece_at(pos)
            if p is not None and p.data is not None:
                n = min(end, p.end) - pos
                out += p.data[pos - p.start:pos - p.start + n]
            else:
                m = self.mapping_at(pos)
                if m is None:
                    raise TargetFault(addr, size)
                stop = min(end, m.end)
                if p is not None:
                    stop = min(stop, p.end)
                else:   # stop at the next captured piece, if any inside m
                    j = bisect.bisect_right(self._piece_starts, pos)
                    if j < len(self.pieces):
                        stop = min(stop, self.pieces[j].start)
                n = stop - pos
                out += self._read_file(m, pos, n, addr, size)
            pos += n
        return bytes(out)

    def _read_file(self, m: Mapping, pos: int, n: int, addr: int, size: int) -> bytes:
        if not m.path.startswith("/") or wants_copy(m):
            raise TargetFault(addr, size)
        if m.path in self.untrusted_files:
            raise TargetFault(addr, size, f"cannot read {size} bytes at {addr:#x}: not in the snapshot, "
                              f"and {m.path} on disk is not the file that was mapped (build-id differs)")
        f = self._files.get(m.path)
        if f is None:
            try:
                f = open_regular(m.path)    # never a FIFO or a device named by a mapping
            except (OSError, BadData):
                raise TargetFault(addr, size, f"cannot read {size} bytes at {addr:#x}: "
                                  f"{m.path} (not in the snapshot) is not readable") from None
            self._files[m.path] = f
        f.seek(m.offset + pos - m.start)
        data = f.read(n)
        if len(data) < n:
            # past the end of the file: the kernel maps zeros up to the page end only
            page_end = (m.offset + (pos - m.start) + len(data) + PAGE - 1) & ~(PAGE - 1)
            if m.offset + pos - m.start + n > page_end:
                raise TargetFault(addr, size)
            data += bytes(n - len(data))
        return data

    @property
    def captured_bytes(self) -> int:
        return sum(p.size for p in self.pieces if p.data is not None)

    def close(self) -> None:
        """Kill a fork-mode child still held, close files, release the copy.

        Threads, mappings and meta stay available; memory reads do not.
        """
        _kill_child(self._child)
        self._child = None
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._arena is not None:
            self.pieces = []
            self._piece_starts = []
            self._arena.close()
            self._arena = None


def _kill_child(child: int | None) -> None:
    if not child:
        return
    k.kill(child, k.SIGKILL)
    for _ in range(100):
        try:
            r, st = k.waitpid(child, k.WALL)
        except MappedTraceError:
            return
        if r == child and (k.WIFEXITED(st) or k.WIFSIGNALED(st)):
            return


def _pieces_for(mappings: list[Mapping], anon_file: set[tuple[int, int]] | None = None
                ) -> tuple[list[tuple[int, int]], list[Mapping]]:
    ranges, skipped = [], []
    anon_file = anon_file or set()
    for m in mappings:
        if wants_copy(m) or (m.readable and (m.start, m.end) in anon_file):
            ranges.append((m.start, m.size))
        elif m.readable and m.path.startswith("/") and m.offset == 0:
            # the ELF header page of a mapped binary: gdb/lldb find build-ids in it
            ranges.append((m.start, min(PAGE, m.size)))
            skipped.append(m)
        else:
            skipped.append(m)
    return ranges, skipped


def _layout(mappings: list[Mapping], pieces: list[Piece], holes: list[tuple[int, int]]) -> list[Piece]:
    """Cover every mapping with pieces: captured ones, and empty ones for the rest."""
    out = sorted(pieces, key=lambda p: p.start)
    starts = [p.start for p in out]
    extra = []
    for m in mappings:
        pos = m.start
        i = bisect.bisect_left(starts, m.start)
        while pos < m.end:
            if i < len(out) and out[i].start < m.end:
                if out[i].start > pos:
                    extra.append(Piece(pos, out[i].start - pos, None))
                pos = max(pos, out[i].end)
                i += 1
            else:
                extra.append(Piece(pos, m.end - pos, None))
                pos = m.end
    return sorted(out + extra, key=lambda p: p.start)


def _finish(live: LiveTarget, mappings: list[Mapping], pieces: list[Piece],
            holes: list[tuple[int, int]], skipped: list[Mapping], mode: str, arena: _Arena) -> CapturedTarget:
    warnings = list(live.warnings)
    for s, n in holes[:20]:
        warnings.append(f"{n} bytes at {s:#x} could not be read (left out of the snapshot)")
    if len(holes) > 20:
        warnings.append(f"… and {len(holes) - 20} more unreadable ranges")
    meta = dict(live.meta)
    meta.update(mode=mode, file_backed=[m.path for m in skipped if m.path],
                holes=len(holes))
    ct = CapturedTarget(pid=live.pid, threads=live.threads, mappings=mappings, auxv=live.auxv,
                        exe=live.exe, pieces=_layout(mappings, pieces, holes), meta=meta,
                        warnings=warnings)
    ct._arena = arena
    ct.meta["captured_bytes"] = ct.captured_bytes
    return ct


def shares_pages(pid: int) -> bool:
    """Whether process ``pid`` has dirty pages it shares with another process
    (``Shared_Dirty`` of ``/proc/PID/smaps_rollup``): copy-on-write pages of its
    own fork children, or shared memory.  Such a process is read through
    ``/proc/PID/mem``: process_vm_readv would unshare (copy) each
    copy-on-write page it reads (:class:`_Reader`), doubling the memory of a
    process with a forked child (a Redis saving in the background).  False
    when the file cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Shared_Dirty:"):
                    return int(line.split()[1]) > 0
    except (OSError, ValueError, IndexError):
        pass
    return False


def capture_stop_copy(live: LiveTarget, *, arena: _Arena | None = None, release: bool = True,
                      anon_file: set[tuple[int, int]] | None = None,
                      progress: Progress | None = None, via_mem: bool | None = None) -> CapturedTarget:
    """Copy the memory of the stopped ``live`` target, then (``release``) resume it.

    :param anon_file: file-backed ranges to copy (:func:`~.live.anon_file_ranges`),
        read now if not given.
    :param via_mem: read through ``/proc/PID/mem`` rather than process_vm_readv
        (None: when :func:`shares_pages`, looked at now).
    :returns: a :class:`CapturedTarget` with ``meta["pause_ns"]`` when released.
    """
    mappings = live.mappings
    if anon_file is None:
        anon_file = anon_file_ranges(live.pid)
    if via_mem is None:
        via_mem = shares_pages(live.pid)
    ranges, skipped = _pieces_for(mappings, anon_file)
    arena = arena or _Arena(sum(n for _, n in ranges), populate=False)
    try:
        t0 = time.perf_counter_ns()
        pieces, holes = copy_ranges(live.pid, ranges, arena, progress, via_mem=via_mem)
        live.meta["copy_ns"] = time.perf_counter_ns() - t0
    finally:
        if release:
            live.close()
    return _finish(live, mappings, pieces, holes, skipped, "stop-copy", arena)


#: code found in the target (read, never written) that the fork injection runs
_SYSCALL_RET = b"\x0f\x05\xc3"                                   # syscall; ret
_RESTORE_RT = b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05"           # mov $15 (rt_sigreturn), %rax; syscall
#: mov $60 (exit), %eax; syscall — glibc's clone child path; the forked child is
#: single-threaded, so exit ends it (exit_group, mov $231, where that is missing)
_EXITS = (b"\xb8\x3c\x00\x00\x00\x0f\x05", b"\xb8\xe7\x00\x00\x00\x0f\x05")
_NO_SYSCALL = (1 << 64) - 1
#: -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK (kernel-internal)
_RESTART_CODES = {(1 << 64) - n for n in (512, 513, 514, 516)}
_ERESTART_RESTARTBLOCK = (1 << 64) - 516
#: struct rt_sigframe (arch/x86/include/asm/sigframe.h): pretcode, ucontext (304 bytes), siginfo (128)
_UCONTEXT = struct.Struct("<QQQi4xQ")       # uc_flags, uc_link, uc_stack {ss_sp, ss_flags, ss_size}
_SIGCONTEXT = struct.Struct("<18QHHHH5Q8Q")  # struct sigcontext_64 (uapi/asm/sigcontext.h), 256 bytes
_SIGCONTEXT_GPRS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx",
                    "rdx", "rax", "rcx", "rsp", "rip", "eflags")
_FRAME_SIZE = 8 + _UCONTEXT.size + _SIGCONTEXT.size + 8 + 128
_UC_FP_XSTATE, _UC_SIGCONTEXT_SS, _UC_STRICT_RESTORE_SS = 1, 2, 4
#: an ss_flags value do_sigaltstack() refuses (EINVAL, ignored by rt_sigreturn): the
#: thread's alternate signal stack, which ptrace cannot read, is left as it is
_SS_FLAGS_INVALID = 3
#: struct _fpx_sw_bytes in the FXSAVE area's software-reserved bytes (offset 464)
_FPX_SW = struct.Struct("<IIQI")            # magic1, extended_size, xfeatures, xstate_size
_FPX_SW_OFF = 464
_FP_XSTATE_MAGIC1, _FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
#: XSAVE components the kernel enables per process on request (AMX: XTILECFG, XTILEDATA)
_XFEATURES_DYNAMIC = (1 << 17) | (1 << 18)
_RED_ZONE = 128
_SYSGOOD_TRAP = 0x80 | 5


@dataclass
class Gadgets:
    """Addresses of the code the fork injection borrows (see :func:`inject_clone`)."""

    syscall_ret: int
    restore_rt: int
    exit: int


def find_gadgets(pid: int, mappings: list[Mapping]) -> Gadgets:
    """Find ``syscall; ret``, ``__restore_rt`` and an ``exit`` call in libc's code.

    Read-only code, so this runs before the process is stopped.
    :raises MappedTraceError: one of them is missing (then fork mode is not used).
    """
    def code(m: Mapping) -> bytes | None:
        try:
            return k.vm_read(pid, m.start, min(m.size, 8 << 20))
        except MappedTraceError:
            return None
    return gadgets_in(mappings, code, f"process {pid}")


def gadgets_in(mappings: list[Mapping], code: Callable[[Mapping], "bytes | None"], where: str) -> Gadgets:
    """:func:`find_gadgets` with the code of each libc mapping given by ``code(mapping)``
    (None: unreadable): the process's memory locally, the binary's file remotely."""
    cands = [m for m in mappings if m.executable and m.readable and "libc" in os.path.basename(m.path)]
    found: dict[bytes, int] = {}
    for m in cands[:4]:
        data = code(m)
        if data is None:
            continue
        for pat in (_SYSCALL_RET, _RESTORE_RT, *_EXITS):
            i = data.find(pat)
            if pat not in found and i >= 0:
                found[pat] = m.start + i
    exits = [found[p] for p in _EXITS if p in found]
    missing = [n for n, ok in (("syscall; ret", _SYSCALL_RET in found), ("__restore_rt", _RESTORE_RT in found),
                               ("exit", bool(exits))) if not ok]
    if missing:
        raise MappedTraceError(f"no {', '.join(missing)} code found in the C library of {where}",
                               hint="use --mode stop-copy")
    return Gadgets(found[_SYSCALL_RET], found[_RESTORE_RT], exits[0])


def fork_refused(pid: int) -> str | None:
    """Why a fork must not be injected into ``pid`` (None if it may).

    A seccomp filter may kill the process for a ``clone`` it does not expect
    (``SECCOMP_RET_KILL``): never risk that.  A thread with a shadow stack
    (x86 ``shstk``) would fault on the ``ret`` the injection relies on.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            return fork_refused_by_status(f.read())
    except OSError:
        return "cannot read /proc/PID/status"


def fork_refused_by_status(status: str) -> str | None:
    """:func:`fork_refused` from the text of ``/proc/PID/status`` (read here or through a server)."""
    if not status:
        return "cannot read /proc/PID/status"
    for line in status.splitlines()[:200]:
        f = line.split()
        if line.startswith("Seccomp:") and f[1:2] == ["2"]:
            return "the process runs under a seccomp filter"
        if line.startswith("x86_Thread_features:") and "shstk" in f:
            return "the process uses a shadow stack"
    return None


def _pick_thread(live: LiveTarget) -> ThreadSnapshot:
    # Any thread works; preferred: one outside a system call (its registers come
    # back exactly even if we die), then one whose call restarts plainly (not
    # through the restart block, which rt_sigreturn cancels), the main thread first.
    ts = [t for t in live.threads if live.can_resume(t.tid)]
    if not ts:
        raise MappedTraceError(f"no thread of process {live.pid} can be borrowed for the fork "
                               "(all are exiting or hold a signal)")
    return min(ts, key=lambda t: (t.regs["orig_rax"] != _NO_SYSCALL, t.regs["rax"] == _ERESTART_RESTARTBLOCK,
                                  t.tid != live.pid))


@dataclass
class _Frame:
    """A signal frame written below a thread's stack pointer (see :func:`inject_clone`)."""

    addr: int           # rt_sigframe: the parent's stack pointer while armed
    data: bytes
    saved: bytes        # the stack bytes it covers, put back afterwards

    @property
    def child_sp(self) -> int:
        return self.addr + 8 + _UCONTEXT.size + _SIGCONTEXT.size + 8      # the siginfo, unused


def _resumed_regs(regs: dict[str, int]) -> dict[str, int]:
    """The registers a stopped thread resumes with (what the kernel's syscall restart
    would make of them): a call interrupted with -ERESTART* is issued again."""
    r = dict(regs)
    if r["orig_rax"] != _NO_SYSCALL and r["rax"] in _RESTART_CODES:
        # -ERESTART_RESTARTBLOCK is restarted as the original call too: rt_sigreturn
        # cancels the restart block (a sleep then starts over rather than fail EINTR)
        r["rax"] = r["orig_rax"]
        r["rip"] -= 2
    return r


def _fp_area(t: ThreadSnapshot) -> tuple[bytes, bool]:
    """The FPU state in the format rt_sigreturn reads: XSAVE with the magic words, or FXSAVE."""
    xs = t.xstate
    if xs and len(xs) >= xsave.LEGACY:
        # ptrace's NT_X86_XSTATE keeps XCR0 where a signal frame has its
        # software bytes (offset 464, as gdb reads it): write the frame's own
        xfeatures = xsave.features(xs)
        in_use = struct.unpack_from("<Q", xs, 512)[0]          # the XSAVE header's XSTATE_BV
        if not in_use & _XFEATURES_DYNAMIC:
            # ptrace gives the area at its largest (AMX tiles: 11 KiB), but
            # rt_sigreturn takes an area no larger than the process's own
            # (fpstate->user_size, which holds the tiles only once the process
            # asked for them) and otherwise restores FXSAVE alone, resetting
            # AVX: leave the dynamic components out while they are unused
            xfeatures &= ~_XFEATURES_DYNAMIC
        layout = xsave.cpu_layout() or xsave.STANDARD
        size = max([xsave.LEGACY] + [layout[c][0] + layout[c][1] for c in range(2, 64)
                                     if xfeatures >> c & 1 and c in layout])
        if size > len(xs):
            size = len(xs)
        area = bytearray(xs[:size])
        area[_FPX_SW_OFF:512] = bytes(512 - _FPX_SW_OFF)
        _FPX_SW.pack_into(area, _FPX_SW_OFF, _FP_XSTATE_MAGIC1, size + 4, xfeatures, size)
        return bytes(area) + struct.pack("<I", _FP_XSTATE_MAGIC2), True
    if t.fpregs and len(t.fpregs) >= 512:
        # FXSAVE only: x87/SSE state restored, AVX upper halves reset (only on the
        # tracer-death path; the normal path restores registers with ptrace)
        area = bytearray(t.fpregs[:512])
        area[_FPX_SW_OFF:512] = bytes(512 - _FPX_SW_OFF)
        return bytes(area), False
    raise MappedTraceError(f"no FPU state of thread {t.tid}: cannot build its signal frame")


def _build_frame(live: LiveTarget, t: ThreadSnapshot, g: Gadgets, mask: int) -> _Frame:
    """A signal frame that puts thread ``t`` back as it was: laid out like the kernel's
    (below the red zone, FPU state 64-byte aligned, ``pretcode`` = ``__restore_rt``)."""
    fp, xsave = _fp_area(t)
    rsp = t.regs["rsp"]
    fp_addr = (rsp - _RED_ZONE - len(fp)) & ~63
    addr = ((fp_addr - _FRAME_SIZE) & ~15) - 8
    m = live.mapping_at(rsp - 1)
    if m is None or not m.writable or addr < m.start:
        raise MappedTraceError(f"not enough stack below {rsp:#x} in thread {t.tid} for a signal frame")
    r = _resumed_regs(t.regs)
    uc = _UCONTEXT.pack(_UC_SIGCONTEXT_SS | _UC_STRICT_RESTORE_SS | (_UC_FP_XSTATE if xsave else 0), 0,
                        0, _SS_FLAGS_INVALID, 0)
    sc = _SIGCONTEXT.pack(*(r[n] & ((1 << 64) - 1) for n in _SIGCONTEXT_GPRS), r["cs"], 0, 0, r["ss"],
                          0, 0, 0, 0, fp_addr, *([0] * 8))   # err, trapno, oldmask, cr2, fpstate
    head = struct.pack("<Q", g.restore_rt) + uc + sc + struct.pack("<Q", mask)
    info = struct.pack("<Q", g.exit) + bytes(120)           # the child's stack: "return" into exit
    data = head + info
    data += bytes(fp_addr - addr - len(data)) + fp
    saved = live.read(addr, len(data))
    return _Frame(addr, data, saved)


def inject_clone(live: LiveTarget, gadgets: Gadgets | None = None) -> int:
    """Make one stopped thread of ``live`` fork; return the (traced, stopped) child's PID.

    The thread runs a ``clone`` at a ``syscall; ret`` of libc, driven by
    syscall stops (``PTRACE_SYSCALL``, ``PTRACE_O_TRACESYSGOOD``): no
    breakpoint, no single step, nothing that leaves a ``SIGTRAP`` behind.
    Before its registers are borrowed, a signal frame holding them (and its
    FPU state and signal mask) is written below its stack, where a signal
    frame may go at any time (the ABI's red zone is left alone), and the
    ``ret`` after the ``clone`` leads to ``__restore_rt``.  So at every
    instant the thread runs on correctly if this tracer is SIGKILLed: it
    completes the ``clone`` (or has), returns into ``rt_sigreturn`` and gets
    its own registers, mask and stack back (an interrupted system call is
    issued again, as the kernel's restart would); the child, whose stack
    pointer is set to a word holding the address of an ``exit`` call, exits.
    Normally (the tracer alive) the registers, mask and stack bytes are put
    back with ptrace and the thread is parked in a ``PTRACE_EVENT_STOP`` as
    before.

    :raises NoSuchProcess: the thread exited meanwhile.
    :raises MappedTraceError: the fork cannot be done (use stop-copy).
    """
    t = _pick_thread(live)
    tid = t.tid
    g = gadgets or find_gadgets(live.pid, live.mappings)
    saved = k.get_regs(tid)
    mask = k.get_sigmask(tid)
    frame = _build_frame(live, t, g, mask)
    child, result = 0, 0
    try:
        k.vm_write(live.pid, frame.addr, frame.data)    # below the red zone: free by the ABI
        for flags in (CLONE_PARENT, 0):
            regs = dict(t.regs)
            regs.update(rax=k.SYS_CLONE, orig_rax=_NO_SYSCALL, rip=g.syscall_ret, rsp=frame.addr,
                        rdi=flags, rsi=frame.child_sp, rdx=0, r10=0, r8=0)
            k.set_options(tid, k.PTRACE_O_TRACECLONE | k.PTRACE_O_TRACEFORK | k.PTRACE_O_TRACEVFORK
                          | k.PTRACE_O_TRACESYSGOOD)
            k.set_regs(tid, ThreadState(tid, regs).pack_regs())     # armed: safe to die from here on
            k.set_sigmask(tid, ~0)      # no signal handler meets the borrowed registers
            child, result = _run_injected(live, tid)
            if child or result != -EINVAL:
                break
    finally:
        # mask first: dying between the two leaves a thread that still returns
        # through the frame (which holds the mask), never one with signals blocked
        k.set_sigmask(tid, mask)
        k.try_ptrace(k.PTRACE_SETREGS, tid, 0, k.ffi.new("char[]", saved))
        k.try_ptrace(k.PTRACE_SETOPTIONS, tid, 0, 0)
        if tid in live.stopped_tids:
            # park it in a PTRACE_EVENT_STOP again (from a syscall stop a plain
            # resume would skip the restart of an interrupted call)
            if not _settle.disarm_single_step(live, tid):
                live.warnings.append(f"thread {tid}: could not park it again after the fork")
        try:
            k.vm_write(live.pid, frame.addr, frame.saved)
            if child:
                k.vm_write(child, frame.addr, frame.saved)
        except MappedTraceError:
            pass
    if child:
        return child
    raise MappedTraceError(f"the injected clone failed in thread {tid} of process {live.pid} "
                           f"(errno {-result if result < 0 else '?'})", hint="use --mode stop-copy")


def _run_injected(live: LiveTarget, tid: int) -> tuple[int, int]:
    """Drive the armed thread through its clone to the syscall-exit stop;
    return (child pid or 0, the clone's result)."""
    child = 0
    entered = False
    k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    for _ in range(_INJECT_ROUNDS):
        _, st = k.waitpid(tid, k.WALL)
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            live.forget_thread(tid)
            raise NoSuchProcess(f"thread {tid} of process {live.pid} exited during the fork")
        if not k.WIFSTOPPED(st):
            continue
        ev, sig = k.EVENT(st), k.WSTOPSIG(st)
        if ev in (k.PTRACE_EVENT_CLONE, k.PTRACE_EVENT_FORK, k.PTRACE_EVENT_VFORK):
            child = k.get_event_msg(tid)
            _hold_child(child)
        elif ev == 0 and sig == _SYSGOOD_TRAP:
            if entered:
                rax = ThreadState.unpack_regs(k.get_regs(tid))["rax"]
                res = rax - (1 << 64) if rax >= 1 << 63 else rax
                if res > 0 and not child:
                    child = res
                    _hold_child(child)
                return (child if res > 0 else 0), res
            entered = True
        # anything else (a group stop, an unblockable signal) is passed over:
        # signals are blocked while the thread is borrowed
        k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    raise MappedTraceError(f"the injected clone in thread {tid} did not complete "
                           f"within {_INJECT_ROUNDS} stops", hint="use --mode stop-copy")


def _hold_child(child: int) -> None:
    # The auto-traced child starts in a ptrace stop; make it die with us.
    for _ in range(100):
        try:
            r, st = k.waitpid(child, k.WALL)
        except MappedTraceError:
            return
        if r == child and k.WIFSTOPPED(st):
            k.try_ptrace(k.PTRACE_SETOPTIONS, child, 0, k.PTRACE_O_EXITKILL)
            return
        if r == child:
            return


def capture_fork(live: LiveTarget, *, arena: _Arena | None = None, release: bool = True,
                 hold_child: bool = False, anon_file: set[tuple[int, int]] | None = None,
                 progress: Progress | None = None, gadgets: Gadgets | None = None,
                 before_fork: Callable[[], None] | None = None) -> CapturedTarget:
    """Fork the stopped ``live`` target, resume it, copy the memory from the child.

    :param hold_child: keep the child (and its copy-on-write pages) alive until
        the result is closed (the benchmark uses it to measure the cost the
        parent pays meanwhile); otherwise it is killed as soon as it is read.
    :param before_fork: called with every thread stopped, right before the injected fork
        (the far-memory pager tells its own fork from the program's by it)
    """
    why = fork_refused(live.pid)
    if why is None:
        child = 0
        try:
            if before_fork is not None:
                before_fork()
            t0 = time.perf_counter_ns()
            child = inject_clone(live, gadgets)
            live.meta["fork_ns"] = time.perf_counter_ns() - t0
        except NoSuchProcess:
            if release:
                live.close()
            raise
        except MappedTraceError as e:
            why = e.message
        else:
            if release:
                live.close()
    if why is not None:
        # still stopped: fall back to copying now
        live.warnings.append(f"fork mode not used ({why}); captured with stop-copy instead")
        return capture_stop_copy(live, arena=arena, release=release, anon_file=anon_file,
                                 progress=progress)
    try:
        cmaps = parse_maps(open(f"/proc/{child}/maps").read())
        # the child lacks MADV_DONTFORK ranges; keep the parent's view of the rest
        mappings = live.mappings
        if anon_file is None:
            anon_file = anon_file_ranges(live.pid)
        ranges, skipped = _pieces_for(mappings, anon_file)
        inchild = [(m.start, m.end) for m in cmaps]
        ranges = [r for r in ranges if any(a <= r[0] and r[0] + r[1] <= b for a, b in inchild)]
        # (not faulted in ahead: the process runs on already, the copy faults its pages itself)
        arena = arena or _Arena(sum(n for _, n in ranges), populate=False)
        t1 = time.perf_counter_ns()
        # /proc/CHILD/mem, not process_vm_readv: that would unshare (copy) every
        # page of the child before reading it (see _Reader)
        pieces, holes = copy_ranges(child, ranges, arena, progress, via_mem=True)
        live.meta["copy_ns"] = time.perf_counter_ns() - t1
    except BaseException:
        _kill_child(child)
        raise
    ct = _finish(live, mappings, pieces, holes, skipped, "fork", arena)
    ct.meta["child_pid"] = child
    if hold_child:
        ct._child = child
    else:
        _kill_child(child)
    return ct


def capture(live: LiveTarget, mode: str = "stop-copy", **kw) -> CapturedTarget:
    """Capture ``live`` in ``mode`` (:data:`MODES`); see :func:`capture_stop_copy`, :func:`capture_fork`."""
    if mode == "stop-copy":
        return capture_stop_copy(live, **kw)
    if mode == "fork":
        return capture_fork(live, **kw)
    raise MappedTraceError(f"unknown capture mode {mode!r}; choose one of {', '.join(MODES)}")


def no_loop_points_note(maps) -> str | None:
    """What settling cannot do in a binary built without loop map points (None if it has them).

    Loop points are off by default (``mappedtrace cc --settle-points`` turns
    them on): a thread stopped in a loop without a call then never reaches a
    map point by stepping, and its top frame stays conservative.
    """
    if any(f.n_loop_points for f in maps.functions):
        return None
    return ("the executable has no loop map points (built without 'mappedtrace cc --settle-points'): "
            "a thread stopped in a loop without calls cannot be settled, its top frame is scanned "
            "conservatively (unsettled)")


def snapshot_process(pid: int, mode: str = "stop-copy", *, settle: bool = False,
                     max_steps: int | None = None, max_settle_ns: int | None = None,
                     hold_child: bool = False, before_fork: Callable[[], None] | None = None,
                     progress: Progress | None = None) -> CapturedTarget:
    """Stop, settle, capture and resume process ``pid`` (DESIGN steps 1–3).

    The destination buffer is faulted in before the stop, so the pause
    (``meta["pause_ns"]``) holds only the stop, the settling and the copy
    (stop-copy) or the fork (fork).

    ``settle`` single-steps threads to map points.  It is off by default
    because single-stepping cannot be made safe against the tracer's own
    death: a thread stopped in its single-step trap has SIGTRAP pending
    (and TF set), and a tracer killed then leaves the kernel to deliver that
    SIGTRAP, which kills the target.  No ptrace request avoids it.

    :returns: a :class:`CapturedTarget`; ``close()`` it when done.
    """
    from .live import check_pid
    if mode not in MODES:
        raise MappedTraceError(f"unknown capture mode {mode!r}; choose one of {', '.join(MODES)}")
    check_pid(pid)
    arena = None
    anon_file = anon_file_ranges(pid)      # before the stop: it walks page tables
    shared = shares_pages(pid) if mode == "stop-copy" else None     # likewise
    if mode == "stop-copy":
        try:
            est = plan_bytes(parse_maps(open(f"/proc/{pid}/maps").read()))
        except FileNotFoundError:
            raise NoSuchProcess(f"no process with PID {pid}") from None
        except PermissionError:
            from ..errors import PermissionProblem
            raise PermissionProblem(f"not permitted to trace process {pid} (permission denied "
                                    f"reading /proc/{pid}/maps)",
                                    hint="run as root or with CAP_SYS_PTRACE") from None
        # slack for growth between this look and the stop
        arena = _Arena(est + est // 16 + (8 << 20), populate=True)
    gadgets = None
    if mode == "fork" and fork_refused(pid) is None:
        try:        # read-only code: found before the stop
            gadgets = find_gadgets(pid, parse_maps(open(f"/proc/{pid}/maps").read()))
        except (OSError, MappedTraceError):
            gadgets = None          # inject_clone looks again, and says why it cannot
    maps = None
    early_warning = ""
    if True:       # load the maps before the stop: the pause is for the target only
        try:
            maps = _settle.load_maps(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            maps = None
        except MappedTraceError as e:
            maps = None
            early_warning = f"maps not used for settling: {e.message}"
    live = LiveTarget(pid)
    try:
        # without ``settle`` threads are only classified (max_steps=0: no single step)
        _settle.settle_threads(live, maps, max_steps=max_steps if settle else 0,
                               max_ns=max_settle_ns, _maps_loaded=True)
        if mode == "fork" and live.was_stopped:
            live.warnings.append("the process was stopped (state T): captured with stop-copy instead of fork")
            mode = "stop-copy"
        ct = capture(live, mode, arena=arena, progress=progress, anon_file=anon_file,
                     **({"hold_child": hold_child, "gadgets": gadgets, "before_fork": before_fork}
                        if mode == "fork" else
                        {"via_mem": shared}))
    except BaseException:
        live.close()
        if arena is not None:
            arena.close()
        raise
    if early_warning:
        ct.warnings.insert(0, early_warning)
    if settle and maps is not None:
        note = no_loop_points_note(maps)
        if note:
            ct.warnings.insert(0, note)
            ct.meta["settle_loop_points"] = False
    ct.meta["pause_ns"] = live.meta.get("pause_ns", 0)
    ct.meta["was_stopped"] = live.was_stopped
    return ct
