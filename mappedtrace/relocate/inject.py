"""Call the program's own allocator in a borrowed thread, and keep a process in group-stop.

Why inject rather than a helper in ``runtime/``: the relocator must work on
any process built with the maps, not only those started with a preloaded
helper, and a moved object must stay the allocator's own chunk so that
``free``, ``realloc`` and ``malloc_usable_size`` keep working.  Calling
glibc's ``posix_memalign``/``free`` in the target gives exactly that, at
the cost of a few ptrace round trips per call.

The call is made kill-safe the way the fork injection is
(:func:`mappedtrace.target.capture.inject_clone`): a signal frame holding the
thread's registers, FPU state and signal mask is written below its stack
(below the red zone), and the function is entered with the frame's
``pretcode`` (``__restore_rt``) as its return address.  Whatever happens to
the tracer, the function returns into ``rt_sigreturn`` and the thread gets
its own state back.  ``posix_memalign`` writes its result to memory (a word of
the frame's unused siginfo), not only to ``rax``, which ``__restore_rt``
overwrites: so a recovery can still learn what was allocated.  Normally the
tracer stops the thread at the ``rt_sigreturn`` syscall, lets it run, and puts
the exact saved registers back (an interrupted system call keeps its restart).
"""
from __future__ import annotations

import signal
import struct
from dataclasses import dataclass

from ..errors import MappedTraceError, NoSuchProcess
from ..formats import elf
from ..target import _kernel as k
from ..target import settle as _settle
from ..target.base import ThreadState
from ..target.capture import Gadgets, _build_frame, _NO_SYSCALL, find_gadgets
from ..target.live import LiveTarget

SYS_RT_SIGRETURN = 15
SYS_FUTEX = 202
#: bound on system-call stops of one injected call (brk, mmap, munmap, madvise…)
MAX_CALL_STOPS = 4096
#: glibc functions inside which a thread may hold an arena lock or be half-way
#: through its tcache: no injected allocator call while a thread is in one
ALLOCATOR_FUNCTIONS = frozenset({
    "malloc", "__libc_malloc", "__malloc", "free", "__libc_free", "__free", "cfree", "realloc",
    "__libc_realloc", "calloc", "__libc_calloc", "memalign", "__libc_memalign", "_mid_memalign",
    "posix_memalign", "__posix_memalign", "aligned_alloc", "valloc", "pvalloc", "malloc_trim",
    "_int_malloc", "_int_free", "_int_realloc", "_int_memalign", "malloc_consolidate", "sysmalloc",
    "tcache_init", "arena_get2", "get_free_list", "reused_arena", "_int_new_arena", "new_heap",
    "systrim", "heap_trim", "munmap_chunk", "mremap_chunk", "malloc_printerr", "__malloc_arena_thread_freeres",
    "tcache_thread_shutdown", "__libc_thread_freeres", "_IO_un_link", "fork", "__libc_fork", "_Fork",
})


@dataclass
class Allocator:
    """Addresses of glibc's entry points in the target."""

    posix_memalign: int
    free: int
    gadgets: Gadgets
    #: ``malloc_trim`` (for ``mappedtrace compact``; 0 when libc does not export it)
    malloc_trim: int = 0

    @classmethod
    def find(cls, live: LiveTarget, modules) -> "Allocator":
        libc = modules.find("libc.so") or modules.find("libc-")
        if libc is None:
            raise MappedTraceError(f"process {live.pid} has no glibc mapped", hint="relocation needs glibc's allocator")
        addrs = {}
        for name in ("posix_memalign", "free"):
            s = elf.symbol(libc.path, name)
            if s is None or not s.addr:
                raise MappedTraceError(f"{libc.path}: no symbol {name}")
            addrs[name] = s.addr + libc.bias
        trim = elf.symbol(libc.path, "malloc_trim")
        return cls(addrs["posix_memalign"], addrs["free"], find_gadgets(live.pid, live.mappings),
                   trim.addr + libc.bias if trim is not None and trim.addr else 0)


@dataclass
class Borrow:
    """A thread borrowed for allocator calls: what a recovery needs to give it
    back (kept in the journal once per pass, not per call)."""

    tid: int
    frame_addr: int
    frame_saved: str     # hex of the stack bytes under the frame
    saved_regs: str      # hex of user_regs_struct
    mask: int
    result_slot: int     # where posix_memalign writes its result


def group_stop(live: LiveTarget) -> list[int]:
    """Put the whole process of ``live`` (every thread ptrace-stopped) in group-stop.

    Sends SIGSTOP and lets each thread take it: a thread resumed from its
    ``PTRACE_EVENT_STOP`` meets the pending signal before it returns to user
    code (a signal-delivery stop, where we let SIGSTOP through), then reports
    the group-stop.  Other signals met meanwhile are suppressed and re-sent
    once the thread is parked (pending until SIGCONT).  Once all threads have
    stopped the group stop is in effect, and a tracer that dies from here on
    leaves the process stopped.

    :returns: the threads that reached the group-stop.
    """
    if live.was_stopped:
        return live.stopped_tids        # already in group-stop before we came
    k.kill(live.pid, signal.SIGSTOP)
    done = []
    for tid in live.stopped_tids:
        held = live._stopped.get(tid, 0)
        sigs = [held] if held and held != signal.SIGSTOP else []
        live._stopped[tid] = 0
        k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
        for _ in range(64):
            try:
                _, st = k.waitpid(tid, k.WALL)
            except NoSuchProcess:
                live.forget_thread(tid)
                break
            if k.WIFEXITED(st) or k.WIFSIGNALED(st):
                live.forget_thread(tid)
                break
            if not k.WIFSTOPPED(st):
                continue
            ev, sig = k.EVENT(st), k.WSTOPSIG(st)
            if ev == k.PTRACE_EVENT_STOP and sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                done.append(tid)
                break
            if ev == 0 and sig == signal.SIGSTOP:
                k.try_ptrace(k.PTRACE_CONT, tid, 0, signal.SIGSTOP)     # starts the group stop
                continue
            if ev == 0 and sig:
                sigs.append(sig)
            k.try_ptrace(k.PTRACE_CONT, tid, 0, 0)
        live.requeue_signals(tid, sigs)
    return done


def thread_in_allocator(frames) -> str | None:
    """The allocator function a thread is stopped in (any frame), or None."""
    for f in frames:
        if f.function in ALLOCATOR_FUNCTIONS:
            return f.function
    return None


def borrow(live: LiveTarget, tid: int, alloc: Allocator) -> tuple[Borrow, object]:
    """Prepare thread ``tid`` for calls: its signal frame and the record to
    journal before :func:`call` arms it."""
    t = next(x for x in live.threads if x.tid == tid)
    mask = k.get_sigmask(tid)
    frame = _build_frame(live, t, alloc.gadgets, mask)
    return Borrow(tid, frame.addr, frame.saved.hex(), k.get_regs(tid).hex(), mask, frame.child_sp + 8), frame


def arm(live: LiveTarget, b: Borrow, frame) -> None:
    """Write the signal frame under the thread's stack (free by the ABI) and block its signals."""
    k.vm_write(live.pid, b.frame_addr, frame.data)
    k.set_options(b.tid, k.PTRACE_O_TRACESYSGOOD)
    k.set_sigmask(b.tid, ~0)     # no signal handler meets the borrowed registers


def call(live: LiveTarget, b: Borrow, alloc: Allocator, fn: str, args: list[int], hook=None,
         max_stops: int = MAX_CALL_STOPS) -> int:
    """Call ``fn`` ("posix_memalign": args ``[align, size]``, "free": ``[ptr]``, or
    "malloc_trim": ``[pad]``) in the borrowed thread; returns what posix_memalign
    allocated (0 for the others: malloc_trim's own result is lost with ``rax``).

    The thread is left at the ``rt_sigreturn`` system-call entry of the call's
    return, from where the next call is armed directly (the syscall skipped);
    :func:`release` ends the borrowing."""
    regs = ThreadState.unpack_regs(bytes.fromhex(b.saved_regs))
    if fn == "posix_memalign":
        k.vm_write(live.pid, b.result_slot, bytes(8))
        regs.update(rdi=b.result_slot, rsi=args[0], rdx=args[1])
        target = alloc.posix_memalign
    elif fn == "malloc_trim":
        if not alloc.malloc_trim:
            raise MappedTraceError(f"process {live.pid}: libc exports no malloc_trim")
        regs.update(rdi=args[0])
        target = alloc.malloc_trim
    else:
        regs.update(rdi=args[0])
        target = alloc.free
    regs.update(rax=0, orig_rax=_NO_SYSCALL, rip=target, rsp=b.frame_addr)
    k.set_regs(b.tid, ThreadState(b.tid, regs).pack_regs())      # armed: safe to die from here on
    if hook is not None:
        hook()          # the tests' kill hook: die with the call armed
    return finish_call(live, b, fn, max_stops)


def finish_call(live: LiveTarget, b: Borrow, fn: str, max_stops: int = MAX_CALL_STOPS) -> int:
    """Drive an armed thread to the ``rt_sigreturn`` of its call's return; the
    result (posix_memalign's, else 0).

    Also what a recovery does with a call that was in flight when a relocator
    died (the thread then stopped somewhere inside the call).  ``max_stops``
    bounds its system-call stops (``malloc_trim`` makes one ``madvise`` per
    free chunk: its callers pass a bound from the heap's free chunks)."""
    tid = b.tid
    k.set_options(tid, k.PTRACE_O_TRACESYSGOOD)     # a recovery's fresh seize has none
    k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    for _ in range(max_stops):
        _, st = k.waitpid(tid, k.WALL)
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            live.forget_thread(tid)
            raise NoSuchProcess(f"thread {tid} of process {live.pid} exited during an injected {fn}")
        if not k.WIFSTOPPED(st):
            continue
        if k.EVENT(st) == 0 and k.WSTOPSIG(st) == (0x80 | 5):
            r = ThreadState.unpack_regs(k.get_regs(tid))
            if r["orig_rax"] == SYS_RT_SIGRETURN and b.frame_addr < r["rsp"] <= b.frame_addr + 64:
                break
            if r["orig_rax"] == SYS_FUTEX:
                # waits for a lock a stopped thread holds: cannot finish (checked before, see mover)
                raise MappedTraceError(f"injected {fn} in thread {tid} waits on a lock",
                                       hint="a thread holds the allocator's lock: try again")
        k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    else:
        raise MappedTraceError(f"injected {fn} in thread {tid} did not return within {max_stops} stops")
    if fn == "posix_memalign":
        return struct.unpack("<Q", k.vm_read(live.pid, b.result_slot, 8))[0]
    return 0


def restore(live: LiveTarget, b: Borrow) -> None:
    """Give the thread its exact saved registers, mask and stack bytes back, parked
    in a ``PTRACE_EVENT_STOP`` (see :func:`~mappedtrace.target.settle.disarm_single_step`).
    From an ``rt_sigreturn`` entry stop the syscall is skipped (``orig_rax`` is
    the saved one only once the thread has left the stop)."""
    tid = b.tid
    regs = ThreadState.unpack_regs(bytes.fromhex(b.saved_regs))
    cur = ThreadState.unpack_regs(k.get_regs(tid))
    if cur["orig_rax"] == SYS_RT_SIGRETURN and b.frame_addr < cur["rsp"] <= b.frame_addr + 64:
        # at the rt_sigreturn entry: let it run to its exit stop (the thread then has the
        # frame's state), so that the saved registers are set where no syscall follows
        k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
        for _ in range(16):
            _, st = k.waitpid(tid, k.WALL)
            if k.WIFSTOPPED(st) and k.EVENT(st) == 0 and k.WSTOPSIG(st) == (0x80 | 5):
                break
            if k.WIFEXITED(st) or k.WIFSIGNALED(st):
                live.forget_thread(tid)
                return
            k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    k.set_sigmask(tid, b.mask)
    k.set_regs(tid, ThreadState(tid, regs).pack_regs())
    k.try_ptrace(k.PTRACE_SETOPTIONS, tid, 0, 0)
    if not _settle.disarm_single_step(live, tid):
        live.warnings.append(f"thread {tid}: could not park it again after the allocator calls")
    k.vm_write(live.pid, b.frame_addr, bytes.fromhex(b.frame_saved))


def call_state(b: Borrow) -> str:
    """Where a borrowed thread that a dead relocator left stands: ``"idle"``
    (no call started, or over: it has its own registers) or ``"in-flight"``."""
    cur = ThreadState.unpack_regs(k.get_regs(b.tid))
    saved = ThreadState.unpack_regs(bytes.fromhex(b.saved_regs))
    if cur["rip"] in (saved["rip"], saved["rip"] - 2) and cur["rsp"] == saved["rsp"]:
        return "idle"
    return "in-flight"
