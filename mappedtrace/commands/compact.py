"""``mappedtrace compact PID [--dry-run] [--json] [--trim-only] [--max-occupancy F] [--recover]``.

Packs the live movable objects of a fragmented glibc heap off its sparsely
used pages, then has the program's ``malloc_trim(0)`` give those pages back
(:mod:`mappedtrace.relocate.compact`).  ``--trim-only`` is the baseline: only
the program's ``malloc_trim(0)``, measured the same way.  A compaction is a
relocation pass: killed midway, the process is left stopped, and the next
``compact``/``relocate`` of it (or ``--recover``) rolls the pass back or
finishes it.

Exit codes: 0 done · 2 a one-line error (no such process, the allocator busy:
nothing written, or rolled back).
"""
from __future__ import annotations

import json
import sys

import click

from ..errors import MappedTraceError


@click.command(help="Pack a running process's heap so that whole pages go back to the system: move the "
                    "objects of sparsely used pages into the holes of the others, then malloc_trim(0) "
                    "(--trim-only: just malloc_trim, the baseline).")
@click.argument("pid", type=int)
@click.option("--dry-run", is_flag=True, help="Report the pages and objects a pass would move; write nothing.")
@click.option("--trim-only", is_flag=True, help="Only call the program's malloc_trim(0) (the baseline).")
@click.option("--max-occupancy", type=float, default=0.5, show_default=True, metavar="F",
              help="Empty a page only when its in-use bytes are at most this share of it.")
@click.option("--recover", is_flag=True, help="Only finish or roll back a pass whose relocator died.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(pid: int, dry_run: bool, trim_only: bool, max_occupancy: float, recover: bool, as_json: bool) -> int:
    from ..relocate.compact import compact
    from ..reporters import relocate_report

    if pid <= 0:
        raise MappedTraceError(f"invalid PID {pid}", hint="give the PID of a running process (ps -e)")
    if not 0 < max_occupancy <= 1:
        raise MappedTraceError(f"--max-occupancy must be in (0, 1], not {max_occupancy}")
    if recover:
        from .relocate import recover_and_report
        return recover_and_report(pid, as_json)
    res = compact(pid, dry_run=dry_run, max_occupancy=max_occupancy, trim_only=trim_only)
    d = res.to_dict()
    if as_json:
        json.dump(d, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        relocate_report.render_compaction(d, sys.stdout)
    for w in res.warnings:
        print(f"mappedtrace: warning: {w}", file=sys.stderr)
    return 0
