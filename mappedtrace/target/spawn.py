"""Run a program under ptrace and stop it at exit, memory intact (``mappedtrace run``).

The child asks to be traced (PTRACE_TRACEME) and execs the program; the
tracer sets PTRACE_O_TRACEEXIT and lets it run, passing every signal through
unchanged.  When the thread-group leader reaches its exit (after ``main``
returned and ``atexit`` handlers ran, or ``exit``/``exit_group`` was called —
the point where LeakSanitizer checks), the process is stopped with its memory
still mapped: that is the moment :func:`run_to_exit` hands to the caller as a
:class:`ExitTarget`.  Afterwards the child is let go and its exit status is
returned.  No EXITKILL: if the tracer dies, the program finishes untraced.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

from . import _kernel as k
from .base import Target, ThreadState
from .live import LiveTarget, parse_maps
from ..errors import MappedTraceError, NoSuchProcess

#: bound on stops handled while the program runs (signals, events)
MAX_STOPS = 10_000_000


class ExitTarget(Target):
    """The traced child at its exit: every thread stopped in its exit event.

    ``threads`` holds each thread's user registers as they were when the exit
    reached it (the thread that called ``exit_group`` inside that syscall, the
    others where the group exit interrupted them).
    """

    def __init__(self, pid: int, exit_status: int, tids: list[int]):
        super().__init__(pid=pid)
        self.meta.update(backend="ptrace", mode="exit", exit_status=exit_status)
        self.mappings = parse_maps(open(f"/proc/{pid}/maps").read())
        self.auxv = open(f"/proc/{pid}/auxv", "rb").read()
        self.exe = os.readlink(f"/proc/{pid}/exe")
        for tid in tids:
            try:
                regs = ThreadState.unpack_regs(k.get_regs(tid))
                fp = k.get_fpregs(tid)
            except (NoSuchProcess, MappedTraceError):
                self.warnings.append(f"thread {tid}: registers unreadable at exit")
                continue
            self.threads.append(ThreadState(tid, regs, fp, settle="not-settled", name=_comm(pid, tid)))
        self._mem = None

    # memory is read exactly as from a live process (process_vm_readv, /proc/PID/mem fallback)
    _read = LiveTarget._read

    def close(self) -> None:
        if self._mem is not None:
            self._mem.close()
            self._mem = None


def _comm(pid: int, tid: int) -> str:
    try:
        return open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    except OSError:
        return ""


@dataclass
class RunResult:
    exit_code: int          # the program's exit code, or 128 + signal number
    analysed: bool          # the exit hook ran
    signal: int = 0
    error: BaseException | None = None   # what the exit hook raised, if anything


SYS_exit_group = 231
#: how long to wait for the other threads' exit events after a group exit
GROUP_EXIT_WAIT_S = 5.0


def run_to_exit(argv: list[str], at_exit: Callable[[ExitTarget], None],
                env: dict[str, str] | None = None) -> RunResult:
    """Run ``argv`` traced; call ``at_exit(target)`` at its group exit, memory intact.

    Every thread is traced (PTRACE_O_TRACECLONE) so that at ``exit_group`` all
    of them are held in their exit event and their registers are known, as
    LeakSanitizer stops the world at exit.  Signals pass through unchanged.

    :returns: the program's exit status as a :class:`RunResult`.
    :raises MappedTraceError: when the program cannot be started.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            k.libc.ptrace(k.PTRACE_TRACEME, 0, k.ffi.NULL, k.ffi.NULL)
            os.set_inheritable(w, False)
            os.execvpe(argv[0], argv, env if env is not None else os.environ)
        except BaseException as e:  # exec failed: tell the parent
            try:
                os.write(w, f"{type(e).__name__}: {e}".encode()[:500])
            finally:
                os._exit(127)
    os.close(w)
    analysed = False
    error: BaseException | None = None
    live: set[int] = {pid}          # traced threads not yet gone
    held: dict[int, int] = {}       # tid → exit status, threads held in their exit event
    fresh: set[int] = set()         # new threads whose first stop is still to come
    group_exit = False
    group_deadline = 0.0
    try:
        _, st = k.waitpid(pid, 0)
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            msg = os.read(r, 600).decode(errors="replace")
            raise MappedTraceError(f"cannot run {argv[0]}: {msg or 'it exited before exec'}",
                                   hint="check the program path and that it is executable")
        os.close(r)
        r = -1
        # stopped at exec's SIGTRAP
        k.ptrace(k.PTRACE_SETOPTIONS, pid, 0,
                 k.PTRACE_O_TRACEEXIT | k.PTRACE_O_TRACEEXEC | k.PTRACE_O_TRACECLONE)
        k.ptrace(k.PTRACE_CONT, pid, 0, 0)
        for _ in range(MAX_STOPS):
            if group_exit and not analysed and (live <= set(held) or time.monotonic() > group_deadline):
                analysed = True
                try:
                    t = ExitTarget(pid, held.get(pid, 0) >> 8, sorted(held))
                    try:
                        at_exit(t)
                    finally:
                        t.close()
                except Exception as e:   # report it after the program has finished
                    error = e
                for tid in list(held):
                    k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
                held.clear()
            opts = k.WALL | (k.WNOHANG if group_exit and not analysed else 0)
            try:
                tid, st = k.waitpid(-1, opts)
            except NoSuchProcess:   # ECHILD: nothing left
                break
            if tid == 0:
                time.sleep(0.001)
                continue
            if k.WIFEXITED(st) or k.WIFSIGNALED(st):
                live.discard(tid)
                held.pop(tid, None)
                if tid == pid:
                    code = k.WEXITSTATUS(st) if k.WIFEXITED(st) else 128 + k.WTERMSIG(st)
                    return RunResult(code, analysed, k.WTERMSIG(st) if k.WIFSIGNALED(st) else 0, error)
                continue
            if not k.WIFSTOPPED(st):
                continue
            sig, ev = k.WSTOPSIG(st), k.EVENT(st)
            live.add(tid)
            if ev == k.PTRACE_EVENT_EXIT:
                status = k.ffi.new("unsigned long *")
                k.try_ptrace(k.PTRACE_GETEVENTMSG, tid, 0, status)
                code = int(status[0])
                if analysed:
                    k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
                    continue
                try:
                    orig_rax = ThreadState.unpack_regs(k.get_regs(tid))["orig_rax"]
                except MappedTraceError:
                    orig_rax = -1
                if orig_rax == SYS_exit_group and (code & 0x7F) == 0 and not group_exit:
                    group_exit = True
                    group_deadline = time.monotonic() + GROUP_EXIT_WAIT_S
                if group_exit:
                    held[tid] = code        # hold it until every thread has arrived
                else:
                    k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)   # one thread ending (pthread_exit)
                continue
            if ev == k.PTRACE_EVENT_CLONE:
                msg = k.ffi.new("unsigned long *")
                k.try_ptrace(k.PTRACE_GETEVENTMSG, tid, 0, msg)
                fresh.add(int(msg[0]))
                live.add(int(msg[0]))
                k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
                continue
            if ev:
                k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
                continue
            if tid in fresh and sig == signal.SIGSTOP:
                fresh.discard(tid)          # the auto-attach stop of a new thread
                k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
                continue
            # signal-delivery stop: pass the signal on unchanged
            k.try_ptrace(k.PTRACE_CONT, tid, 0, sig)
        raise MappedTraceError(f"gave up after {MAX_STOPS} stops of {argv[0]}")
    except BaseException:
        # leave no half-traced child behind: detach every thread (the program runs on)
        for tid in live:
            k.try_ptrace(k.PTRACE_DETACH, tid, 0, 0)
        raise
    finally:
        if r >= 0:
            os.close(r)
