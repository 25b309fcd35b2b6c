"""The LLDB backend: stop and capture a process through LLDB's Python API.

A second opinion on the ptrace backend (tests compare the two on the same
stopped state) and a fallback where our own ptrace code cannot run.  LLDB
attaches (``lldb-server`` stops every thread), we read the general-purpose
registers of each thread, the mappings (``/proc/PID/maps``) and the memory a
stop-copy capture copies, then LLDB detaches and the process runs on.

Known differences from the ptrace backend, written down where they arise:

* LLDB does not expose ``orig_rax``; it is read from
  ``/proc/PID/task/TID/syscall`` while the thread is stopped (-1 when not in a
  system call).
* The FXSAVE area (``fpregs``, 512 bytes) is rebuilt from LLDB's FP register
  view (x87 control/status/tag, FIP/FDP, MXCSR, ST0–7, XMM0–15; bytes
  416–511 are left zero); the XSAVE area (``xstate``) is not (None).
* No settling by single-stepping (LLDB's instruction step resumes through its
  own thread plans): threads are classified only — at a map point
  (settled), outside instrumented code (uninstrumented), or in between
  (unsettled).
* LLDB attaches with ``PTRACE_ATTACH`` (a ``SIGSTOP`` that it consumes); a
  process that was stopped (state T) beforehand is not supported here.
"""
from __future__ import annotations

import os
import struct
import time

from .base import GPR_NAMES, SETTLED, UNINSTRUMENTED, UNSETTLED
from .capture import CapturedTarget, Piece, _layout, _pieces_for
from .live import ThreadSnapshot, anon_file_ranges, check_pid, parse_maps, process_state, proc_meta
from ..errors import MappedTraceError, NoSuchProcess, PermissionProblem, ToolchainError

#: LLDB names that differ from ``user_regs_struct``'s
_LLDB_NAME = {"eflags": "rflags"}
_NO_SYSCALL = (1 << 64) - 1
_CHUNK = 16 << 20


def _lldb():
    from ..toolchain import import_lldb
    return import_lldb()


def _orig_rax(pid: int, tid: int) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            first = f.read().split()[0]
    except (OSError, IndexError):
        return _NO_SYSCALL
    try:
        nr = int(first)
    except ValueError:          # "running"
        return _NO_SYSCALL
    return nr & _NO_SYSCALL


def _gprs(lldb, thread) -> dict[str, int]:
    frame = thread.GetFrameAtIndex(0)
    want = {_LLDB_NAME.get(n, n): n for n in GPR_NAMES}
    regs = {n: 0 for n in GPR_NAMES}
    for rs in frame.GetRegisters():
        if "General" not in (rs.GetName() or ""):
            continue
        for r in rs:
            n = want.get(r.GetName())
            if n is not None and r.GetByteSize() == 8:
                regs[n] = r.GetValueAsUnsigned()
    return regs


_FX_HEAD = struct.Struct("<HHBxHQQII")   # fcw, fsw, abridged ftw, fop, fip, fdp, mxcsr, mxcsr_mask


def _fxsave(thread) -> bytes | None:
    """The 512-byte FXSAVE image of ``thread``'s FP registers, as PTRACE_GETFPREGS gives it."""
    vals: dict[str, bytes] = {}
    import lldb as _l      # already imported by _lldb()
    for rs in thread.GetFrameAtIndex(0).GetRegisters():
        if "Floating" not in (rs.GetName() or ""):
            continue
        for r in rs:
            d = r.GetData()
            n = d.GetByteSize()
            if n:
                e = _l.SBError()
                raw = d.ReadRawData(e, 0, n)
                if e.Success() and raw is not None:
                    vals[r.GetName()] = bytes(raw)
    need = ("fctrl", "fstat", "ftag", "fop", "fip", "fdp", "mxcsr", "mxcsrmask")
    if not all(n in vals for n in need):
        return None
    u = {n: int.from_bytes(vals[n], "little") for n in need}
    # LLDB shows the full 16-bit tag word; FXSAVE keeps the abridged form (1 = not empty)
    ftw = sum(1 << i for i in range(8) if (u["ftag"] >> (2 * i)) & 3 != 3) if len(vals["ftag"]) == 2 else u["ftag"] & 0xFF
    out = bytearray(512)
    _FX_HEAD.pack_into(out, 0, u["fctrl"], u["fstat"], ftw, u["fop"], u["fip"], u["fdp"], u["mxcsr"],
                       u["mxcsrmask"])
    for i in range(8):
        out[32 + 16 * i:32 + 16 * i + 10] = vals.get(f"st{i}", bytes(10))[:10].ljust(10, b"\0")
    for i in range(16):
        out[160 + 16 * i:176 + 16 * i] = vals.get(f"xmm{i}", bytes(16))[:16].ljust(16, b"\0")
    return bytes(out)


def snapshot_lldb(pid: int, *, settle: bool = True, max_steps: int | None = None,
                  timeout_s: float = 60.0) -> CapturedTarget:
    """Attach with LLDB, capture threads, registers and memory (stop-copy), detach.

    :returns: a :class:`~mappedtrace.target.capture.CapturedTarget` with
        ``meta["backend"] == "lldb"``.
    :raises NoSuchProcess, PermissionProblem, ToolchainError: one-line errors.
    """
    check_pid(pid)
    if process_state(pid) == "T":
        raise MappedTraceError(f"process {pid} is stopped (state T); the LLDB backend would resume it",
                               hint="use --backend ptrace")
    lldb = _lldb()
    anon_file = anon_file_ranges(pid)
    dbg = lldb.SBDebugger.Create()
    dbg.SetAsync(False)
    try:
        target = dbg.CreateTarget("")
        err = lldb.SBError()
        t0 = time.perf_counter_ns()
        proc = target.AttachToProcessWithID(dbg.GetListener(), pid, err)
        if err.Fail() or not proc.IsValid():
            msg = err.GetCString() or "unknown error"
            if "not permitted" in msg.lower():
                raise PermissionProblem(f"LLDB was not permitted to attach to process {pid}: {msg}",
                                        hint="run as root or with CAP_SYS_PTRACE")
            if not os.path.exists(f"/proc/{pid}"):
                raise NoSuchProcess(f"process {pid} exited")
            raise ToolchainError(f"LLDB could not attach to process {pid}: {msg}")
        t_attached = time.perf_counter_ns()
        try:
            ct = _capture(lldb, proc, pid, anon_file, settle)
        finally:
            proc.Detach()
        t1 = time.perf_counter_ns()
    finally:
        lldb.SBDebugger.Destroy(dbg)
    ct.meta.update(backend="lldb", mode="stop-copy", pause_ns=t1 - t0, stop_ns=t_attached - t0,
                   was_stopped=False)
    return ct


def _capture(lldb, proc, pid: int, anon_file, settle: bool) -> CapturedTarget:
    threads = []
    for i in range(proc.GetNumThreads()):
        th = proc.GetThreadAtIndex(i)
        tid = th.GetThreadID()
        regs = _gprs(lldb, th)
        regs["orig_rax"] = _orig_rax(pid, tid)
        threads.append(ThreadSnapshot(tid, regs, _fxsave(th), name=th.GetName() or ""))
    try:
        mappings = parse_maps(open(f"/proc/{pid}/maps").read())
        exe = os.readlink(f"/proc/{pid}/exe")
        auxv = open(f"/proc/{pid}/auxv", "rb").read()
    except FileNotFoundError:
        raise NoSuchProcess(f"process {pid} exited") from None
    ranges, skipped = _pieces_for(mappings, anon_file)
    pieces, holes = [], []
    t0 = time.perf_counter_ns()
    for start, size in ranges:
        buf = bytearray()
        for off in range(0, size, _CHUNK):
            n = min(_CHUNK, size - off)
            err = lldb.SBError()
            data = proc.ReadMemory(start + off, n, err)
            if err.Fail() or data is None or len(data) != n:
                if buf:
                    pieces.append(Piece(start + off - len(buf), len(buf), memoryview(bytes(buf))))
                    buf = bytearray()
                holes.append((start + off, n))
                continue
            buf += data
        if buf:
            pieces.append(Piece(start + size - len(buf), len(buf), memoryview(bytes(buf))))
    copy_ns = time.perf_counter_ns() - t0
    meta = proc_meta(pid)
    meta.update(copy_ns=copy_ns, file_backed=[m.path for m in skipped if m.path], holes=len(holes))
    ct = CapturedTarget(pid=pid, threads=threads, mappings=mappings, auxv=auxv, exe=exe,
                        pieces=_layout(mappings, pieces, holes), meta=meta)
    ct.meta["captured_bytes"] = ct.captured_bytes
    for s, n in holes[:20]:
        ct.warnings.append(f"{n} bytes at {s:#x} could not be read through LLDB")
    if settle:
        _classify(ct)
    return ct


def _classify(ct: CapturedTarget) -> None:
    from . import settle as _settle
    try:
        maps = _settle.load_maps(ct.exe)
        bias = _settle.load_bias(ct) if maps is not None else 0
    except MappedTraceError as e:
        ct.warnings.append(f"maps of {ct.exe} not used: {e.message}")
        maps, bias = None, 0
    if maps is not None:
        from .capture import no_loop_points_note
        note = no_loop_points_note(maps)
        if note:
            ct.warnings.insert(0, note)
            ct.meta["settle_loop_points"] = False
    cls = _settle._Classifier(ct, maps, bias)
    for t in ct.threads:
        where = cls.classify(t.pc)
        t.settle = {"record": SETTLED, "other": UNINSTRUMENTED}.get(where, UNSETTLED)
        t.settle_steps = 0
