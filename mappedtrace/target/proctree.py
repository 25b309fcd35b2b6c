"""A process and its descendants, from ``/proc`` (``--tree``: a pre-fork server's
master and workers).

Children come from ``/proc/PID/task/TID/children`` (every thread's, since a
thread may have forked); a kernel built without ``CONFIG_PROC_CHILDREN`` has
no such file, and then ``/proc/*/stat`` is scanned for parent PIDs.  Both are
bounded (:data:`MAX_PROCESSES`, :data:`MAX_PROC_ENTRIES`).  The tree is a
snapshot of one moment: a process forked after it was listed is not in it,
and one that exits afterwards is found gone when its turn comes
(:func:`alive`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import NoSuchProcess

#: processes in one tree at most (the rest are left out, with a warning)
MAX_PROCESSES = 4096
#: /proc entries scanned for parent PIDs when the children files are missing
MAX_PROC_ENTRIES = 1 << 20


@dataclass(frozen=True)
class ProcessInfo:
    """One process of the tree: ``exe`` is ``/proc/PID/exe``'s target ("" if unreadable)."""

    pid: int
    ppid: int
    exe: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) from ``/proc/PID/stat``, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'
    rest = raw[raw.rfind(b")") + 2:].split()
    if len(rest) < 2:
        return None
    try:
        return rest[0].decode("ascii", "replace"), int(rest[1])
    except ValueError:
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is neither a zombie nor dead."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x")


def process_info(pid: int) -> ProcessInfo | None:
    """The :class:`ProcessInfo` of ``pid``, or None when it is gone."""
    st = _stat(pid)
    if st is None:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return ProcessInfo(pid, st[1], exe)


def _children_files(pid: int) -> list[int] | None:
    """Children of ``pid`` from its threads' ``children`` files; None when the kernel has none."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    seen_file = False
    for tid in tids[:MAX_PROCESSES]:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                data = f.read(1 << 20)
        except FileNotFoundError:
            continue
        except OSError:
            seen_file = True            # the file exists (the thread may have gone meanwhile)
            continue
        seen_file = True
        out += [int(x) for x in data.split() if x.isdigit()]
    return out if seen_file else None


def _ppid_index() -> dict[int, list[int]]:
    """parent PID → child PIDs, by scanning ``/proc/*/stat`` (bounded)."""
    index: dict[int, list[int]] = {}
    with os.scandir("/proc") as it:
        for n, e in enumerate(it):
            if n >= MAX_PROC_ENTRIES:
                break
            if not e.name.isdigit():
                continue
            st = _stat(int(e.name))
            if st is not None:
                index.setdefault(st[1], []).append(int(e.name))
    return index


def process_tree(pid: int, warnings: list[str] | None = None) -> list[ProcessInfo]:
    """``pid`` and all its descendants, parents before children (breadth first).

    :param warnings: collects a note when the tree is cut at :data:`MAX_PROCESSES`
    :raises NoSuchProcess: ``pid`` does not exist
    """
    root = process_info(pid)
    if root is None:
        raise NoSuchProcess(f"no process with PID {pid}", hint="check the PID (ps -e)")
    out = [root]
    seen = {pid}
    index: dict[int, list[int]] | None = None
    i = 0
    while i < len(out):
        parent = out[i].pid
        i += 1
        kids = _children_files(parent)
        if kids is None:                # no CONFIG_PROC_CHILDREN: parent PIDs from /proc/*/stat
            if index is None:
                index = _ppid_index()
            kids = index.get(parent, [])
        for k in sorted(set(kids)):
            if k in seen:
                continue
            if len(out) >= MAX_PROCESSES:
                if warnings is not None:
                    warnings.append(f"process tree of {pid}: more than {MAX_PROCESSES} processes; the rest "
                                    "are left out")
                return out
            info = process_info(k)
            if info is not None and info.ppid == parent:
                seen.add(k)
                out.append(info)
    return out
