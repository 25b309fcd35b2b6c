"""Frames of glibc proven to hold no root: "exact by glibc model" (issue #11).

glibc has no maps, so its frames are scanned conservatively.  For a few kinds
of frame the source of the installed glibc says what the frame holds, and
that none of it is a heap pointer the program still needs that no other root
holds; such a frame counts as exact and yields no root.  The kinds:

``start-up``
    ``_start`` ← ``__libc_start_main`` ← ``__libc_start_call_main`` at the
    bottom of the main thread (csu/libc-start.c, sysdeps/nptl/libc_start_call_main.h):
    argc, argv, envp, auxv (pointers into the argv area, scanned as a root area
    of its own: "stack above"), ``main``, ``init``/``fini``/``rtld_fini`` and
    the cancellation ``jmp_buf`` (glibc's own registers).  Nothing the program
    computes flows back into them before ``main`` returns.
``thread start``
    ``clone3``/``clone`` ← ``start_thread`` at the bottom of a created thread,
    ``start_thread`` waiting on the call of the start routine (nptl/pthread_create.c):
    ``pd`` (the thread's ``struct pthread``, in its stack mapping) and the
    ``jmp_buf``; the routine's argument is ``pd->arg``, which stays in the
    ``struct pthread``, scanned as the TCB root area.
``syscall wrapper``
    A function checked by disassembly (capstone) at the moment of the trace: its
    direct calls go only to glibc's cancellation and fatal-error helpers
    (:data:`HELPERS`) or to other checked wrappers, it has no indirect call or
    jump, and the frame is stopped just after one of its ``syscall``
    instructions (the top frame) or at the return of a call to a checked
    wrapper.  It holds copies of its arguments and the callee-saved registers
    of its caller; it returns an integer and stores no pointer anywhere.  A
    pointer the program still needs after the call is live in the caller, and
    the caller's map records it (or the caller is itself modelled); one that
    is dead in the caller (a buffer ``read`` fills that nobody reads again) is
    unreachable once the call returns, and is reported as the program's own
    liveness says (the rule of ``tests/leak_corpus/stale_slot.c``).
``blocking wait``
    ``pthread_cond_wait``/``timedwait``/``clockwait`` waiting on the futex
    wrapper (nptl/pthread_cond_wait.c, ``__pthread_cond_wait_common``): ``cond``,
    ``mutex``, its cleanup buffer on the stack; it allocates nothing and
    returns an integer.  ``nanosleep``/``sleep``/``usleep`` waiting on
    ``clock_nanosleep``: their ``timespec`` arguments.
``stdio read``
    ``getc`` → ``__uflow`` → ``_IO_default_uflow`` → ``_IO_new_file_underflow``
    (→ ``_IO_file_read``) waiting on ``read``, and ``fread`` → ``_IO_sgetn`` →
    ``_IO_file_xsgetn`` waiting on ``read`` (libio/genops.c, fileops.c, getc.c,
    iofread.c): each holds ``fp``, values read from it and (fread) the
    caller's buffer and counts; the buffer being filled is ``fp->_IO_buf_base``,
    allocated and stored in ``fp`` before the read, or the caller's own.  They
    return a character or a count.  Every FILE whose underflow is ``_IO_new_file_underflow`` is linked
    into ``_IO_list_all`` by ``_IO_new_file_init_internal`` until ``fclose``
    (or is libc's static stdin/stdout/stderr): libc's data reaches it.

A modelled frame must have a caller that is exact (its map record) or
modelled itself; under a conservative frame it stays conservative (its saved
registers would be that caller's, unrecorded).  Functions that take or give
ownership (``free``, ``realloc``, ``fgets`` returning its buffer, anything
that allocates and holds the result) are not modelled and stay conservative.

The models are source arguments about one glibc build: they apply only to a
libc whose GNU build-id is in :data:`MODELLED` (another build: every glibc
frame is scanned, and the report says why).  The relocator does not use them
(``glibc_model=False``): a buffer the kernel is filling must not move.
"""
from __future__ import annotations

import functools
import os

from .formats import elf

#: libc builds whose source the models were checked against: build-id → version
MODELLED = {
    "93ac61ec5a8eb1396f9fbd350e3169a558528a40": "Debian GLIBC 2.36-9+deb12u14",
}

SYSCALL_WRAPPER = "syscall wrapper"
BLOCKING_WAIT = "blocking wait"
STDIO_READ = "stdio read"
START_UP = "start-up"
THREAD_START = "thread start"

#: callees a syscall wrapper may call: cancellation state, and calls that never return
HELPERS = frozenset({
    "__pthread_enable_asynccancel", "__GI___pthread_enable_asynccancel",
    "__pthread_disable_asynccancel", "__GI___pthread_disable_asynccancel",
    "__libc_fatal", "__GI___libc_fatal", "__stack_chk_fail", "__fortify_fail",
})

#: blocking system-call wrappers (each is still checked by disassembly)
WRAPPERS = frozenset({
    "read", "__read", "__libc_read", "__read_nocancel", "write", "__write", "__libc_write",
    "pread64", "pwrite64", "readv", "writev", "recv", "recvfrom", "recvmsg", "send", "sendto",
    "sendmsg", "accept", "accept4", "connect", "epoll_wait", "epoll_pwait", "poll", "__poll",
    "ppoll", "select", "__select", "pselect", "pselect64", "nanosleep", "__nanosleep",
    "clock_nanosleep", "__clock_nanosleep", "pause", "wait4", "waitpid", "__waitpid",
    "sigsuspend", "sigtimedwait", "sigwaitinfo", "__futex_abstimed_wait_common",
    "__futex_abstimed_wait_common64", "__futex_abstimed_wait_cancelable64",
})

#: source-modelled functions: name → (kind, the callees they may be waiting on)
_FUTEX = ("__futex_abstimed_wait_common", "__futex_abstimed_wait_common64",
          "__futex_abstimed_wait_cancelable64")
_READ = ("read", "__read", "__libc_read", "__read_nocancel")
WAITERS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{n: (BLOCKING_WAIT, _FUTEX) for n in (
        "pthread_cond_wait", "__pthread_cond_wait", "___pthread_cond_wait",
        "pthread_cond_timedwait", "__pthread_cond_timedwait", "___pthread_cond_timedwait64",
        "__pthread_cond_timedwait64", "pthread_cond_clockwait", "__pthread_cond_clockwait",
        "__pthread_cond_clockwait64")},
    **{n: (BLOCKING_WAIT, ("clock_nanosleep", "__clock_nanosleep", "nanosleep", "__nanosleep"))
       for n in ("sleep", "__sleep", "usleep", "nanosleep", "__nanosleep")},
    **{n: (STDIO_READ, _READ) for n in ("_IO_file_read", "_IO_new_file_read")},
    **{n: (STDIO_READ, _READ + ("_IO_file_read", "_IO_new_file_read"))
       for n in ("_IO_file_underflow", "_IO_new_file_underflow")},
    "_IO_default_uflow": (STDIO_READ, ("_IO_file_underflow", "_IO_new_file_underflow")),
    # fread → _IO_sgetn → _IO_file_xsgetn → read into the caller's buffer (or fp's, through
    # underflow): at the read, what they hold is the caller's buffer and fp
    **{n: (STDIO_READ, _READ + ("_IO_file_read", "_IO_new_file_read", "_IO_file_underflow",
                                "_IO_new_file_underflow"))
       for n in ("_IO_file_xsgetn", "__GI__IO_file_xsgetn")},
    **{n: (STDIO_READ, ("_IO_file_xsgetn",)) for n in ("_IO_sgetn", "fread", "_IO_fread")},
    "__uflow": (STDIO_READ, ("_IO_default_uflow",)),
    **{n: (STDIO_READ, ("__uflow",)) for n in ("getc", "_IO_getc", "fgetc")},
}

START_FUNCTIONS = frozenset({"__libc_start_call_main", "__libc_start_main", "__libc_start_main_impl",
                             "__libc_start_main_alias_2"})
THREAD_FUNCTIONS = frozenset({"start_thread", "clone3", "__clone3", "clone", "__clone", "__GI___clone3"})

#: most bytes of one function disassembled; most wrappers followed through calls
_MAX_FUNC = 8192
_MAX_DEPTH = 3


def _cs():
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


class GlibcModel:
    """The model of one libc image (a path): which of its functions are checked
    wrappers or modelled waiters, by link-time start address.

    :param path: the libc file as mapped
    :ivar version: the modelled version, or None when the model is off
    :ivar why_off: one line saying why the model is off (None when on)
    """

    def __init__(self, path: str):
        self.path = path
        self.version: str | None = None
        self.why_off: str | None = None
        bid = elf.build_id(path)
        if os.environ.get("MAPPEDTRACE_GLIBC_MODEL", "") == "off":
            self.why_off = "the glibc model is off (MAPPEDTRACE_GLIBC_MODEL=off): glibc's frames are scanned"
        elif bid not in MODELLED:
            self.why_off = (f"{os.path.basename(path)} build-id {bid or 'none'} is not a modelled glibc build "
                            f"({', '.join(MODELLED.values())}): its frames are scanned conservatively")
        else:
            self.version = MODELLED[bid]
        self._symfile = elf.debug_file_for(path) or path
        self._syms = {}           # name → Symbol (from the debug file, else the dynamic table)
        self._by_start: dict[int, str] = {}
        self._wrappers: dict[int, frozenset[int] | None] = {}   # start → syscall-end addresses, None: rejected
        if self.version is not None:
            for name in set(WRAPPERS) | set(WAITERS) | START_FUNCTIONS | THREAD_FUNCTIONS | HELPERS:
                s = elf.symbol(self._symfile, name) or elf.symbol(path, name)
                if s is not None and s.addr:
                    self._syms[name] = s
                    self._by_start.setdefault(s.addr, name)

    @property
    def on(self) -> bool:
        return self.version is not None

    def name_at(self, start: int) -> str | None:
        """The modelled name of the function starting at link-time ``start``."""
        return self._by_start.get(start)

    def _names_at(self, start: int) -> set[str]:
        return {n for n, s in self._syms.items() if s.addr == start}

    # -- checked wrappers -----------------------------------------------------
    def wrapper(self, start: int, depth: int = 0) -> frozenset[int] | None:
        """The link-time addresses just after each ``syscall`` of the wrapper at
        ``start`` and after each call to another checked wrapper, or None when
        the function is not a wrapper by the rule (a call to anything else, an
        indirect call or jump, no system call)."""
        if start in self._wrappers:
            return self._wrappers[start]
        self._wrappers[start] = None            # no recursion through itself
        names = self._names_at(start)
        if not names & WRAPPERS or depth > _MAX_DEPTH:
            return None
        size = next(s.size for s in self._syms.values() if s.addr == start)
        code = elf.code_at(self.path, start, min(size, _MAX_FUNC)) if 0 < size <= _MAX_FUNC else None
        if not code:
            return None
        import capstone.x86 as X
        ends, ok = set(), True
        for ins in _cs().disasm(code, start):
            if ins.mnemonic == "syscall":
                ends.add(ins.address + ins.size)
            elif ins.group(X.X86_GRP_CALL) or ins.group(X.X86_GRP_JUMP):
                op = ins.operands[0] if ins.operands else None
                if op is None or op.type != X.X86_OP_IMM:
                    ok = False                  # indirect call or jump
                    break
                tgt = op.imm
                if start <= tgt < start + size:
                    continue                    # a branch inside the function
                tnames = self._target_names(tgt)
                if tnames & HELPERS:
                    continue
                if self.wrapper(tgt, depth + 1) is None:
                    ok = False                  # a call (or tail call) to anything else
                    break
                if ins.group(X.X86_GRP_CALL):
                    ends.add(ins.address + ins.size)
        out = frozenset(ends) if ok and ends else None
        self._wrappers[start] = out
        return out

    def _target_names(self, addr: int) -> set[str]:
        names = self._names_at(addr)
        if not names:
            s = elf.symbol_at(self._symfile, addr)
            if s is not None and s.addr == addr:
                names = {s.name}
        return names

    def summary(self) -> dict:
        """What the model covers in this libc: ``{"version", "off", "wrappers": {name:
        "checked"|"rejected"}, "waiters": [...], "start": [...], "thread_start": [...]}``
        (names found in this libc only)."""
        out = {"library": self.path, "version": self.version, "off": self.why_off,
               "wrappers": {}, "waiters": [], "start": [], "thread_start": []}
        if not self.on:
            return out
        for name in sorted(WRAPPERS):
            s = self._syms.get(name)
            if s is not None:
                out["wrappers"][name] = "checked" if self.wrapper(s.addr) is not None else "rejected"
        out["waiters"] = sorted(n for n in WAITERS if n in self._syms)
        out["start"] = ["_start (of the executable)"] + sorted(n for n in START_FUNCTIONS if n in self._syms)
        out["thread_start"] = sorted(n for n in THREAD_FUNCTIONS if n in self._syms)
        return out

    def call_target_before(self, ret: int) -> int | None:
        """The link-time target of a direct call that ends at ``ret``, or None."""
        for n in (5, 6, 7):
            code = elf.code_at(self.path, ret - n, n)
            if not code:
                continue
            import capstone.x86 as X
            ins = next(_cs().disasm(code, ret - n), None)
            if ins is not None and ins.size == n and ins.group(X.X86_GRP_CALL):
                op = ins.operands[0]
                return op.imm if op.type == X.X86_OP_IMM else -1
        return None


@functools.lru_cache(maxsize=8)
def _model_for(key: tuple[str, int, int]) -> GlibcModel:
    return GlibcModel(key[0])


def model_for(path: str) -> GlibcModel:
    """The (cached) model of the libc at ``path``."""
    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (path, -1, -1)
    return _model_for(key)
