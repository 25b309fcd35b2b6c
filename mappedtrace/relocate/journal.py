"""The journal of one relocation pass: JSON lines, mode 0600, one file per process.

Created unnamed (``O_TMPFILE``) and linked under its name once its first record
is written (:func:`mappedtrace.fileio._link_fd`), so a journal that exists is
never empty; then appended to.  No fsync: the journal must outlive the
relocator (a SIGKILL keeps what ``write`` took), not the machine (a crash
kills the target too).

Records (key ``t``): ``begin`` (pid, start time, whether the process was
stopped before), ``borrow``/``release`` (a thread borrowed for calls),
``scratch``/``unscratch`` (the batch mapping, named before it is made),
``batch``/``batch-end`` (a batch of injected allocator calls, before it runs,
and each call's result), ``hold``, ``poke``/``unpoke``, ``plan`` (copies and
every word to rewrite, with old and new value), ``commit`` (every write made),
``done``.  A file under the same name with a
different process start time belongs to a process that is gone: replaced.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile

from ..errors import MappedTraceError, PermissionProblem
from ..fileio import _link_fd

ENV_DIR = "MAPPEDTRACE_RELOCATE_DIR"
#: bound on a journal's records read back (a pass writes a few per batch, per refused destination, and the plan)
MAX_RECORDS = 10_000_000


def journal_dir() -> str:
    d = os.environ.get(ENV_DIR) or os.path.join(tempfile.gettempdir(), "mappedtrace-relocate")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError as e:
        raise MappedTraceError(f"cannot create the journal directory {d}: {e.strerror}",
                               hint=f"set {ENV_DIR} to a writable directory") from None
    # a directory someone else owns or may write to could lose or swap our journal
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise MappedTraceError(f"the journal directory {d} is not private (owner {st.st_uid}, mode "
                               f"{st.st_mode & 0o777:o})", hint=f"remove it, or set {ENV_DIR} to a directory of yours")
    return d


def start_time(pid: int) -> int:
    """The process's start time (``/proc/PID/stat`` field 22): names one incarnation of a PID."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2:].split()[19])


def journal_path(pid: int) -> str:
    return os.path.join(journal_dir(), f"{pid}.journal")


class Journal:
    """An open journal being written."""

    def __init__(self, pid: int, first: dict):
        self.path = journal_path(pid)
        d = os.path.dirname(self.path)
        try:
            try:
                self.fd = os.open(d, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
                unnamed = True
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self.fd = os.open(self.path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                                  | os.O_NOFOLLOW, 0o600)
                unnamed = False
            self.add(first)
            if os.path.lexists(self.path):
                os.unlink(self.path)     # a finished or stale journal (load() said so)
            if unnamed:
                _link_fd(self.fd, self.path)
            else:
                os.rename(self.path + ".new", self.path)
        except PermissionError:
            raise PermissionProblem(f"cannot write the journal {self.path}: permission denied") from None
        except OSError as e:
            raise MappedTraceError(f"cannot write the journal {self.path}: {e.strerror}") from None

    @classmethod
    def reopen(cls, pid: int) -> "Journal":
        """The unfinished journal of ``pid``, opened to append (a recovery's own calls)."""
        self = cls.__new__(cls)
        self.path = journal_path(pid)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise MappedTraceError(f"cannot append to the journal {self.path}: {e.strerror}") from None
        return self

    def add(self, rec: dict) -> None:
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if os.write(self.fd, data) != len(data):
            raise MappedTraceError(f"short write to the journal {self.path}")

    def finish(self) -> None:
        """The pass is over: the journal goes."""
        os.close(self.fd)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def load(pid: int) -> list[dict] | None:
    """The records of ``pid``'s unfinished journal, or None (none, finished, or
    another incarnation's).  A torn last line (killed mid-write) is dropped.

    :raises MappedTraceError: the journal is not ours to trust (not a regular
        file owned by us with mode 0600) or not JSON.
    """
    path = journal_path(pid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MappedTraceError(f"cannot open the journal {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise MappedTraceError(f"{path}: not a private journal of this user (mode {st.st_mode & 0o777:o})",
                                   hint="remove it if it is not a relocation journal")
        lines = f.read().split(b"\n")
    recs = []
    for i, line in enumerate(lines[:MAX_RECORDS]):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1 or not any(x.strip() for x in lines[i + 1:]):
                break       # torn last record
            raise MappedTraceError(f"{path}: line {i + 1} is not JSON", hint="the journal is damaged") from None
    if not recs or recs[0].get("t") != "begin" or recs[0].get("pid") != pid:
        raise MappedTraceError(f"{path}: not a relocation journal of process {pid}")
    if recs[0].get("start") != start_time(pid) or any(r.get("t") == "done" for r in recs):
        return None
    return recs
