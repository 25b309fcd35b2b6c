"""The kernel interface, through cffi (ABI mode, libc): ptrace and process_vm_readv.

Only what MappedTrace needs; every call checks its result and raises a typed
error naming the call and errno.
"""
from __future__ import annotations

import errno
import os
import struct

from cffi import FFI

from ..errors import NoSuchProcess, PermissionProblem, TargetFault, MappedTraceError

ffi = FFI()
ffi.cdef("""
long ptrace(int request, int pid, void *addr, void *data);
struct iovec { void *iov_base; size_t iov_len; };
ssize_t process_vm_readv(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                         const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
ssize_t process_vm_writev(int pid, const struct iovec *local_iov, unsigned long liovcnt,
                          const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
int waitpid(int pid, int *status, int options);
int tgkill(int tgid, int tid, int sig);
int kill(int pid, int sig);
int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
""")
libc = ffi.dlopen(None)
#: buffers that the kernel fills whole: no memset before the copy
_raw_new = ffi.new_allocator(should_clear_after_alloc=False)

# <sys/ptrace.h>, <linux/ptrace.h>
PTRACE_TRACEME = 0
PTRACE_PEEKDATA = 2
PTRACE_POKEDATA = 5
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_GETFPREGS = 14
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GETSIGMASK = 0x420a
PTRACE_SETSIGMASK = 0x420b

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_X86_XSTATE = 0x202

WALL = 0x40000000
WNOHANG = 1

USER_REGS_SIZE = 27 * 8
USER_FPREGS_SIZE = 512
#: upper bound of the XSAVE area (AMX tiles make it about 11 KiB)
XSTATE_MAX = 16384
#: most iovecs one process_vm_readv call takes (UIO_MAXIOV)
IOV_MAX = 1024

SYS_CLONE = 56
SYS_FORK = 57
SIGKILL = 9
SIGSTOP = 19
SIGTRAP = 5


def _raise(call: str, pid: int, err: int) -> None:
    msg = f"{call}({pid}): {os.strerror(err)}"
    if err == errno.ESRCH:
        raise NoSuchProcess(f"no such process or thread {pid} ({call})",
                            hint="check the PID; the process may have exited")
    if err == errno.EPERM:
        raise PermissionProblem(f"not permitted to trace {pid} ({call})",
                                hint="run as root or with CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0")
    raise MappedTraceError(msg)


def ptrace(request: int, pid: int, addr: int = 0, data=0) -> int:
    """Call ptrace; raise on error (PEEK requests are not used: use process_vm_readv)."""
    d = data if isinstance(data, ffi.CData) else ffi.cast("void *", data)
    ffi.errno = 0
    r = libc.ptrace(request, pid, ffi.cast("void *", addr), d)
    if r == -1 and ffi.errno != 0:
        _raise(f"ptrace[{request:#x}]", pid, ffi.errno)
    return r


def try_ptrace(request: int, pid: int, addr: int = 0, data=0) -> int:
    """ptrace that returns -errno instead of raising (for cleanup paths)."""
    d = data if isinstance(data, ffi.CData) else ffi.cast("void *", data)
    ffi.errno = 0
    r = libc.ptrace(request, pid, ffi.cast("void *", addr), d)
    if r == -1 and ffi.errno != 0:
        return -ffi.errno
    return r


#: ``si_code`` of a trap raised by the trap flag (single step)
TRAP_TRACE = 2


def stop_si_code(tid: int) -> int | None:
    """``si_code`` of the signal a ptrace-stopped thread is stopped for (None if unknown)."""
    buf = ffi.new("char[]", 128)                 # siginfo_t
    if try_ptrace(PTRACE_GETSIGINFO, tid, 0, buf) < 0:
        return None
    return int.from_bytes(bytes(ffi.buffer(buf, 12))[8:12], "little", signed=True)


def get_regs(tid: int) -> bytes:
    buf = ffi.new("char[]", USER_REGS_SIZE)
    ptrace(PTRACE_GETREGS, tid, 0, buf)
    return bytes(ffi.buffer(buf, USER_REGS_SIZE))


def set_regs(tid: int, raw: bytes) -> None:
    buf = ffi.new("char[]", raw)
    ptrace(PTRACE_SETREGS, tid, 0, buf)


def get_fpregs(tid: int) -> bytes:
    buf = ffi.new("char[]", USER_FPREGS_SIZE)
    ptrace(PTRACE_GETFPREGS, tid, 0, buf)
    return bytes(ffi.buffer(buf, USER_FPREGS_SIZE))


def get_regset(tid: int, nt: int, maxsize: int = 4096) -> bytes:
    buf = ffi.new("char[]", maxsize)
    iov = ffi.new("struct iovec *")
    iov.iov_base = buf
    iov.iov_len = maxsize
    ptrace(PTRACE_GETREGSET, tid, nt, iov)
    return bytes(ffi.buffer(buf, iov.iov_len))


def get_xstate(tid: int) -> bytes | None:
    """The ``NT_X86_XSTATE`` register set (XSAVE area), or None where refused."""
    try:
        return get_regset(tid, NT_X86_XSTATE, XSTATE_MAX)
    except MappedTraceError:
        return None


def get_sigmask(tid: int) -> int:
    """The blocked-signal mask of a stopped thread (bit ``n-1`` is signal ``n``)."""
    out = ffi.new("unsigned long long *")
    ptrace(PTRACE_GETSIGMASK, tid, 8, out)
    return int(out[0])


def set_sigmask(tid: int, mask: int) -> int:
    """Set the blocked-signal mask of a stopped thread; 0 or -errno (never raises)."""
    v = ffi.new("unsigned long long *", mask & ((1 << 64) - 1))
    return try_ptrace(PTRACE_SETSIGMASK, tid, 8, v)


def vm_write(pid: int, addr: int, data: bytes) -> None:
    """process_vm_writev of one range; raises TargetFault when short."""
    local = ffi.new("struct iovec *")
    remote = ffi.new("struct iovec *")
    buf = ffi.from_buffer(data)
    local.iov_base = buf
    local.iov_len = len(data)
    remote.iov_base = ffi.cast("void *", addr)
    remote.iov_len = len(data)
    ffi.errno = 0
    n = libc.process_vm_writev(pid, local, 1, remote, 1, 0)
    if n != len(data):
        if n < 0 and ffi.errno == errno.ESRCH:
            raise NoSuchProcess(f"process {pid} exited while being written")
        raise TargetFault(addr, len(data), f"cannot write {len(data)} bytes at {addr:#x} in process {pid}")


def set_options(tid: int, options: int) -> None:
    ptrace(PTRACE_SETOPTIONS, tid, 0, options)


def get_event_msg(tid: int) -> int:
    out = ffi.new("unsigned long *")
    ptrace(PTRACE_GETEVENTMSG, tid, 0, out)
    return int(out[0])


def tgkill(tgid: int, tid: int, sig: int) -> int:
    """tgkill(2); returns 0 or -errno (never raises)."""
    ffi.errno = 0
    r = libc.tgkill(tgid, tid, sig)
    return -ffi.errno if r == -1 else 0


def kill(pid: int, sig: int) -> int:
    """kill(2); returns 0 or -errno (never raises: used on cleanup paths)."""
    ffi.errno = 0
    r = libc.kill(pid, sig)
    return -ffi.errno if r == -1 else 0


def waitpid(pid: int, options: int = WALL) -> tuple[int, int]:
    """waitpid with EINTR retry; returns (pid, status)."""
    st = ffi.new("int *")
    while True:
        ffi.errno = 0
        r = libc.waitpid(pid, st, options)
        if r == -1:
            if ffi.errno == errno.EINTR:
                continue
            _raise("waitpid", pid, ffi.errno)
        return r, st[0]


def vm_read(pid: int, addr: int, size: int) -> bytes:
    """process_vm_readv of one range; raises TargetFault when short."""
    buf = _raw_new("char[]", size)
    local = ffi.new("struct iovec *")
    remote = ffi.new("struct iovec *")
    local.iov_base = buf
    local.iov_len = size
    remote.iov_base = ffi.cast("void *", addr)
    remote.iov_len = size
    ffi.errno = 0
    n = libc.process_vm_readv(pid, local, 1, remote, 1, 0)
    if n != size:
        err = ffi.errno
        if n < 0 and err == errno.ESRCH:
            raise NoSuchProcess(f"process {pid} exited while being read")
        if n < 0 and err == errno.EPERM:
            raise PermissionProblem(f"not permitted to read the memory of {pid}")
        raise TargetFault(addr, size)
    return bytes(ffi.buffer(buf, size))


def vm_read_into(pid: int, addr: int, size: int, out) -> int:
    """process_vm_readv into a writable buffer (bytearray / numpy array); returns bytes read."""
    local = ffi.new("struct iovec *")
    remote = ffi.new("struct iovec *")
    local.iov_base = ffi.from_buffer(out)
    local.iov_len = size
    remote.iov_base = ffi.cast("void *", addr)
    remote.iov_len = size
    n = libc.process_vm_readv(pid, local, 1, remote, 1, 0)
    return max(n, 0)


def vm_readv(pid: int, pieces: list[tuple[int, int, object, int]]) -> int:
    """Scatter-read many ranges in one process_vm_readv call.

    :param pieces: ``(remote_addr, size, out_buffer, out_offset)``; at most
        :data:`IOV_MAX` of them.
    :returns: bytes read; the kernel stops at the first unreadable range, so a
        short count tells the caller where to resume.
    :raises NoSuchProcess: the process is gone.
    """
    n = len(pieces)
    local = ffi.new("struct iovec[]", n)
    remote = ffi.new("struct iovec[]", n)
    keep = []
    for i, (addr, size, out, off) in enumerate(pieces):
        buf = ffi.from_buffer(out, require_writable=True)
        keep.append(buf)
        local[i].iov_base = buf + off
        local[i].iov_len = size
        remote[i].iov_base = ffi.cast("void *", addr)
        remote[i].iov_len = size
    ffi.errno = 0
    r = libc.process_vm_readv(pid, local, n, remote, n, 0)
    if r < 0:
        err = ffi.errno
        if err == errno.ESRCH:
            raise NoSuchProcess(f"process {pid} exited while being read")
        if err == errno.EPERM:
            raise PermissionProblem(f"not permitted to read the memory of {pid}")
        return 0
    return r


def _remote_iov(addrs, sizes):
    """An array of ``struct iovec`` (two 64-bit words each on x86-64) for the remote side."""
    import numpy as np
    iov = np.empty((len(addrs), 2), dtype=np.uint64)
    iov[:, 0] = addrs
    iov[:, 1] = sizes
    return iov


def _vm_rw(pid: int, write: bool, buf, addrs, sizes) -> int:
    """One ``process_vm_readv``/``writev`` per :data:`IOV_MAX` remote ranges, the local
    side one contiguous buffer; returns the bytes moved before the first short call."""
    iov = _remote_iov(addrs, sizes)
    base = ffi.from_buffer(buf, require_writable=not write)
    local = ffi.new("struct iovec *")
    call = libc.process_vm_writev if write else libc.process_vm_readv
    done = 0
    for lo in range(0, len(iov), IOV_MAX):
        part = iov[lo:lo + IOV_MAX]
        want = int(part[:, 1].sum())
        local.iov_base = base + done
        local.iov_len = want
        ffi.errno = 0
        r = call(pid, local, 1, ffi.cast("struct iovec *", ffi.from_buffer(part)), len(part), 0)
        if r < 0 and ffi.errno == errno.ESRCH:
            raise NoSuchProcess(f"process {pid} exited while being {'written' if write else 'read'}")
        if r < 0 and ffi.errno == errno.EPERM:
            raise PermissionProblem(f"not permitted to access the memory of {pid}")
        done += max(r, 0)
        if r != want:
            break
    return done


def _first_short(addrs, sizes, done: int) -> tuple[int, int]:
    for a, n in zip(addrs, sizes):
        if done < n:
            return int(a) + done, int(n) - done
        done -= n
    return int(addrs[0]), 0


def vm_writev(pid: int, pieces: list[tuple[int, bytes]]) -> None:
    """Gather-write many ranges ``(remote_addr, data)``: the data joined in one local
    buffer, :data:`IOV_MAX` remote ranges per ``process_vm_writev`` call (the caller
    merges adjacent ranges first).

    :raises TargetFault: a range could not be written whole (the ranges before it were).
    :raises NoSuchProcess: the process is gone.
    """
    if not pieces:
        return
    addrs = [a for a, _d in pieces]
    sizes = [len(d) for _a, d in pieces]
    data = b"".join(d for _a, d in pieces)
    done = _vm_rw(pid, True, data, addrs, sizes)
    if done != len(data):
        a, n = _first_short(addrs, sizes, done)
        raise TargetFault(a, n, f"cannot write {n} bytes at {a:#x} in process {pid}")


def vm_read_ranges(pid: int, addrs, sizes) -> bytes:
    """The bytes of many remote ranges, joined, read with :data:`IOV_MAX` ranges per
    ``process_vm_readv`` call into one local buffer.

    :raises TargetFault: a range could not be read whole.
    """
    total = int(sum(sizes))
    buf = bytearray(total)
    if total:
        done = _vm_rw(pid, False, buf, addrs, sizes)
        if done != total:
            a, n = _first_short(addrs, sizes, done)
            raise TargetFault(a, n, f"cannot read {n} bytes at {a:#x} in process {pid}")
    return bytes(buf)


def vm_read_words(pid: int, addrs) -> list[int]:
    """The 8-byte little-endian words at ``addrs`` (any order), one scatter read.

    :raises TargetFault: a word could not be read.
    """
    raw = vm_read_ranges(pid, addrs, [8] * len(addrs))
    return list(struct.unpack(f"<{len(addrs)}Q", raw))


# wait status helpers (<sys/wait.h>)
def WIFEXITED(s: int) -> bool: return (s & 0x7F) == 0
def WEXITSTATUS(s: int) -> int: return (s >> 8) & 0xFF
def WIFSIGNALED(s: int) -> bool: return ((s & 0x7F) + 1) >> 1 > 0 and (s & 0x7F) != 0x7F and (s & 0x7F) != 0
def WTERMSIG(s: int) -> int: return s & 0x7F
def WIFSTOPPED(s: int) -> bool: return (s & 0xFF) == 0x7F
def WSTOPSIG(s: int) -> int: return (s >> 8) & 0xFF
def EVENT(s: int) -> int: return (s >> 16) & 0xFFFF
