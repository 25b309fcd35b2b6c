"""``mappedtrace diff BEFORE AFTER``: growth between two snapshots of one process."""
from __future__ import annotations

import sys

import click

from ._analysis_opts import analyse_arg, open_private, output_path, print_warnings, roots_option


@click.command(help="Growth between two snapshot files of the same process (older first): by type, "
                    "by holder (the global, thread-local or frame that retains the new memory), objects "
                    "new, gone and kept, and suspects: the holders whose retained bytes grew, with the "
                    "object where the growth accumulates.")
@click.argument("before")
@click.argument("after")
@click.option("--json", "json_path", metavar="FILE", callback=output_path, help="Write the diff as JSON to FILE ('-': stdout).")
@click.option("--limit", default=15, show_default=True, type=click.IntRange(1), help="Rows per table.")
@roots_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
def command(before: str, after: str, json_path: str | None, limit: int, roots_mode: str,
            width: int | None) -> int:
    from ..analyses.diff import HeapState, check_same_process, diff
    from ..reporters import heap_report

    a = analyse_arg(before, roots_mode=roots_mode, leaks=False)
    b = analyse_arg(after, roots_mode=roots_mode, leaks=False)
    sa, sb = HeapState.of(a, before), HeapState.of(b, after)
    check_same_process(sa, sb)
    d = diff(sa, sb)
    if json_path != "-":
        heap_report.render_diff(d, sys.stdout, limit=limit, width=width)
    if json_path:
        with open_private(json_path) as f:
            heap_report.to_json(heap_report.diff_dict(d, limit), f)
    print_warnings(a.warnings + b.warnings)
    return 0
