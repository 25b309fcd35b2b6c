"""Files MappedTrace writes, and files it opens because an input names them.

Every report, graph and snapshot names addresses and memory contents, so
every file the tool writes goes through :func:`write_private`: an unnamed
file (``O_TMPFILE``, or a hidden ``mkstemp`` name where the file system has
no unnamed files), mode 0600, in the destination's directory, given the final
name only when complete.  A
symlink planted at the final name is replaced, not followed; a file that was
there before (another mode, another owner) is replaced by ours; a writer that
fails half-way leaves the old file as it was and no temporary behind.

Files an input names (a snapshot given on the command line, the executable
and the mapped binaries a snapshot's note lists) are opened with
:func:`open_regular`: anything but a regular file — a FIFO whose open or read
would block forever, a device, a directory — is refused before a byte is read.

This module sits beside :mod:`mappedtrace.errors` at the bottom of the layers.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
import tempfile
from typing import IO, Iterator

from .errors import BadData, MappedTraceError, PermissionProblem

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a FIFO" …)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str) -> str | None:
    """Why ``path`` is not a regular file to read ("a FIFO" …), or None when it
    is one.  Symlinks are followed; a missing file gives None (the caller's open
    says so)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return None if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)


def check_regular(path: str, what: str = "", where: str | None = None, offset: int | None = None) -> None:
    """Raise :class:`BadData` unless ``path`` is a regular file (or missing).

    :param what: what the file is to the caller ("the executable"), for the message
    :param where: the file and offset that named ``path`` (a snapshot's note)
    """
    why = not_regular(path)
    if why is not None:
        _refuse(path, why, what, where, offset)


def _refuse(path: str, why: str, what: str, where: str | None = None, offset: int | None = None) -> None:
    if where is None:       # the message starts with the path: "PATH: the snapshot is a FIFO …"
        name = what or "it"
    else:
        name = f"{what} {path}" if what else path
    raise BadData(where or path, offset, f"{name} is {why}, not a regular file",
                  hint="only regular files are read (a FIFO or a device could block or change on reading)")


def open_regular(path: str, what: str = "") -> IO[bytes]:
    """Open ``path`` for reading in binary, only if it is a regular file.

    The file is checked by name first (so a device is never opened: opening
    some has side effects), then opened with ``O_NONBLOCK`` (a FIFO swapped in
    meanwhile does not block the open) and checked again on the descriptor.

    :raises BadData: not a regular file.
    :raises OSError: the open failed (missing, permission): callers map it.
    """
    check_regular(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _refuse(path, file_kind(st.st_mode), what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_output(path: str) -> None:
    """Check, before any work, that :func:`write_private` can put a file at ``path``.

    :raises MappedTraceError: ``path`` is a directory, its directory does not
        exist or is not one (exit code 2, like every usage error).
    """
    if path == "-":
        return
    if not path:
        raise MappedTraceError("the output file name is empty", hint="give a file name, or '-' for stdout")
    if path.endswith("/") or os.path.isdir(path):
        raise MappedTraceError(f"{path}: is a directory", hint="name a file to write, not a directory")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(d):
        raise MappedTraceError(f"{path}: directory {d} does not exist", hint="create it first, or write elsewhere")
    if not os.path.isdir(d):
        raise MappedTraceError(f"{path}: {d} is not a directory")


@contextlib.contextmanager
def write_private(path: str, *, binary: bool = False, buffering: int = -1) -> Iterator[IO]:
    """A stream to write ``path`` privately (mode 0600) and atomically.

    ``"-"`` gives stdout (left open).  Otherwise the bytes go to an unnamed
    file (``O_TMPFILE``) where the file system has them, else to a hidden
    file with an unpredictable name (``mkstemp``), so nobody can block or
    redirect the write by planting names.  When the ``with`` block ends
    without an exception the file gets ``path``: linked in place at once when
    the name is new, else through a hidden name and an atomic rename.  On an
    exception ``path`` is untouched; a writer killed midway leaves nothing
    under ``path`` (and, with ``O_TMPFILE``, nothing at all).

    :raises MappedTraceError: ``path`` cannot be created or written (one line,
        naming the file); :class:`PermissionProblem` when the kernel refuses.
    """
    if path == "-":
        out = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
        return
    check_output(path)
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    named: str | None = None
    try:
        try:
            fd = os.open(d, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            fd, named = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=d)
    except PermissionError:
        raise PermissionProblem(f"cannot create {path}: permission denied") from None
    except OSError as e:
        raise MappedTraceError(f"cannot create {path}: {e.strerror}") from None
    try:
        try:
            f = os.fdopen(fd, "wb" if binary else "w", buffering=buffering)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o600)
            if named is None:
                try:        # a new name: linked in place at once, nothing else ever named
                    _link_fd(f.fileno(), path)
                    return
                except FileExistsError:
                    # replacing a file: a hidden name, then the atomic rename (a
                    # writer killed between the two leaves that complete file)
                    named = os.path.join(d, f".{base}.{secrets.token_hex(8)}.tmp")
                    _link_fd(f.fileno(), named)
        os.replace(named, path)
        named = None
    except OSError as e:
        if isinstance(e, PermissionError):
            raise PermissionProblem(f"cannot write {path}: permission denied") from None
        raise MappedTraceError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if named is not None:
            _unlink(named)


def _link_fd(fd: int, path: str) -> None:
    """Give the open file ``fd`` (an ``O_TMPFILE``) the name ``path``: linkat
    of ``/proc/self/fd/FD`` with ``AT_SYMLINK_FOLLOW``.  (``os.link`` calls
    plain link(2), which would link the /proc symlink itself, unless a
    directory fd is given: then it calls linkat with the follow flag.)"""
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", os.path.basename(path), dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
