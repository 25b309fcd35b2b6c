"""A live process stopped with ptrace (SEIZE + INTERRUPT every thread).

The ptrace backend (DESIGN step 1): stop all threads — also threads created
or exiting while we stop them (``/proc/PID/task`` is re-read until no new
thread appears) —, read their general, FP (``user_fpregs_struct``) and
``NT_X86_XSTATE`` registers (``fs_base`` is in the general set), the
mappings and auxv, read memory with ``process_vm_readv`` (``/proc/PID/mem``
as fallback), and detach so the process runs on exactly as before:

* a signal that arrived while we stopped a thread leaves that thread parked
  in its signal-delivery stop and is handed back, siginfo intact, on detach;
* a process that was in group-stop (state T) stays stopped: SEIZE sends no
  SIGSTOP, and the kernel re-enters the group stop on detach;
* if the tracer dies, the kernel detaches the threads itself.

Nothing is ever written into the target's memory, but for the fork
capture's signal frame below one thread's stack pointer (put back after the
fork: :func:`.capture.inject_clone`).  Settling (:mod:`.settle`) and the
fork capture resume threads briefly; they use :meth:`LiveTarget.can_resume` and
:meth:`LiveTarget.requeue_signals` to keep signal delivery exact.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from . import _kernel as k
from .base import Mapping, Target, ThreadState
from ..errors import MappedTraceError, NoSuchProcess, PermissionProblem, TargetFault


@dataclass
class ThreadSnapshot(ThreadState):
    """A :class:`ThreadState` that also keeps the ``NT_X86_XSTATE`` (XSAVE) area.

    ``xstate_layout`` empty: the area is as the kernel gave it (this CPU's
    layout: a live thread, which gets it back as it was); else the records of
    an ``NT_X86_XSAVE_LAYOUT`` note (component, size, offset) that describe it
    (a thread read from a core, Intel's standard layout); see
    :mod:`mappedtrace.target.xsave`."""

    xstate: bytes | None = None
    xstate_layout: list[tuple[int, int, int]] = field(default_factory=list)


def process_state(pid: int) -> str:
    """The one-letter state of ``/proc/PID/stat`` ("R", "S", "T", "t", "Z"…), or "" if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""

_PF_KTHREAD = 0x00200000     # task flag in /proc/PID/stat field 9 (include/linux/sched.h)
#: bound on re-reading /proc/PID/task while threads keep appearing
MAX_SEIZE_ROUNDS = 64
#: largest single process_vm_readv of read_into
_READ_STEP = 1 << 30


def parse_maps(text: str) -> list[Mapping]:
    """Parse ``/proc/PID/maps``."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = parts[0].split("-")
        out.append(Mapping(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                           parts[5].strip() if len(parts) > 5 else "", int(parts[4])))
    return out


def check_pid(pid: int) -> None:
    """Raise NoSuchProcess for a PID that does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        raise NoSuchProcess(f"no process with PID {pid}", hint="check the PID (ps -e)") from None
    except PermissionError:
        raise PermissionProblem(f"cannot read /proc/{pid}/stat") from None
    head, tail = stat.rsplit(")", 1)
    fields = tail.split()
    state = fields[0]
    if len(fields) > 6 and int(fields[6]) & _PF_KTHREAD:
        raise MappedTraceError(f"process {pid} ({head.split('(', 1)[-1]}) is a kernel thread: "
                               "it has no user memory to trace")
    if pid == os.getpid():
        raise MappedTraceError(f"process {pid} is this tracer itself", hint="trace another process")
    if state in ("Z", "X"):
        raise NoSuchProcess(f"process {pid} is a zombie (it has exited; its parent has not reaped it)",
                            hint="a zombie has no memory left to trace")


def anon_file_ranges(pid: int) -> set[tuple[int, int]]:
    """File-backed mappings of ``pid`` that hold anonymous (copy-on-write) pages.

    These differ from their files (RELRO after relocation, written private
    mappings), so a capture copies them like anonymous memory — the kernel's
    core dumper does the same (a VMA with an ``anon_vma`` counts as anonymous).
    Read from ``/proc/PID/smaps``; an empty set if it cannot be read.
    """
    try:
        with open(f"/proc/{pid}/smaps") as f:
            return parse_anon_file_ranges(f)
    except OSError:
        return set()


def parse_anon_file_ranges(lines) -> set[tuple[int, int]]:
    """:func:`anon_file_ranges` from the lines of a ``/proc/PID/smaps`` text (an empty
    set if it does not parse)."""
    out: set[tuple[int, int]] = set()
    cur = None
    try:
        for line in lines:
            if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                lo, hi = line.split(" ", 1)[0].split("-")
                parts = line.split(None, 5)
                cur = (int(lo, 16), int(hi, 16)) if len(parts) > 5 and parts[5].startswith("/") else None
            elif cur is not None and line.startswith("Anonymous:"):
                if int(line.split()[1]) > 0:
                    out.add(cur)
                cur = None
    except ValueError:
        return set()
    return out


def proc_meta(pid: int) -> dict:
    """ppid, pgrp, sid, uid, gid, comm and cmdline of ``pid`` (what a core's PRPSINFO holds)."""
    def text(name: str) -> str:
        try:
            with open(f"/proc/{pid}/{name}") as f:
                return f.read()
        except OSError:
            return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read(4096)
    except OSError:
        cmdline = b""
    return parse_proc_meta(text("stat"), text("status"), cmdline)


def parse_proc_meta(stat: str, status: str, cmdline: bytes) -> dict:
    """:func:`proc_meta` from the texts of ``/proc/PID/{stat,status,cmdline}``
    (read here or, for a remote target, through the debug server)."""
    out: dict = {}
    try:
        head, tail = stat.rsplit(")", 1)
        out["comm"] = head.split("(", 1)[1]
        fields = tail.split()
        out["ppid"], out["pgrp"], out["sid"] = int(fields[1]), int(fields[2]), int(fields[3])
        for line in status.splitlines():
            if line.startswith(("Uid:", "Gid:")):
                out["uid" if line[0] == "U" else "gid"] = int(line.split()[1])
        out["cmdline"] = cmdline[:4096].rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except (ValueError, IndexError):
        pass
    return out


class LiveTarget(Target):
    """All threads of ``pid`` stopped under ptrace.  Use as a context manager."""

    def __init__(self, pid: int, *, seized: bool = False):
        super().__init__(pid=pid)
        self._stopped: dict[int, int] = {}      # tid → signal to re-inject on detach
        self._requeued: set[int] = set()        # threads with re-sent signals pending
        self._mem = None
        self.meta["backend"] = "ptrace"
        #: perf_counter_ns() when the first thread was stopped (the pause starts)
        self.stop_t0 = time.perf_counter_ns()
        #: perf_counter_ns() when the last thread was released (0 while stopped)
        self.resume_t1 = 0
        #: the process was in group-stop (state T) before we came: it stays stopped
        self.was_stopped = False
        if not seized:
            check_pid(pid)
            self.was_stopped = process_state(pid) == "T"
            self.stop_t0 = time.perf_counter_ns()
            self._stop_all()
            self.meta["stop_ns"] = time.perf_counter_ns() - self.stop_t0
        self.refresh()

    @property
    def stopped_tids(self) -> list[int]:
        """Threads currently held in a ptrace stop."""
        return sorted(self._stopped)

    def can_resume(self, tid: int) -> bool:
        """Whether we may resume ``tid`` (to single-step it or borrow it for a fork).

        Not a thread parked in a signal-delivery stop (its signal is handed
        back on detach) nor one whose suppressed signals were re-sent to it
        (resuming it would meet them again).
        """
        return tid in self._stopped and not self._stopped[tid] and tid not in self._requeued

    def requeue_signals(self, tid: int, sigs: list[int]) -> None:
        """Re-send signals that were suppressed while we drove ``tid``.

        Call only once the thread is parked in a ``PTRACE_EVENT_STOP``: the
        signals stay pending and are delivered after detach.  A re-sent
        signal carries a ``tgkill`` siginfo (si_code SI_TKILL, our PID) instead
        of its original one: a known imprecision for signals that arrive in
        the few milliseconds a thread is being single-stepped.
        """
        for sig in dict.fromkeys(sigs):
            if sig:
                k.tgkill(self.pid, tid, sig)
                self._requeued.add(tid)

    def forget_thread(self, tid: int) -> None:
        """A thread exited while stopped (seen by waitpid): stop tracking it."""
        self._stopped.pop(tid, None)

    # --- stopping ---------------------------------------------------------
    def _tids(self) -> list[int]:
        try:
            return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))
        except FileNotFoundError:
            raise NoSuchProcess(f"process {self.pid} exited") from None

    def _stop_all(self) -> None:
        try:
            for _ in range(MAX_SEIZE_ROUNDS):
                new = [t for t in self._tids() if t not in self._stopped]
                if not new:
                    return
                new.sort(key=lambda t: t != self.pid)       # the leader first
                for tid in new:
                    r = k.try_ptrace(k.PTRACE_SEIZE, tid, 0, 0)
                    if r == -1 and tid != self.pid and self.pid in self._stopped:
                        # permission is per process: the leader was seized, so EPERM
                        # here means this thread is exiting (ptrace_attach refuses those)
                        continue
                    if r == -1:  # EPERM
                        raise PermissionProblem(
                            f"not permitted to trace process {self.pid}",
                            hint="run as root or with CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0")
                    if r < 0:   # ESRCH: the thread exited meanwhile
                        continue
                    k.try_ptrace(k.PTRACE_INTERRUPT, tid)
                    self._stopped[tid] = 0
                for tid in new:
                    if tid in self._stopped:
                        self._wait_stop(tid)
            raise NoSuchProcess(f"process {self.pid} keeps creating threads; gave up after {MAX_SEIZE_ROUNDS} rounds")
        except BaseException:
            self.close()
            raise

    def _wait_stop(self, tid: int) -> None:
        """Wait until ``tid`` is in a ptrace stop; remember a signal it was about to get."""
        for _ in range(1000):
            try:
                _, st = k.waitpid(tid, k.WALL)
            except NoSuchProcess:
                self._stopped.pop(tid, None)
                return
            if k.WIFEXITED(st) or k.WIFSIGNALED(st):
                self._stopped.pop(tid, None)
                return
            if not k.WIFSTOPPED(st):
                continue
            sig, ev = k.WSTOPSIG(st), k.EVENT(st)
            if ev == k.PTRACE_EVENT_STOP or ev == k.PTRACE_EVENT_CLONE:
                return
            if ev == 0 and sig not in (0,):
                # Signal-delivery stop: leave the thread parked in it and hand the
                # signal back on detach (the one stop where ptrace injects a signal
                # with its siginfo intact; in a PTRACE_EVENT_STOP it would be lost).
                self._stopped[tid] = sig
                return
            return

    # --- reading ----------------------------------------------------------
    def refresh(self) -> None:
        """(Re)read threads' registers, the mappings and auxv."""
        pid = self.pid
        try:
            self.mappings = parse_maps(open(f"/proc/{pid}/maps").read())
            self.auxv = open(f"/proc/{pid}/auxv", "rb").read()
            self.exe = os.readlink(f"/proc/{pid}/exe")
            self.meta.update(proc_meta(pid))
        except FileNotFoundError:
            raise NoSuchProcess(f"process {pid} exited") from None
        except PermissionError:
            raise PermissionProblem(f"cannot read /proc/{pid}") from None
        old = {t.tid: t for t in self.threads}
        threads = []
        for tid in sorted(self._stopped) if self._stopped else [pid]:
            try:
                regs = ThreadState.unpack_regs(k.get_regs(tid))
                fp = k.get_fpregs(tid)
                xs = k.get_xstate(tid)
            except NoSuchProcess:
                self.warnings.append(f"thread {tid} exited during the stop")
                self._stopped.pop(tid, None)
                continue
            try:
                name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError:
                name = ""
            # the kernel's own layout: what rt_sigreturn and PTRACE_SETREGSET take
            # back; write_core moves it to Intel's layout for gdb
            t = ThreadSnapshot(tid, regs, fp, name=name, xstate=xs)
            if tid in old:      # keep the settle outcome across refreshes
                t.settle, t.settle_steps = old[tid].settle, old[tid].settle_steps
            threads.append(t)
        self.threads = threads

    def _read(self, addr: int, size: int) -> bytes:
        try:
            return k.vm_read(self.pid, addr, size)
        except TargetFault:
            pass
        # fallback: /proc/PID/mem (works where process_vm_readv is refused)
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

    def _read_into(self, addr: int, view: memoryview) -> None:
        for pos in range(0, len(view), _READ_STEP):     # the kernel moves < 2 GiB per call
            part = view[pos:pos + _READ_STEP]
            if k.vm_read_into(self.pid, addr + pos, len(part), part) != len(part):
                part[:] = self._read(addr + pos, len(part))     # /proc/PID/mem, or TargetFault

    # --- releasing --------------------------------------------------------
    def close(self) -> None:
        """Detach every thread, handing back any signal that arrived meanwhile.

        A process that was in group-stop (state T) before we came stays
        stopped: the kernel re-enters group-stop on detach when the group stop
        is still in effect (``__ptrace_unlink``), and we never resume it with
        ``PTRACE_CONT`` ourselves.
        """
        for tid, sig in list(self._stopped.items()):
            k.try_ptrace(k.PTRACE_DETACH, tid, 0, sig)
        if self._stopped:
            self.resume_t1 = time.perf_counter_ns()
            self.meta["pause_ns"] = self.resume_t1 - self.stop_t0
        self._stopped.clear()
        self._requeued.clear()
        if self._mem is not None:
            self._mem.close()
            self._mem = None


def attach(pid: int) -> LiveTarget:
    """Stop every thread of ``pid`` and return a :class:`LiveTarget` (a context manager)."""
    return LiveTarget(pid)
