"""Settle stopped threads at map points by single-stepping (DESIGN step 2).

A thread stopped inside instrumented code *between* map points has pointer
values in places no map describes.  Each such thread is advanced with
``PTRACE_SINGLESTEP`` — never a breakpoint, no byte of the target is written —
until its PC is a record PC of the main executable's maps (a call-site return
address or a loop map point, FORMAT.md §1), or until it leaves instrumented
code (then its instrumented callers sit at call sites, which are map points).
The walk is bounded by a step count and a time budget per thread; a thread
that does not get there is recorded as :data:`~mappedtrace.target.base.UNSETTLED`.

Never stepped:

* threads inside a system call (``orig_rax != -1``): resuming them would
  restart the call, which may block; they sit in uninstrumented libc code, or
  are recorded as unsettled if the call was made from instrumented code;
* any thread of a process that was in group-stop (state T) before we came:
  stepping would run a process its owner stopped;
* a ``syscall``/``sysenter``/``int 0x80`` instruction: the step ends there
  (unsettled) rather than risk a blocking call.

A signal that arrives while stepping ends the walk for that thread (it is
kept and handed back on detach).  Only the main executable's maps are used
(maps in shared libraries are not settled on; their threads count as
uninstrumented).  For a PIE the load bias (``AT_ENTRY`` − ``e_entry``) is
added to record PCs.
"""
from __future__ import annotations

import struct
import time

from . import _kernel as k
from .base import SETTLED, UNINSTRUMENTED, UNSETTLED, Target, ThreadState
from ..binreader import Cursor
from ..errors import MappedTraceError
from ..fileio import open_regular

#: default bounds per thread
MAX_STEPS = 20000
MAX_NS = 100_000_000
#: a single step that has not finished after this long is interrupted
STEP_TIMEOUT_NS = 100_000_000
_SYSCALL_OPCODES = (b"\x0f\x05", b"\x0f\x34", b"\xcd\x80")
_NO_SYSCALL = (1 << 64) - 1
AT_ENTRY = 9
_EHDR_ENTRY = struct.Struct("<16sHHIQ")     # e_ident, e_type, e_machine, e_version, e_entry
ET_DYN = 3


def load_bias(target: Target, exe: str | None = None) -> int:
    """The load bias of the main executable (0 for a non-PIE one).

    :raises BadData: the executable is not a readable ELF file.
    """
    path = exe or target.exe
    try:
        with open_regular(path, "the executable") as f:
            head = f.read(_EHDR_ENTRY.size)
    except OSError as e:
        raise MappedTraceError(f"cannot read the executable {path}: {e.strerror}") from None
    c = Cursor(head, f"{path}: ELF header")
    ident, e_type, _, _, e_entry = c.unpack(_EHDR_ENTRY, "ELF header")
    if ident[:4] != b"\x7fELF":
        raise c.error("not an ELF file", at=0)
    if e_type != ET_DYN:
        return 0
    at_entry = target.auxv_entries().get(AT_ENTRY)
    return (at_entry - e_entry) if at_entry else 0


class _Classifier:
    """Where a PC is: at a map point, in instrumented code, or elsewhere."""

    def __init__(self, target: Target, maps, bias: int):
        self.maps = maps
        self.bias = bias
        exe_maps = [m for m in target.mappings if m.path == target.exe and m.executable]
        self.ranges = [(m.start, m.end) for m in exe_maps]
        self.target = target
        self._code: dict[int, bytes] = {}      # mapping start → its bytes (read once)

    def code_at(self, pc: int, n: int) -> bytes:
        """``n`` code bytes at ``pc``, from a copy of the executable mapping read once."""
        for a, b in self.ranges:
            if a <= pc < b:
                if a not in self._code:
                    try:
                        self._code[a] = self.target.read(a, b - a)
                    except MappedTraceError:
                        self._code[a] = b""
                code = self._code[a]
                if pc - a + n <= len(code):
                    return code[pc - a:pc - a + n]
        return self.target.read(pc, n)

    def classify(self, pc: int) -> str:
        """"record", "instrumented" or "other"."""
        if self.maps is None or not any(a <= pc < b for a, b in self.ranges):
            return "other"
        link = pc - self.bias
        if self.maps.record_at(link) is not None:
            return "record"
        f = self.maps.function_at(link)
        if f is not None and f.status in ("instrumented", "partial"):
            return "instrumented"
        return "other"


def load_maps(path: str):
    """The main executable's maps, or None when the binary has none (decoded
    once per file version, kept on disk by build-id: formats.maps_cache).

    :raises BadData: malformed map sections.
    """
    from ..formats.maps_cache import load_cached     # the formats layer
    bm = load_cached(path)
    return bm if bm.has_maps else None


def settle_threads(live, maps=None, *, max_steps: int | None = None,
                   max_ns: int | None = None, _maps_loaded: bool = False) -> None:
    """Settle every stopped thread of ``live`` (a :class:`~mappedtrace.target.live.LiveTarget`).

    Sets ``settle`` and ``settle_steps`` on each thread of ``live.threads``
    and re-reads their registers.  ``maps`` defaults to the maps of
    ``live.exe`` (loaded with :func:`load_maps`); without maps every thread is
    :data:`UNINSTRUMENTED`.
    """
    max_steps = MAX_STEPS if max_steps is None else max_steps
    max_ns = MAX_NS if max_ns is None else max_ns
    if maps is None and not _maps_loaded:
        try:
            maps = load_maps(live.exe)
        except MappedTraceError as e:
            live.warnings.append(f"maps of {live.exe} not used for settling: {e.message}")
            maps = None
    try:
        bias = load_bias(live) if maps is not None else 0
    except MappedTraceError as e:
        live.warnings.append(f"settling skipped: {e.message}")
        maps = None
        bias = 0
    cls = _Classifier(live, maps, bias)
    t_all = time.perf_counter_ns()
    stepped = False
    for t in live.threads:
        if t.tid not in live.stopped_tids:
            continue
        where = cls.classify(t.pc)
        if where == "record":
            t.settle, t.settle_steps = SETTLED, 0
        elif where == "other":
            t.settle, t.settle_steps = UNINSTRUMENTED, 0
        elif (t.regs["orig_rax"] != _NO_SYSCALL or live.was_stopped or max_steps <= 0
              or not live.can_resume(t.tid)):
            t.settle, t.settle_steps = UNSETTLED, 0
        else:
            t.settle, t.settle_steps = _step_thread(live, t, cls, max_steps, max_ns)
            stepped = True
            if live.can_resume(t.tid) and t.settle_steps and not disarm_single_step(live, t.tid):
                live.warnings.append(f"thread {t.tid}: could not re-stop it after single-stepping")
                t.settle = UNSETTLED
    live.meta["settle_ns"] = time.perf_counter_ns() - t_all
    if stepped:
        live.refresh()


#: what a step function returns when it could not make the step
_NOT_STEPPED = -1


def _walk(cls: _Classifier, pc: int, max_steps: int, max_ns: int, step) -> tuple[str, int]:
    """Single-step one thread from ``pc`` until a map record or uninstrumented code, within
    ``max_steps`` and ``max_ns``; never at a ``syscall``.  ``step()`` makes one step and
    returns the new PC, None when the walk must end there (the step counts: the trap flag may
    be set), or :data:`_NOT_STEPPED` when no step was made."""
    t0 = time.perf_counter_ns()
    for steps in range(max_steps):
        if time.perf_counter_ns() - t0 > max_ns:
            return UNSETTLED, steps
        try:
            if cls.code_at(pc, 2) in _SYSCALL_OPCODES:
                return UNSETTLED, steps
        except MappedTraceError:
            return UNSETTLED, steps
        pc = step()
        if pc == _NOT_STEPPED:
            return UNSETTLED, steps
        if pc is None:
            return UNSETTLED, steps + 1
        where = cls.classify(pc)
        if where == "record":
            return SETTLED, steps + 1
        if where == "other":
            # left instrumented code: every instrumented caller sits at a call site
            return UNINSTRUMENTED, steps + 1
    return UNSETTLED, max_steps


def _step_thread(live, t: ThreadState, cls: _Classifier, max_steps: int, max_ns: int) -> tuple[str, int]:
    tid = t.tid

    def step() -> int | None:
        if k.try_ptrace(k.PTRACE_SINGLESTEP, tid, 0, 0) < 0:
            return _NOT_STEPPED
        st = _wait_step(live, tid)
        if st is None:
            # the step was asked for: the trap flag may be set, so it counts (the caller disarms)
            return None
        sig, ev = k.WSTOPSIG(st), k.EVENT(st)
        if not (ev == 0 and sig == k.SIGTRAP):
            if ev == 0 and sig:
                # a signal arrived: stop here; disarm suppresses it and re-sends it
                disarm_single_step(live, tid, [sig])
            return None
        try:
            return int.from_bytes(k.get_regs(tid)[16 * 8:17 * 8], "little")
        except MappedTraceError:
            return None

    return _walk(cls, t.pc, max_steps, max_ns, step)


def disarm_single_step(live, tid: int, pending: list[int] | None = None) -> bool:
    """Turn off the trap flag a ``PTRACE_SINGLESTEP`` left set, without running user code.

    After a single step the thread sits in a ptrace stop with ``TF`` still set;
    ``PTRACE_DETACH`` clears it, but if the tracer dies first (``SIGKILL``) the
    kernel detaches *without* clearing it and the thread dies of ``SIGTRAP``
    on its next instruction.  So each stepped thread is re-stopped at once:
    ``PTRACE_INTERRUPT`` then ``PTRACE_CONT`` — resuming clears the step flag,
    and the pending interrupt traps the thread again (``PTRACE_EVENT_STOP``) on
    its way back to user mode, before it executes an instruction.  Signals
    met on the way (and ``pending``: one the thread is stopped for now) are
    suppressed and re-sent once it is parked (:meth:`LiveTarget.requeue_signals`).

    :returns: True if the thread is stopped again at the same PC.
    """
    sigs = list(pending or [])
    try:
        rip = int.from_bytes(k.get_regs(tid)[16 * 8:17 * 8], "little")
    except MappedTraceError:
        return False
    if k.try_ptrace(k.PTRACE_INTERRUPT, tid) < 0 or k.try_ptrace(k.PTRACE_CONT, tid, 0, 0) < 0:
        return False
    ok = False
    for _ in range(16):
        try:
            r, st = k.waitpid(tid, k.WALL)
        except MappedTraceError:
            live.forget_thread(tid)
            return False
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            live.forget_thread(tid)
            return False
        if not k.WIFSTOPPED(st):
            continue
        if k.EVENT(st) == k.PTRACE_EVENT_STOP:
            ok = True
            break
        sig = k.WSTOPSIG(st)
        if (k.EVENT(st) == 0 and sig
                and not (sig == k.SIGTRAP and k.stop_si_code(tid) == k.TRAP_TRACE)):
            sigs.append(sig)                    # suppressed now, re-sent below (not our own step's trap)
        k.try_ptrace(k.PTRACE_INTERRUPT, tid)
        k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
    live.requeue_signals(tid, sigs)
    if not ok:
        return False
    try:
        return int.from_bytes(k.get_regs(tid)[16 * 8:17 * 8], "little") == rip
    except MappedTraceError:
        return False


def _wait_step(live, tid: int) -> int | None:
    """Wait for the end of one single step; None if the thread is gone or stuck."""
    deadline = time.perf_counter_ns() + STEP_TIMEOUT_NS
    interrupted = False
    for spin in range(1_000_000):
        r, st = k.waitpid(tid, k.WALL | k.WNOHANG)
        if r == tid:
            if k.WIFEXITED(st) or k.WIFSIGNALED(st):
                live.forget_thread(tid)
                return None
            if k.WIFSTOPPED(st):
                return None if interrupted else st
            continue
        if time.perf_counter_ns() > deadline:
            if interrupted:
                return None
            # the step blocks (e.g. a page fault served by userfaultfd): stop it
            k.try_ptrace(k.PTRACE_INTERRUPT, tid)
            interrupted = True
            deadline = time.perf_counter_ns() + STEP_TIMEOUT_NS
        elif spin > 100:
            time.sleep(0.0001)
    return None


#: bounds per thread when settling through a debug server: each step is a round trip
REMOTE_MAX_NS = 2_000_000_000
#: seconds one remote step may take before the link counts as failed
REMOTE_STEP_TIMEOUT = 5.0
#: bound on signals handed back while settling one thread remotely
_MAX_HANDED_BACK = 16


def settle_remote(rt, maps=None, *, max_steps: int | None = None, max_ns: int | None = None) -> None:
    """Settle the threads of a :class:`~mappedtrace.target.remote.RemoteTarget` at map
    points, by single steps through its server (``vCont;s:TID``: the trap flag, no
    breakpoint, no byte written; the other threads stay stopped).

    The rules of :func:`settle_threads` hold: a thread inside a system call
    (``orig_rax``; lldb-server has no such register, it comes from
    ``/proc/PID/task/TID/syscall``) or at a ``syscall`` instruction is not
    stepped.  A signal that arrives for the thread being stepped ends its walk
    (unsettled) and is handed to it at once with a step-with-signal
    (``vCont;S``), so none is lost: the thread then sits at the first
    instruction of its handler.  Unlike locally, whether the process was in a
    group stop before the server attached cannot be known here.  Each step
    costs a round trip: the time bound per thread is :data:`REMOTE_MAX_NS`.

    :raises RemoteError: the link failed or the process exited while stepping
    """
    from .gdbremote import RemoteError
    max_steps = MAX_STEPS if max_steps is None else max_steps
    max_ns = REMOTE_MAX_NS if max_ns is None else max_ns
    if maps is None:
        try:
            maps = load_maps(rt.exe)
        except MappedTraceError as e:
            rt.warnings.append(f"maps of {rt.exe} not used for settling: {e.message}")
    try:
        bias = load_bias(rt) if maps is not None else 0
    except MappedTraceError as e:
        rt.warnings.append(f"settling skipped: {e.message}")
        maps, bias = None, 0
    cls = _Classifier(rt, maps, bias)
    rip = rt._by_name.get("rip")
    rip_key = f"{rip.regnum:02x}" if rip is not None else None
    t_all = time.perf_counter_ns()
    stepped = False
    for t in rt.threads:
        where = cls.classify(t.pc)
        if where == "record":
            t.settle, t.settle_steps = SETTLED, 0
        elif where == "other":
            t.settle, t.settle_steps = UNINSTRUMENTED, 0
        elif t.regs["orig_rax"] != _NO_SYSCALL or max_steps <= 0:
            t.settle, t.settle_steps = UNSETTLED, 0
        else:
            t.settle, t.settle_steps = _step_remote(rt, t, cls, rip_key, max_steps, max_ns, RemoteError)
            stepped = stepped or t.settle_steps > 0
    rt.meta["settle_ns"] = time.perf_counter_ns() - t_all
    if stepped:
        states = {t.tid: (t.settle, t.settle_steps) for t in rt.threads}
        rt._blocks.clear()
        rt._load_threads()
        for t in rt.threads:
            t.settle, t.settle_steps = states.get(t.tid, (UNSETTLED, 0))


def _step_remote(rt, t: ThreadState, cls: _Classifier, rip_key: str | None, max_steps: int, max_ns: int,
                 RemoteError) -> tuple[str, int]:
    c, tid = rt.conn, t.tid

    def step() -> int | None:
        st = c.step(tid, rt.pid, timeout=REMOTE_STEP_TIMEOUT)
        ours = True
        for _ in range(_MAX_HANDED_BACK):
            if st.signal < 0:
                raise RemoteError(f"{rt.address}: process {rt.pid} exited while thread {tid} was single-stepped")
            if st.signal == k.SIGTRAP:
                if st.tid not in (None, tid):
                    ours = False        # not our step (never seen): end the walk, hand nothing
                break
            # a signal arrived: hand it to its thread now (one step into the handler)
            st = c.step(st.tid or tid, rt.pid, signal=st.signal, timeout=REMOTE_STEP_TIMEOUT)
            ours = False
        else:
            raise RemoteError(f"{rt.address}: more than {_MAX_HANDED_BACK} signals while stepping thread {tid}")
        if not ours:
            return None
        value = st.fields.get(rip_key) if rip_key else None
        if value is not None and len(value) == 16:
            return int.from_bytes(bytes.fromhex(value), "little")
        raw = c.registers([tid], rt.pid)[0]
        r = rt._by_name["rip"]
        return int.from_bytes(raw[r.offset:r.offset + 8], "little")

    return _walk(cls, t.pc, max_steps, max_ns, step)
