"""Call the program's own allocator in a borrowed thread, in batches, and keep a process in group-stop.

Why inject rather than a helper in ``runtime/``: the relocator must work on
any process built with the maps, not only those started with a preloaded
helper, and a moved object must stay the allocator's own chunk so that
``free``, ``realloc`` and ``malloc_usable_size`` keep working.  Calling
glibc's ``posix_memalign``/``free`` in the target gives exactly that.

**Batches.**  One ptrace round trip per allocator call made a pass cost
0.4–1.1 s per thousand objects (issue #17).  So the calls go in batches: a
*scratch mapping* of the tracer's own (:class:`Scratch`; mapped at an address
chosen and journaled beforehand with ``MAP_FIXED_NOREPLACE``, so that a
recovery finds it; code page read-and-execute, table pages read-and-write)
holds a 61-byte loop (:data:`BLOB`) and a table of calls ``{fn, a0, a1, a2,
ret, out}``.  The loop calls each ``fn(a0, a1, a2)``, stores ``rax`` in
``ret`` and bumps the table's ``done`` counter after each call; a
``posix_memalign`` gets ``&out`` as its ``memptr``.  The tracer writes the
table in one write, lets the thread run once, and reads every result back in
one read: one stop-resume per batch, not per call.

The batch is made kill-safe the way the fork injection is
(:func:`mappedtrace.target.capture.inject_clone`): a signal frame holding the
thread's registers, FPU state and signal mask is written below its stack
(below the red zone), and the loop is entered with the frame's ``pretcode``
(``__restore_rt``) as its return address.  Whatever happens to the tracer,
the loop runs to its end and returns into ``rt_sigreturn``, and the thread
gets its own state back; ``done`` and the ``out`` words say what was done
(a recovery reads them).  Normally the tracer stops the thread at the
``rt_sigreturn`` system call, and arms the next batch from there or puts the
exact saved registers back (an interrupted system call keeps its restart).
The scratch mapping is made and removed with system calls run the same way at
a ``syscall; ret`` of libc, and is gone when the pass is: no byte of the
program's is left changed.
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
    return Borrow(tid, frame.addr, frame.saved.hex(), k.get_regs(tid).hex(), mask), frame


def arm(live: LiveTarget, b: Borrow, frame) -> None:
    """Write the signal frame under the thread's stack (free by the ABI) and block its signals."""
    k.vm_write(live.pid, b.frame_addr, frame.data)
    k.set_options(b.tid, k.PTRACE_O_TRACESYSGOOD)
    k.set_sigmask(b.tid, ~0)     # no signal handler meets the borrowed registers


#: the loop a batch runs (x86-64; 61 bytes), entered with ``rdi`` = the table and the
#: signal frame's ``pretcode`` as return address; ``rbx``, ``r12``, ``r13`` are
#: callee-saved, so they survive the calls (the frame restores the thread's own)::
#:
#:       sub  $8, %rsp              # 16-byte aligned for the calls
#:       mov  %rdi, %rbx            # the table
#:       mov  8(%rbx), %r12         # i = done
#:   1:  cmp  (%rbx), %r12          # while i < n
#:       jae  2f
#:       imul $48, %r12, %r13
#:       lea  16(%rbx,%r13), %r13   # op = &ops[i]
#:       mov  8(%r13), %rdi
#:       mov  16(%r13), %rsi
#:       mov  24(%r13), %rdx
#:       call *(%r13)               # op->fn(a0, a1, a2)
#:       mov  %rax, 32(%r13)        # op->ret
#:       inc  %r12
#:       mov  %r12, 8(%rbx)         # done = i + 1, after the call returned
#:       jmp  1b
#:   2:  add  $8, %rsp
#:       ret                        # into __restore_rt: rt_sigreturn
#:
#: (assembled with ``llvm-mc-22 -triple=x86_64``; tests/test_relocate_batch.py
#: disassembles it with capstone and checks this listing)
BLOB = bytes.fromhex("4883ec084889fb4c8b63084c3b2373264d6bec304e8d6c2b10498b7d08498b7510498b55"
                     "1841ff55004989452049ffc44c896308ebd54883c408c3")
#: offset in :data:`BLOB` of the loop's head (``1:``)
BLOB_LOOP = 11
#: the table: ``n``, ``done``, then ``n`` ops
TABLE_HEAD = struct.Struct("<QQ")
#: one call: fn, a0, a1, a2, ret (rax after the call), out (posix_memalign's memptr)
OP = struct.Struct("<6Q")
OP_RET, OP_OUT = 32, 40
PAGE = 4096
#: calls per batch (the table: 16 + 48 × this bytes)
BATCH_MAX = 8192
SCRATCH_SIZE = PAGE + (TABLE_HEAD.size + OP.size * BATCH_MAX + PAGE - 1) // PAGE * PAGE
SYS_MMAP, SYS_MPROTECT, SYS_MUNMAP = 9, 10, 11
_ENOSYS = (1 << 64) - 38
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x100000
#: system-call stops allowed per call of a batch, on top of :data:`MAX_CALL_STOPS`
#: (a free may trim the heap: brk or madvise, entry and exit)
STOPS_PER_CALL = 8


@dataclass
class Scratch:
    """The tracer's mapping in the target: the loop's code page, then the table."""

    addr: int
    size: int = SCRATCH_SIZE

    @property
    def table(self) -> int:
        return self.addr + PAGE


def choose_scratch(live: LiveTarget, size: int = SCRATCH_SIZE) -> Scratch:
    """A free range of ``size`` bytes for the scratch mapping, chosen before it is made
    (so the journal can name it): the highest gap below the lowest shared library,
    a page clear of its neighbours, where the kernel's own top-down ``mmap`` would
    put it."""
    maps = sorted(live.mappings, key=lambda m: m.start)
    libs = [m.start for m in maps if m.path.startswith("/") and ".so" in m.path]
    ceiling = min(libs) if libs else (1 << 47)
    prev_end = PAGE * 16
    best = None
    for m in maps + [None]:
        lo = prev_end + PAGE
        hi = (m.start if m is not None else (1 << 47)) - PAGE
        hi = min(hi, ceiling - PAGE)
        if hi - lo >= size:
            best = hi - size            # the highest such gap wins (later ones are higher)
        if m is None or m.start >= ceiling:
            break
        prev_end = max(prev_end, m.end)
    if best is None:
        raise MappedTraceError(f"no free range of {size} bytes in process {live.pid} for the batch table")
    return Scratch(best & ~(PAGE - 1), size)


def _drive(live: LiveTarget, b: Borrow, what: str, max_stops: int, on_stop=None) -> None:
    """Resume the armed thread with syscall stops up to the ``rt_sigreturn`` entry of its
    return through the frame.  ``on_stop(regs)`` sees every other system-call stop."""
    tid = b.tid
    k.set_options(tid, k.PTRACE_O_TRACESYSGOOD)     # a recovery's fresh seize has none
    k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    for _ in range(max_stops):
        _, st = k.waitpid(tid, k.WALL)
        if k.WIFEXITED(st) or k.WIFSIGNALED(st):
            live.forget_thread(tid)
            raise NoSuchProcess(f"thread {tid} of process {live.pid} exited during an injected {what}")
        if not k.WIFSTOPPED(st):
            continue
        if k.EVENT(st) == 0 and k.WSTOPSIG(st) == (0x80 | 5):
            r = ThreadState.unpack_regs(k.get_regs(tid))
            if r["orig_rax"] == SYS_RT_SIGRETURN and b.frame_addr < r["rsp"] <= b.frame_addr + 64:
                return
            if r["orig_rax"] == SYS_FUTEX:
                # waits for a lock a stopped thread holds: cannot finish (checked before, see mover)
                raise MappedTraceError(f"injected {what} in thread {tid} waits on a lock",
                                       hint="a thread holds the allocator's lock: try again")
            if on_stop is not None:
                on_stop(r)
        k.ptrace(k.PTRACE_SYSCALL, tid, 0, 0)
    raise MappedTraceError(f"injected {what} in thread {tid} did not return within {max_stops} stops")


def _arm(live: LiveTarget, b: Borrow, **regs_) -> None:
    regs = ThreadState.unpack_regs(bytes.fromhex(b.saved_regs))
    regs.update(rax=0, orig_rax=_NO_SYSCALL, rsp=b.frame_addr)
    regs.update(regs_)
    k.set_regs(b.tid, ThreadState(b.tid, regs).pack_regs())      # armed: safe to die from here on


def syscall(live: LiveTarget, b: Borrow, alloc: "Allocator", nr: int, args: list[int]) -> int:
    """One system call in the borrowed thread, at libc's ``syscall; ret`` (then
    ``rt_sigreturn`` through the frame, like a batch); its result (negative: -errno)."""
    names = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    _arm(live, b, rip=alloc.gadgets.syscall_ret, rax=nr, **dict(zip(names, args)))
    out: list[int] = []

    def exit_stop(r: dict) -> None:
        # the call's exit stop (its entry shows -ENOSYS; a skipped call, orig_rax -1)
        if r["orig_rax"] == nr and r["rax"] != _ENOSYS:
            out.append(r["rax"])
    _drive(live, b, f"system call {nr}", 16, exit_stop)
    if not out:
        raise MappedTraceError(f"injected system call {nr} in thread {b.tid} gave no result")
    v = out[0]
    return v - (1 << 64) if v >= 1 << 63 else v


def map_scratch(live: LiveTarget, b: Borrow, alloc: "Allocator", sc: Scratch) -> None:
    """Make the scratch mapping at ``sc.addr`` (journaled by the caller before), write the
    loop and make its page read-and-execute."""
    r = syscall(live, b, alloc, SYS_MMAP, [sc.addr, sc.size, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, (1 << 64) - 1, 0])
    if r != sc.addr:
        if r > 0:       # a kernel that ignores MAP_FIXED_NOREPLACE put it elsewhere
            syscall(live, b, alloc, SYS_MUNMAP, [r, sc.size])
        raise MappedTraceError(f"cannot map {sc.size} bytes at {sc.addr:#x} in process {live.pid} "
                               f"for the batch table ({'errno ' + str(-r) if r < 0 else hex(r)})")
    k.vm_write(live.pid, sc.addr, BLOB)
    r = syscall(live, b, alloc, SYS_MPROTECT, [sc.addr, PAGE, PROT_READ | PROT_EXEC])
    if r != 0:
        raise MappedTraceError(f"cannot make the batch loop executable in process {live.pid} (errno {-r})",
                               hint="the process may forbid new executable memory")


def unmap_scratch(live: LiveTarget, b: Borrow, alloc: "Allocator", sc: Scratch) -> None:
    r = syscall(live, b, alloc, SYS_MUNMAP, [sc.addr, sc.size])
    if r != 0:
        raise MappedTraceError(f"cannot unmap the batch table at {sc.addr:#x} in process {live.pid} (errno {-r})")


def scratch_mapped(pid: int, sc: Scratch) -> bool:
    """Whether ``[sc.addr, sc.addr + sc.size)`` is exactly a mapping the tracer made:
    anonymous and private, its first page ``r-x`` (or ``rw-``: killed before the
    ``mprotect``), nothing else inside it (the process was stopped throughout)."""
    from ..target.live import parse_maps
    try:
        maps = parse_maps(open(f"/proc/{pid}/maps").read())
    except OSError:
        return False
    inside = [m for m in maps if m.start < sc.addr + sc.size and m.end > sc.addr]
    if not inside or inside[0].start != sc.addr or inside[-1].end != sc.addr + sc.size:
        return False
    if any(m.path or m.perms[3] != "p" for m in inside) or inside[0].perms[:3] not in ("r-x", "rw-"):
        return False
    return all(inside[i].end == inside[i + 1].start for i in range(len(inside) - 1))


def injection_refused(pid: int) -> str | None:
    """Why no call may be injected into ``pid`` (None if it may): a seccomp filter may
    kill the process for the ``mmap``/``mprotect`` of the batch mapping, and a thread
    with a shadow stack would fault on the ``ret`` into ``__restore_rt``
    (:func:`mappedtrace.target.capture.fork_refused`, the same rule as the fork)."""
    from ..target.capture import fork_refused
    return fork_refused(pid)


def write_batch(live: LiveTarget, alloc: "Allocator", sc: Scratch, calls: list[tuple[str, list[int]]]) -> None:
    """Write a batch's table (``done`` = 0) in one write: nothing runs until :func:`run_batch`.
    Calls: ``("posix_memalign", [align, size])`` (its ``memptr`` is the entry's ``out``),
    ``("free", [ptr])``, ``("malloc_trim", [pad])``."""
    import numpy as np
    n = len(calls)
    if not 0 < n <= BATCH_MAX:
        raise ValueError(f"a batch holds 1 to {BATCH_MAX} calls, not {n}")
    fns = {"posix_memalign": alloc.posix_memalign, "free": alloc.free, "malloc_trim": alloc.malloc_trim}
    ops = np.zeros((n, OP.size // 8), dtype="<u8")
    ops[:, 0] = [fns[fn] for fn, _a in calls]
    if not ops[:, 0].all():
        raise MappedTraceError(f"process {live.pid}: libc exports no malloc_trim")
    pm = np.array([fn == "posix_memalign" for fn, _a in calls])
    args = np.array([a + [0] * (2 - len(a)) if len(a) < 2 else a[:2] for _fn, a in calls], dtype="<u8")
    outs = sc.table + TABLE_HEAD.size + np.arange(n, dtype="<u8") * OP.size + OP_OUT
    ops[:, 1] = np.where(pm, outs, args[:, 0])
    ops[:, 2] = np.where(pm, args[:, 0], 0)
    ops[:, 3] = np.where(pm, args[:, 1], 0)
    k.vm_write(live.pid, sc.table, TABLE_HEAD.pack(n, 0) + ops.tobytes())


def run_batch(live: LiveTarget, b: Borrow, sc: Scratch, max_stops: int) -> None:
    """Run the batch written in the table in the borrowed thread, to the
    ``rt_sigreturn`` of its return."""
    _arm(live, b, rip=sc.addr, rdi=sc.table)
    finish_batch(live, b, max_stops)


def run_batch_until(live: LiveTarget, b: Borrow, sc: Scratch, n: int, calls: int, max_stops: int) -> None:
    """Leave the thread inside the batch (``n`` calls, written), stopped at the loop's
    head with exactly ``calls`` calls done: the tests' kill hook, which dies there.

    Deterministic, unlike dying while the thread runs (a running thread finishes a
    batch of thousands of calls in a millisecond, before the tracer's death unlinks
    it): the table's ``n`` is lowered to ``calls``, the loop runs them and returns to
    the ``rt_sigreturn`` entry stop, the table gets its ``n`` back, and the thread the
    registers it has at the loop's head (``rbx`` the table, ``r12`` the next call,
    ``rsp`` aligned), the ``rt_sigreturn`` skipped."""
    if calls <= 0:
        _arm(live, b, rip=sc.addr, rdi=sc.table)
        return
    k.vm_write(live.pid, sc.table, TABLE_HEAD.pack(calls, 0))
    run_batch(live, b, sc, max_stops)
    k.vm_write(live.pid, sc.table, TABLE_HEAD.pack(n, calls))
    regs = ThreadState.unpack_regs(k.get_regs(b.tid))
    regs.update(rip=sc.addr + BLOB_LOOP, rbx=sc.table, r12=calls, rsp=b.frame_addr - 8, orig_rax=_NO_SYSCALL)
    k.set_regs(b.tid, ThreadState(b.tid, regs).pack_regs())


def batch_done(pid: int, sc: Scratch) -> int:
    """The ``done`` counter of the batch in the table."""
    return TABLE_HEAD.unpack(k.vm_read(pid, sc.table, TABLE_HEAD.size))[1]


def finish_batch(live: LiveTarget, b: Borrow, max_stops: int) -> None:
    """Drive an armed thread (or one a dead relocator left inside a batch) to the
    ``rt_sigreturn`` of its return."""
    _drive(live, b, "batch of allocator calls", max_stops)


def read_batch(pid: int, sc: Scratch, n: int) -> tuple[int, list[tuple[int, int]]]:
    """``done`` and ``(ret, out)`` of each of the ``n`` calls of the batch in the table
    (one read)."""
    import numpy as np
    raw = k.vm_read(pid, sc.table, TABLE_HEAD.size + n * OP.size)
    total, done = TABLE_HEAD.unpack_from(raw)
    if total != n or done > n:
        raise MappedTraceError(f"the batch table at {sc.table:#x} in process {pid} says {done} of {total} "
                               f"calls, not of {n}", hint="the process changed the tracer's mapping")
    ops = np.frombuffer(raw, dtype="<u8", offset=TABLE_HEAD.size).reshape(n, OP.size // 8)
    return done, list(zip(ops[:, OP_RET // 8].tolist(), ops[:, OP_OUT // 8].tolist()))


def batch_stops(n: int) -> int:
    """The bound on system-call stops of a batch of ``n`` calls."""
    return MAX_CALL_STOPS + STOPS_PER_CALL * n


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
