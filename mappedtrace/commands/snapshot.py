"""``mappedtrace snapshot PID -o FILE``: stop, settle, capture, write a core file.

Exit codes: 0 written · 2 a one-line error (no such process, zombie, no
permission, the process exited mid-capture, an unwritable file).
"""
from __future__ import annotations

import os
import sys
import time

import click

from ..errors import MappedTraceError
from ..fileio import check_output
from ._analysis_opts import bundle_option, remote_arg, remote_options


class _LazyProgress:
    """A rich progress bar on stderr that appears only once a capture takes a moment."""

    DELAY_NS = 300_000_000

    def __init__(self) -> None:
        self.t0 = time.perf_counter_ns()
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter_ns() - self.t0 < self.DELAY_NS or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
            self.bar = Progress("capturing", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("capture", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command(help="Write a core-file snapshot of a running process.")
@click.argument("pid", type=int)
@click.option("-o", "--output", required=True, type=str,
              help="Snapshot file to write (mode 0600); with --tree a pattern or a directory.")
@click.option("--mode", type=click.Choice(["stop-copy", "fork"]), default="stop-copy", show_default=True,
              help="stop-copy: copy while stopped; fork: copy-on-write child, shortest pause.")
@click.option("--backend", type=click.Choice(["ptrace", "lldb"]), default="ptrace", show_default=True)
@click.option("--settle/--no-settle", default=False, show_default=True,
              help="Single-step threads stopped inside instrumented code to the nearest map point, so "
                   "their top frames are exact.  Off by default: if this command is SIGKILLed while a "
                   "thread sits in a single-step trap, the kernel delivers that SIGTRAP after the "
                   "tracer is gone and the target dies.  Without it such top frames are scanned "
                   "conservatively (and marked unsettled).")
@click.option("--max-steps", type=click.IntRange(0, 10_000_000), default=20000, show_default=True,
              help="Bound on single-steps per thread while settling.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--tree", is_flag=True,
              help="PID and all its descendants, each with its own pause: one file per process, -o a "
                   "pattern ('{pid}' is replaced by the PID, else '.PID' goes before the suffix) or a directory "
                   "(DIR/PID.core), and a summary.")
@remote_options
@bundle_option
def command(pid: int, output: str, mode: str, backend: str, settle: bool, max_steps: int,
            as_json: bool, tree: bool = False) -> int:
    from ..reporters import snapshot_report

    if pid <= 0:
        raise MappedTraceError(f"invalid PID {pid}", hint="give the PID of a running process (ps -e)")
    if not tree or not (output.endswith("/") or os.path.isdir(output)):
        check_output(output)             # a directory is an answer only for --tree
    if tree:
        from ._tree import snapshot_tree
        return snapshot_tree(pid, output, as_json,
                             lambda p, out: snapshot_one(p, out, mode, backend, settle, max_steps))
    d = snapshot_one(pid, output, mode, backend, settle, max_steps)
    snapshot_report.render_warnings(d, sys.stderr)
    if as_json:
        snapshot_report.render_json(d, sys.stdout)
    else:
        snapshot_report.render_text(d, sys.stdout)
    return 0


def snapshot_one(pid: int, output: str, mode: str, backend: str, settle: bool, max_steps: int) -> dict:
    """Capture ``pid`` and write its snapshot to ``output``; returns the report dict
    (:func:`~mappedtrace.reporters.snapshot_report.snapshot_to_dict`)."""
    from ..reporters import snapshot_report
    from ..target.core import write_core

    progress = _LazyProgress()
    remote = remote_arg("remote")
    try:
        if remote:
            from ..target.remote import attach_remote, capture_remote
            # fork: a copy-on-write child on the far side (gdbserver; elsewhere stop-copy, said why)
            rt = attach_remote(remote, pid, sysroot=remote_arg("sysroot"), fork_events=mode == "fork")
            try:
                if settle:
                    from ..target.settle import settle_remote
                    settle_remote(rt, max_steps=max_steps)
                target = capture_remote(rt, mode=mode)
            finally:
                rt.close()
        elif backend == "lldb":
            if mode != "stop-copy":
                raise MappedTraceError("--mode fork needs the ptrace backend", hint="use --backend ptrace")
            from ..target.lldb_backend import snapshot_lldb
            target = snapshot_lldb(pid, settle=settle, max_steps=max_steps)
        else:
            from ..target.capture import snapshot_process
            target = snapshot_process(pid, mode, settle=settle, max_steps=max_steps,
                                      progress=progress)
    finally:
        progress.close()
    try:
        if remote_arg("bundle"):
            from ..target.bundle import write_bundle
            nbytes, _ = write_bundle(target, output)
        else:
            nbytes = write_core(target, output)
        d = snapshot_report.snapshot_to_dict(target, output, nbytes)
    finally:
        target.close()
    return d
