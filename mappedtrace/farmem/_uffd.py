"""userfaultfd from outside the process that owns it: pidfd_getfd, the ioctls, the messages.

The descriptor is created inside the target by the runtime helper
(``runtime/mtfarmem.c``); the pager takes a duplicate with ``pidfd_open`` +
``pidfd_getfd`` and works on the target's address space through it (an
ioctl on a userfaultfd acts on the mm that created it).  Layouts from
``<linux/userfaultfd.h>`` (UFFD_API 0xAA), declared once here.
"""
from __future__ import annotations

import errno
import os
import struct

from cffi import FFI

from ..errors import MappedTraceError, NoSuchProcess, PermissionProblem

ffi = FFI()
ffi.cdef("""
long syscall(long number, ...);
int ioctl(int fd, unsigned long request, void *arg);
struct uffdio_range { uint64_t start, len; };
struct uffdio_register { struct uffdio_range range; uint64_t mode, ioctls; };
struct uffdio_copy { uint64_t dst, src, len, mode; int64_t copy; };
struct uffdio_writeprotect { struct uffdio_range range; uint64_t mode; };
""")
libc = ffi.dlopen(None)

SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
PAGE = 4096


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xAA << 8) | nr


_IOR, _IOWR = 2, 3
UFFDIO_REGISTER = _ioc(_IOWR, 0x00, ffi.sizeof("struct uffdio_register"))
UFFDIO_UNREGISTER = _ioc(_IOR, 0x01, ffi.sizeof("struct uffdio_range"))
UFFDIO_WAKE = _ioc(_IOR, 0x02, ffi.sizeof("struct uffdio_range"))
UFFDIO_COPY = _ioc(_IOWR, 0x03, ffi.sizeof("struct uffdio_copy"))
UFFDIO_WRITEPROTECT = _ioc(_IOWR, 0x06, ffi.sizeof("struct uffdio_writeprotect"))

REGISTER_MODE_MISSING = 1
REGISTER_MODE_WP = 2
COPY_MODE_DONTWAKE = 1
WP_MODE_WP = 1
WP_MODE_DONTWAKE = 2

#: struct uffd_msg: event, 3 reserved, then a 24-byte union read as three u64
MSG = struct.Struct("<BBHIQQQ")
EVENT_PAGEFAULT, EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP = 0x12, 0x13, 0x14, 0x15, 0x16
PAGEFAULT_FLAG_WRITE, PAGEFAULT_FLAG_WP = 1, 2

FEATURE_EVENT_FORK = 1 << 1         # the program's fork: the child's pages are put back (_serve.c)
FEATURE_EVENT_REMAP = 1 << 2
FEATURE_EVENT_REMOVE = 1 << 3
FEATURE_EVENT_UNMAP = 1 << 6
FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
FEATURE_THREAD_ID = 1 << 8           # optional: the pager tells its own reads' faults apart
#: what the pager needs from the helper's descriptor to keep the program's memory right
NEEDED_FEATURES = {FEATURE_EVENT_REMAP: "EVENT_REMAP", FEATURE_EVENT_REMOVE: "EVENT_REMOVE",
                   FEATURE_EVENT_UNMAP: "EVENT_UNMAP", FEATURE_PAGEFAULT_FLAG_WP: "PAGEFAULT_FLAG_WP",
                   FEATURE_EVENT_FORK: "EVENT_FORK"}


class UffdError(MappedTraceError):
    """A userfaultfd operation failed; ``errno`` says why."""

    def __init__(self, op: str, err: int, where: str = ""):
        super().__init__(f"{op}{' ' + where if where else ''}: {os.strerror(err)}")
        self.errno = err


def take_fd(pid: int, fdnum: int) -> int:
    """A duplicate of descriptor ``fdnum`` of process ``pid`` in this process.

    :raises NoSuchProcess: ``pid`` is gone
    :raises PermissionProblem: the kernel refused (needs ptrace access to ``pid``)
    """
    ffi.errno = 0
    pidfd = libc.syscall(SYS_PIDFD_OPEN, ffi.cast("int", pid), ffi.cast("unsigned int", 0))
    if pidfd < 0:
        err = ffi.errno
        if err == errno.ESRCH:
            raise NoSuchProcess(f"no process {pid}")
        raise PermissionProblem(f"pidfd_open({pid}): {os.strerror(err)}")
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, ffi.cast("int", pidfd), ffi.cast("int", fdnum),
                          ffi.cast("unsigned int", 0))
        if fd < 0:
            err = ffi.errno
            if err == errno.ESRCH:
                raise NoSuchProcess(f"process {pid} exited")
            raise PermissionProblem(f"pidfd_getfd({pid}, fd {fdnum}): {os.strerror(err)}",
                                    hint="taking another process's descriptor needs ptrace access to it (root "
                                         "or CAP_SYS_PTRACE)")
        return int(fd)
    finally:
        os.close(pidfd)


class Uffd:
    """The pager's duplicate of the target's userfaultfd."""

    # The argument structs are made per call: the fault thread, the evictor and detach call
    # these at the same time, and a shared struct would mix one call's fields into another's.

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def register(self, start: int, length: int, mode: int) -> None:
        r = ffi.new("struct uffdio_register *")
        r.range.start, r.range.len, r.mode = start, length, mode
        if libc.ioctl(self.fd, UFFDIO_REGISTER, r) < 0:
            raise UffdError("UFFDIO_REGISTER", ffi.errno, f"{start:#x}+{length:#x}")

    def unregister(self, start: int, length: int) -> None:
        rng = ffi.new("struct uffdio_range *", (start, length))
        if libc.ioctl(self.fd, UFFDIO_UNREGISTER, rng) < 0:
            raise UffdError("UFFDIO_UNREGISTER", ffi.errno, f"{start:#x}+{length:#x}")

    def wake(self, start: int, length: int) -> None:
        rng = ffi.new("struct uffdio_range *", (start, length))
        libc.ioctl(self.fd, UFFDIO_WAKE, rng)      # nothing to wake is not an error

    def copy(self, dst: int, src_cdata, length: int) -> int:
        """UFFDIO_COPY ``length`` bytes to ``dst``; returns 0 or the errno
        (EEXIST: already there, the waiter is woken by the caller; ENOENT/ESRCH:
        the range or the process went away)."""
        c = ffi.new("struct uffdio_copy *")
        c.dst, c.src, c.len, c.mode, c.copy = dst, int(ffi.cast("uintptr_t", src_cdata)), length, 0, 0
        if libc.ioctl(self.fd, UFFDIO_COPY, c) < 0:
            return ffi.errno or errno.EIO
        return 0

    def writeprotect(self, start: int, length: int, protect: bool, wake: bool = True) -> int:
        """Set or clear write protection of resident pages; returns 0 or the errno."""
        w = ffi.new("struct uffdio_writeprotect *")
        w.range.start, w.range.len = start, length
        # the kernel takes DONTWAKE only when clearing the protection
        w.mode = WP_MODE_WP if protect else (0 if wake else WP_MODE_DONTWAKE)
        if libc.ioctl(self.fd, UFFDIO_WRITEPROTECT, w) < 0:
            return ffi.errno or errno.EIO
        return 0
