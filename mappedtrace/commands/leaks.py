"""``mappedtrace leaks (PID | FILE) [--json FILE]``: leaks of a running process or a snapshot."""
from __future__ import annotations

import sys

import click

from ._analysis_opts import (LEAK_EXIT_CODE, analyse_arg, capture_option, max_memory_option, open_private,
                             output_path, print_warnings, remote_options, roots_option)


@click.command(help="Report the leaks of a running process (PID: paused only to capture it, "
                    "analysed on the copy while it runs on) or of a snapshot FILE.")
@click.argument("what")
@click.option("--json", "json_path", metavar="FILE", callback=output_path,
              help="Write the leak report as JSON to FILE ('-': stdout; a file: mode 0600).")
@click.option("--exitcode", default=LEAK_EXIT_CODE, show_default=True, type=int,
              help="Exit code when leaks are found.")
@roots_option
@capture_option
@remote_options
@max_memory_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
@click.option("--tree", is_flag=True,
              help="PID and all its descendants (a pre-fork server's master and workers): a report per "
                   "process and a summary; --json writes {\"processes\": [...], \"summary\": {...}}.")
def command(what: str, json_path: str | None, exitcode: int, roots_mode: str, capture_mode: str,
            width: int | None, tree: bool = False) -> int:
    from ..reporters import leaks_report

    if tree:
        from ._tree import leaks_tree
        return leaks_tree(what, json_path, exitcode, roots_mode, width)

    a = analyse_arg(what, capture_mode, roots_mode=roots_mode)
    if json_path != "-":
        leaks_report.render(a.leaks, sys.stdout, width=width)
    if json_path:
        with open_private(json_path) as f:
            leaks_report.to_json(a.leaks, f)
    print_warnings(a.warnings)
    return exitcode if a.leaks.summary["leaked_objects"] else 0
