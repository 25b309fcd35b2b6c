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
from dataclasses import dataclass
from typing import Callable

from . import _kernel as k
from .base import Target, ThreadState
from .live import parse_maps
from ..errors import MappedTraceError, NoSuchProcess, TargetFault

#: bound on stops handled while the program runs (signals, events)
MAX_STOPS = 10_000_000


class ExitTarget(Target):
    """The traced child, stopped at its exit event (one thread: the leader)."""

    def __init__(self, pid: int, exit_status: int):
        super().__init__(pid=pid)
        self.meta.update(backend="ptrace", mode="exit", exit_status=exit_status)
        self.mappings = parse_maps(open(f"/proc/{pid}/maps").read())
        self.auxv = open(f"/proc/{pid}/auxv", "rb").read()
        self.exe = os.readlink(f"/proc/{pid}/exe")
        regs = ThreadState.unpack_regs(k.get_regs(pid))
        self.threads = [ThreadState(pid, regs, k.get_fpregs(pid), settle="uninstrumented",
                                    name=_comm(pid, pid))]
        self._mem = None

    def _read(self, addr: int, size: int) -> bytes:
        try:
            return k.vm_read(self.pid, addr, size)
        except TargetFault:
            pass
        try:
            if self._mem is None:
                self._mem = open(f"/proc/{self.pid}/mem", "rb", buffering=0)
            self._mem.seek(addr)
            data = self._mem.read(size)
        except (OSError, OverflowError, ValueError):
            raise TargetFault(addr, size) from None
        if data is None or len(data) != size:
            raise TargetFault(addr, size)
        return data

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


def run_to_exit(argv: list[str], at_exit: Callable[[ExitTarget], None],
                env: dict[str, str] | None = None) -> RunResult:
    """Run ``argv`` traced; call ``at_exit(target)`` when it exits with memory intact.

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
    try:
        _, st = k.waitpid(pid, 0)
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            msg = os.read(r, 600).decode(errors="replace")
            raise MappedTraceError(f"cannot run {argv[0]}: {msg or 'it exited before exec'}",
                                   hint="check the program path and that it is executable")
        os.close(r)
        r = -1
        # stopped at exec's SIGTRAP
        k.ptrace(k.PTRACE_SETOPTIONS, pid, 0, k.PTRACE_O_TRACEEXIT | k.PTRACE_O_TRACEEXEC)
        k.ptrace(k.PTRACE_CONT, pid, 0, 0)
        for _ in range(MAX_STOPS):
            _, st = k.waitpid(pid, 0)
            if k.WIFEXITED(st):
                return RunResult(k.WEXITSTATUS(st), analysed, error=error)
            if k.WIFSIGNALED(st):
                return RunResult(128 + k.WTERMSIG(st), analysed, k.WTERMSIG(st), error)
            if not k.WIFSTOPPED(st):
                continue
            sig, ev = k.WSTOPSIG(st), k.EVENT(st)
            if ev == k.PTRACE_EVENT_EXIT:
                status = k.ffi.new("unsigned long *")
                k.ptrace(k.PTRACE_GETEVENTMSG, pid, 0, status)
                code = int(status[0])
                # analyse only a normal exit (LeakSanitizer does not report after a crash)
                if not analysed and (code & 0x7F) == 0:
                    analysed = True
                    try:
                        t = ExitTarget(pid, code >> 8)
                        try:
                            at_exit(t)
                        finally:
                            t.close()
                    except MappedTraceError as e:   # report it after the program has finished
                        error = e
                k.try_ptrace(k.PTRACE_CONT, pid, 0, 0)
                continue
            if ev:
                k.try_ptrace(k.PTRACE_CONT, pid, 0, 0)
                continue
            # signal-delivery stop: pass the signal on unchanged
            k.try_ptrace(k.PTRACE_CONT, pid, 0, sig)
        raise MappedTraceError(f"gave up after {MAX_STOPS} stops of {argv[0]}")
    except BaseException:
        # leave no half-traced child behind: detach (it runs on) — or kill on Ctrl-C
        if k.try_ptrace(k.PTRACE_DETACH, pid, 0, 0) < 0:
            pass
        raise
    finally:
        if r >= 0:
            os.close(r)
