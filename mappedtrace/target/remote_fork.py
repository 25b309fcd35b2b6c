"""A copy-on-write fork of a process on another machine, through gdbserver.

The local fork capture (:func:`mappedtrace.target.capture.inject_clone`) driven
through the gdb-remote protocol: while every thread is stopped, one thread is
*armed* (a signal frame holding its own state written below its stack, ``M``),
its registers are set to run ``clone(CLONE_PARENT | SIGCHLD)`` at a ``syscall;
ret`` of libc (``G``), and it alone is resumed (``vCont;c:pPID.TID``) with the
server catching ``clone`` (``QCatchSyscalls``).  The server reports the fork
(``fork-events``: ``T05fork:pCHILD.CHILD``) and holds the child stopped; at the
clone's return the thread gets its registers and stack bytes back, and the
parent is detached (``D;PID``): the pause ends there.  The child is then read
(``Hg pCHILD.CHILD``, ``m``) and killed (``vKill``).  No byte of the child is
written: the frame's bytes in the copy are replaced by the saved ones here.

Needs ``multiprocess``, ``fork-events`` and ``QCatchSyscalls`` (gdbserver 13
grants all three; lldb-server 22 none of the first two: it stays stop-copy and
the report says why).  ``SIGCHLD`` is the child's exit signal because the
kernel reports a clone with any other one as ``PTRACE_EVENT_CLONE``, which
gdbserver takes for a new thread of the target (and would detach with it); with
``CLONE_PARENT`` that signal goes to the target's parent, not to the target.
Where ``CLONE_PARENT`` is refused (the target is a child of init) no fork is
made: the target itself would get the ``SIGCHLD``.

What happens to the target if the tracer dies at each step (its connection
closes; gdbserver started with ``--once`` then detaches the processes it
attached and kills or detaches the rest: tried, see
``benchmarks/remote/RESULTS.md``; without ``--once`` gdbserver keeps every
process stopped and waits for a new connection, in stop-copy too):

1. frame written below the red zone, registers untouched: stack bytes the ABI
   leaves free changed; the thread resumes as it was.
2. armed registers written: a detached thread runs the clone untraced, its
   ``ret`` leads into ``rt_sigreturn`` and the frame puts back its registers,
   FPU state and signal mask (an interrupted call is issued again, as the
   kernel's restart would); the child returns into ``exit``.
3. resumed, at the syscall or fork stops: as 2 (the child, held by the
   server, is killed or detached; detached it returns into ``exit``).
4. registers restored, the frame's bytes not yet: the thread runs on exactly;
   stack bytes below its red zone differ.
5. parent detached, child being read: the child is killed or returns into ``exit``.

What is not as locally: signals cannot be blocked through the protocol
(``PTRACE_SETSIGMASK`` has no packet).  A signal that reaches the borrowed
thread is reported by the server before any handler runs: the fork is then
abandoned at that stop, the thread's own registers are put back there and the
signal is delivered by the server at the detach (its last stop was that
signal), and the copy is taken stopped instead.  A tracer that dies while the
thread is armed leaves it unblocked: a handler then runs on the armed state
and returns to it (harmless, unless it inspects the interrupted context).
The frame holds the FXSAVE image only (the server's ``g`` has no XSAVE area):
a thread put back by ``rt_sigreturn`` after the tracer's death gets its x87/SSE
state, not the upper halves of its AVX registers (the normal path writes its
registers back through the server and loses nothing the server shows).
A link that goes silent (rather than closing) holds the target until the
server's TCP gives up, as in stop-copy; in fork mode only until the detach.
"""
from __future__ import annotations

import time

from .base import GPR_NAMES
from .capture import (CLONE_PARENT, EINVAL, _build_frame, _resumed_regs, _ERESTART_RESTARTBLOCK,
                      _NO_SYSCALL, fork_refused_by_status, gadgets_in)
from .gdbremote import RemoteError, parse_stop
from ..errors import MappedTraceError, NoSuchProcess
from ..fileio import open_regular

SYS_CLONE = 56
SIGCHLD = 17
#: bound on stops met while the borrowed thread runs its clone
MAX_STOPS = 16


def fork_refused_remote(rt) -> str | None:
    """Why a fork cannot be made through ``rt``'s server (None if it can)."""
    c = rt.conn
    if c.server != "gdbserver":
        return (f"{c.server} grants neither multiprocess nor fork-events, so it could not hold the "
                "child (use gdbserver --once --multi HOST:PORT for a fork on the far side)")
    miss = [f for f in ("multiprocess", "fork-events", "QCatchSyscalls") if c.features.get(f) != "+"]
    if miss:
        return f"the server does not grant {', '.join(miss)}"
    if not c.fork_events:
        return "fork events were not asked for when connecting (attach_remote(..., fork_events=True))"
    return fork_refused_by_status(rt._text(f"/proc/{rt.pid}/status"))


def _pick(rt):
    # as capture._pick_thread: outside a system call first, then a plain restart, the main thread
    return min(rt.threads, key=lambda t: (t.regs["orig_rax"] != _NO_SYSCALL,
                                          t.regs["rax"] == _ERESTART_RESTARTBLOCK, t.tid != rt.pid))


def _file_code(m) -> bytes | None:
    try:
        with open_regular(m.path) as f:
            f.seek(m.offset)
            return f.read(min(m.size, 8 << 20))
    except (OSError, MappedTraceError):
        return None


def _sigmask(rt, tid: int) -> int:
    text = rt._text(f"/proc/{rt.pid}/task/{tid}/status")
    for line in text.splitlines()[:200]:
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise MappedTraceError(f"cannot read the signal mask of thread {tid} through the server")


def _pack(rt, raw: bytes, regs: dict[str, int]) -> bytes:
    """``raw`` (a ``g`` reply) with the general registers of ``regs`` written in."""
    out = bytearray(raw)
    for n in GPR_NAMES:
        r = rt._by_name.get(n)
        if r is not None and 0 <= r.offset and r.offset + r.bitsize // 8 <= len(out):
            w = r.bitsize // 8
            out[r.offset:r.offset + w] = (regs[n] & ((1 << (8 * w)) - 1)).to_bytes(w, "little")
    return bytes(out)


def inject_fork(rt) -> tuple[int, object]:
    """Fork the stopped process of ``rt`` through its server and detach the parent.

    :returns: (child PID, the frame whose bytes the child's copy must get back)
    :raises MappedTraceError: no fork was made; the process is still stopped,
        with its own registers (copy it stopped)
    :raises NoSuchProcess: the process exited meanwhile
    """
    c, pid = rt.conn, rt.pid
    t = _pick(rt)
    tid = t.tid
    raw = rt.raw_regs[tid]
    g = gadgets_in(rt.mappings, _file_code, f"process {pid} (its libc file here)")
    frame = _build_frame(rt, t, g, _sigmask(rt, tid))
    restored = _resumed_regs(t.regs)
    restored["orig_rax"] = _NO_SYSCALL      # restarted already: no second restart
    armed = dict(t.regs, rax=SYS_CLONE, orig_rax=_NO_SYSCALL, rip=g.syscall_ret, rsp=frame.addr,
                 rdi=CLONE_PARENT | SIGCHLD, rsi=frame.child_sp, rdx=0, r10=0, r8=0)
    th = c.thread_id(tid, pid)
    child, result, state = 0, None, "own"
    try:
        # one round trip: catch clone, select the thread, write the frame below its red zone
        # (1), then its armed registers (2); the server takes them in this order
        reps = c.pipeline([f"QCatchSyscalls:1;{SYS_CLONE:x}", f"Hg{th}",
                           f"M{frame.addr:x},{len(frame.data):x}:{frame.data.hex()}",
                           b"G" + _pack(rt, raw, armed).hex().encode()])
        if reps[3] == b"OK":
            state = "armed"
        if reps != [b"OK"] * 4:
            raise MappedTraceError(f"the server refused to catch clone or to arm thread {tid} "
                                   f"({', '.join(r[:12].decode('latin-1') for r in reps)})")
        c.pipeline_send(f"vCont;c:{th}".encode())
        for _ in range(MAX_STOPS):
            st = parse_stop(c.wait_stop(f"the injected clone of thread {tid}", c.timeout))
            if st.signal < 0:
                rt._attached = False
                raise NoSuchProcess(f"process {pid} exited during the fork ({st.raw[:12]!r})")
            f = st.fields
            if "fork" in f:
                child = int(f["fork"][1:].partition(".")[0], 16) if f["fork"].startswith("p") \
                    else int(f["fork"], 16)
            elif "syscall_return" in f:
                if not child:       # failed: its errno (read only then, a round trip)
                    r = rt._by_name["rax"]
                    rax = int.from_bytes(c.registers([tid], pid)[0][r.offset:r.offset + 8], "little")
                    result = rax - (1 << 64) if rax >= 1 << 63 else rax
                break
            elif "syscall_entry" not in f:
                # a signal for the borrowed thread, before any handler ran: put the thread's
                # own registers back here; the server delivers the signal at the detach
                c.write_registers(tid, pid, raw)
                state = "own"
                raise MappedTraceError(f"a signal (number {st.signal} in gdb's numbering) reached the borrowed thread "
                                       "during the fork")
            c.pipeline_send(f"vCont;c:{th}".encode())
        else:
            raise MappedTraceError(f"the injected clone did not complete within {MAX_STOPS} stops")
        # one round trip: its own state (4), then its stack bytes, then no more catching
        reps = c.pipeline([f"Hg{th}", b"G" + _pack(rt, raw, restored).hex().encode(),
                           f"M{frame.addr:x},{len(frame.saved):x}:{frame.saved.hex()}", "QCatchSyscalls:0"])
        if reps[1] != b"OK":
            raise RemoteError(f"{rt.address}: writing the registers of thread {tid} back refused ({reps[1][:20]!r})")
        state = "own"
    except BaseException:
        if state == "armed" and not c.broken:
            try:        # stopped somewhere in the clone: its own registers back
                c.write_registers(tid, pid, _pack(rt, raw, restored))
            except RemoteError:
                pass
        if child and not c.broken:
            _kill(c, child)
        if not c.broken:
            try:
                c.write_memory(tid, pid, frame.addr, frame.saved)
                c.request("QCatchSyscalls:0")
            except RemoteError:
                pass
        raise
    if not child:
        why = f"errno {-result}" if result is not None and result < 0 else "no fork event"
        hint = " (the target is a child of init: CLONE_PARENT refused)" if result == -EINVAL else ""
        raise MappedTraceError(f"the injected clone failed in thread {tid} of process {pid} ({why}){hint}")
    return child, frame


def _kill(c, child: int) -> None:
    try:
        c.request(f"vKill;{child:x}")
    except RemoteError:
        pass


def capture_fork_remote(rt):
    """Fork ``rt``'s stopped process (:func:`inject_fork`), detach it (the pause ends),
    copy the memory from the child, kill the child.  Falls back to a stop-copy
    capture, with a warning saying why, where no fork can be made.

    :returns: a :class:`~mappedtrace.target.capture.CapturedTarget` (``meta["mode"]``
        ``"fork"``, ``pause_ns`` from the attach to the parent's detach)
    """
    from .remote import _capture_once
    why = fork_refused_remote(rt)
    child = 0
    if why is None:
        t0 = time.perf_counter_ns()
        try:
            child, frame = inject_fork(rt)
        except NoSuchProcess:
            raise
        except MappedTraceError as e:
            why = e.message
        rt.meta["fork_ns"] = time.perf_counter_ns() - t0
    if why is not None:
        rt.warnings.append(f"fork mode not used ({why}); captured with stop-copy instead")
        ct = _capture_once(rt)
        ct.meta["mode"] = "stop-copy"
        return ct
    c, pid = rt.conn, rt.pid
    try:
        ok = c.detach(pid)
        rt._attached = False
        rt.meta["pause_ns"] = time.perf_counter_ns() - rt.stop_t0
        if not ok:
            raise RemoteError(f"{rt.address}: the server did not detach process {pid}")
        # the server reads the memory of its current thread's process (/proc/LWP/mem)
        if c.request(f"Hg{c.thread_id(child, child)}") != b"OK":
            raise RemoteError(f"{rt.address}: the server does not select the forked child {child}")
        saved_pid = rt.pid
        rt.pid = child      # smaps and the child's own mappings (it lacks MADV_DONTFORK ranges)
        try:
            from .live import parse_maps
            inchild = [(m.start, m.end) for m in parse_maps(rt._text(f"/proc/{child}/maps", required=True))]
            t1 = time.perf_counter_ns()
            ct = _capture_once(rt, within=inchild)
            ct.meta["copy_ns"] = time.perf_counter_ns() - t1
        finally:
            rt.pid = saved_pid
        ct.pid = saved_pid
    finally:
        if not c.broken:
            _kill(c, child)
    _put_back(ct, frame.addr, frame.saved)
    ct.meta.update(mode="fork", child_pid=child, fork_ns=rt.meta["fork_ns"], pause_ns=rt.meta["pause_ns"])
    return ct


def _put_back(ct, addr: int, saved: bytes) -> None:
    """The stack bytes the frame covered, as the thread had them, into the copy."""
    pos = 0
    while pos < len(saved):         # bounded: each round advances or stops
        p = ct.piece_at(addr + pos)
        if p is None or p.data is None:
            return
        n = min(len(saved) - pos, p.end - (addr + pos))
        p.data[addr + pos - p.start:addr + pos - p.start + n] = saved[pos:pos + n]
        pos += n
