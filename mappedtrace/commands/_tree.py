"""``--tree PID`` for ``leaks``, ``graph`` and ``snapshot``: the process and all its
descendants (a pre-fork server's master and workers), one at a time.

Each process is handled by the command's own per-process code, so each is
stopped for its own short pause while the others run.  A process that exits
during the check is reported as gone, not as an error for the others.
Memory that a parent and its children still share after fork (copy-on-write
pages not yet written) is simply read once per process.

Output files: ``-o`` names one file per process.  With ``{pid}`` in it, that
is replaced by the PID (``-o 'snap-{pid}.core'``); without it, ``.PID`` goes
before the last suffix (``-o server.json`` → ``server.1234.json``;
``-o snap`` → ``snap.1234``).  ``snapshot --tree`` also takes a directory
(an existing one, or a name ending in ``/``, then made with mode 0700):
``DIR/PID.core``.
"""
from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from ..errors import MappedTraceError
from ..target.proctree import ProcessInfo, alive, process_tree


@dataclass
class TreeEntry:
    """The outcome for one process: ``result`` or ``error`` (``gone`` when it exited)."""

    info: ProcessInfo
    result: Any = None
    error: str | None = None
    gone: bool = False

    def row(self) -> dict:
        d: dict = {"pid": self.info.pid, "ppid": self.info.ppid, "exe": self.info.exe}
        if self.error is not None:
            d["error"] = self.error
            d["gone"] = self.gone
        return d


def tree_pid(what: str) -> int:
    """The PID argument of a ``--tree`` run (a snapshot file has no process tree)."""
    if not what.isdigit() or int(what) <= 0:
        raise MappedTraceError(f"--tree needs the PID of a running process, not {what!r}",
                               hint="give the PID of the server's master process (ps -e --forest)")
    return int(what)


def output_for(pattern: str, pid: int, in_directory: str | None = None) -> str:
    """The output file of process ``pid`` (see the module docstring); ``in_directory``
    (e.g. ``"{pid}.core"``) names the file when ``pattern`` is a directory."""
    if in_directory and (pattern.endswith("/") or os.path.isdir(pattern)):
        return os.path.join(pattern, in_directory.replace("{pid}", str(pid)))
    if "{pid}" in pattern:
        return pattern.replace("{pid}", str(pid))
    head, tail = os.path.split(pattern)
    stem, dot, ext = tail.rpartition(".")
    name = f"{stem}.{pid}.{ext}" if dot and stem else f"{tail}.{pid}"
    return os.path.join(head, name)


def over_tree(pid: int, work: Callable[[ProcessInfo], Any], warnings: list[str]) -> list[TreeEntry]:
    """``work(info)`` for ``pid`` and each descendant (parents first).

    An error ends only that process's turn: it is ``gone`` when the process
    no longer exists (or is a zombie), else an ``error`` (an internal error
    too, unless ``--debug`` asks for its traceback).
    """
    entries: list[TreeEntry] = []
    for info in process_tree(pid, warnings):
        if not alive(info.pid):
            entries.append(TreeEntry(info, error=f"process {info.pid} exited before its turn", gone=True))
            continue
        try:
            entries.append(TreeEntry(info, work(info)))
        except Exception as e:          # noqa: BLE001 - one process's failure is not the others'
            from .. import cli
            if cli._debug and not isinstance(e, MappedTraceError):
                raise
            if not alive(info.pid):
                entries.append(TreeEntry(info, error=f"process {info.pid} exited during the check", gone=True))
            elif isinstance(e, MappedTraceError):
                entries.append(TreeEntry(info, error=e.message))
            else:
                entries.append(TreeEntry(info, error=f"internal error: {type(e).__name__}: {e} (--debug shows "
                                                     "the traceback)"))
    return entries


def _note(entries: list[TreeEntry], warnings: list[str]) -> None:
    from ._analysis_opts import print_warnings
    for e in entries:
        if e.error is not None and not e.gone:
            warnings.append(f"process {e.info.pid}: {e.error}")
    print_warnings(warnings)


def leaks_tree(what: str, json_path: str | None, exitcode: int, roots_mode: str, width: int | None) -> int:
    """``mappedtrace leaks --tree PID``: a leak report per process, then a summary.

    :returns: ``exitcode`` when any process leaks; else 2 when a process
        (not gone) could not be analysed; else 0
    """
    from ..reporters import leaks_report, tree_report
    from ._analysis_opts import analyse_arg, open_private, print_warnings

    pid = tree_pid(what)
    warnings: list[str] = []
    show = json_path != "-"

    def work(info: ProcessInfo) -> dict:
        a = analyse_arg(str(info.pid), roots_mode=roots_mode)
        if show:
            tree_report.render_header(info.pid, info.ppid, info.exe, sys.stdout, width=width)
            leaks_report.render(a.leaks, sys.stdout, width=width)
            sys.stdout.flush()
        print_warnings([f"process {info.pid}: {w}" for w in a.warnings])
        buf = io.StringIO()
        leaks_report.to_json(a.leaks, buf)
        return json.loads(buf.getvalue())

    entries = over_tree(pid, work, warnings)
    processes = _process_rows(entries)
    summary = tree_report.summary_counts(processes)
    reports = [p["report"]["summary"] for p in processes if "report" in p]
    summary.update(leaked_objects=sum(s["leaked_objects"] for s in reports),
                   leaked_bytes=sum(s["leaked_bytes"] for s in reports),
                   processes_with_leaks=sum(1 for s in reports if s["leaked_objects"]))
    if show:
        rows = [{**e.row(), **(e.result["summary"] if e.result else {})} for e in entries]
        tree_report.render_summary(rows, [("leaked_objects", "leaked"), ("leaked_bytes", "bytes"),
                                          ("reachable_objects", "reachable")], sys.stdout,
                                   title=f"process tree of {pid}: {summary['processes']} processes, "
                                         f"{summary['leaked_objects']} leaked objects", width=width)
    if json_path:
        with open_private(json_path) as f:
            tree_report.to_json(processes, summary, f)
    _note(entries, warnings)
    if summary["leaked_objects"]:
        return exitcode
    return 2 if summary["failed"] else 0


def _process_rows(entries) -> list[dict]:
    """One JSON row per process: who it is, and its report where it has one."""
    processes = []
    for e in entries:
        d = e.row()
        if e.result is not None:
            d["report"] = e.result
        processes.append(d)
    return processes


def graph_tree(what: str, output: str, roots_mode: str, export: Callable[[Any, str], None]) -> int:
    """``mappedtrace graph --tree PID -o PATTERN``: one graph file per process, then a summary."""
    from ..reporters import tree_report
    from ._analysis_opts import analyse_arg, print_warnings

    pid = tree_pid(what)
    warnings: list[str] = []

    def work(info: ProcessInfo) -> dict:
        path = output_for(output, info.pid)
        a = analyse_arg(str(info.pid), roots_mode=roots_mode, leaks=False)
        export(a.graph, path)
        click.echo(f"process {info.pid}: wrote {path}: {len(a.graph)} objects", err=True)
        print_warnings([f"process {info.pid}: {w}" for w in a.warnings])
        return {"file": path, "objects": len(a.graph)}

    entries = over_tree(pid, work, warnings)
    rows = [{**e.row(), **(e.result or {})} for e in entries]
    summary = tree_report.summary_counts(rows)
    tree_report.render_summary(rows, [("objects", "objects"), ("file", "file")], sys.stdout,
                               title=f"process tree of {pid}: {summary['processes']} processes")
    _note(entries, warnings)
    return 2 if summary["failed"] else 0


def snapshot_tree(pid: int, output: str, as_json: bool, one: Callable[[int, str], dict]) -> int:
    """``mappedtrace snapshot --tree PID -o PATTERN``: ``one(pid, path)`` (the command's
    per-process capture, returning its report dict) for each process, then a summary."""
    from ..reporters import snapshot_report, tree_report

    warnings: list[str] = []
    if output.endswith("/") and not os.path.isdir(output):
        try:
            os.mkdir(output, 0o700)         # private: snapshots hold the processes' memory
        except OSError as e:
            raise MappedTraceError(f"cannot create the directory {output}: {e.strerror}",
                                   hint="give an existing directory, or one whose parent exists") from None

    def work(info: ProcessInfo) -> dict:
        d = one(info.pid, output_for(output, info.pid, "{pid}.core"))
        snapshot_report.render_warnings(d, sys.stderr)
        if not as_json:
            tree_report.render_header(info.pid, info.ppid, info.exe, sys.stdout)
            snapshot_report.render_text(d, sys.stdout)
        return d

    entries = over_tree(tree_pid(str(pid)), work, warnings)
    processes = _process_rows(entries)
    summary = tree_report.summary_counts(processes)
    summary["file_bytes"] = sum(p["report"]["file_bytes"] for p in processes if "report" in p)
    if as_json:
        tree_report.to_json(processes, summary, sys.stdout)
    else:
        rows = [{**e.row(), **({"file": e.result["file"], "pause_ms": f"{e.result['pause_ns'] / 1e6:.1f}"}
                               if e.result else {})} for e in entries]
        tree_report.render_summary(rows, [("pause_ms", "pause ms"), ("file", "file")], sys.stdout,
                                   title=f"process tree of {pid}: {summary['processes']} processes")
    _note(entries, warnings)
    return 2 if summary["failed"] else 0
