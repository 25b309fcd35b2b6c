"""``mappedtrace watch PID --every 30s [--count N]``: growth of a live process as it happens."""
from __future__ import annotations

import re
import sys
import time

import click

from ._analysis_opts import open_private, output_path, print_warnings, roots_option
from ..errors import MappedTraceError


def _seconds(s: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", s)
    if not m:
        raise MappedTraceError(f"--every {s}: not a duration", hint="e.g. 500ms, 30s, 5m, 1h")
    v = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if v <= 0:
        raise MappedTraceError(f"--every {s}: must be more than zero")
    return v


@click.command(help="Watch a running process: every interval, a fork snapshot (a pause of "
                    "milliseconds) is analysed while the process runs on, and the growth since the "
                    "first snapshot is printed: by type, by holder, and the suspects.")
@click.argument("pid", type=int)
@click.option("--every", "every", default="30s", show_default=True, help="Interval: 500ms, 30s, 5m…")
@click.option("--count", default=0, type=click.IntRange(0), help="Snapshots after the first (0: until interrupted).")
@click.option("--json", "json_path", metavar="FILE", callback=output_path,
              help="Write the last diff as JSON to FILE ('-': stdout, one document per interval).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1), help="Rows per table.")
@roots_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
def command(pid: int, every: str, count: int, json_path: str | None, limit: int, roots_mode: str,
            width: int | None) -> int:
    from ..analyses.diff import HeapState, diff
    from ..reporters import heap_report
    from ..session import analyse
    from ..target.capture import snapshot_process

    interval = _seconds(every)

    def state(k: int) -> HeapState:
        with snapshot_process(pid, "fork") as ct:
            a = analyse(ct, roots_mode=roots_mode, leaks=False)
            pause = ct.meta.get("pause_ns", 0) / 1e6
            print_warnings(a.warnings, limit=5)
            click.echo(f"snapshot {k}: {len(a.graph)} objects, pause {pause:.1f} ms (fork)", err=True)
            return HeapState.of(a, f"snapshot {k}")

    first = state(0)
    k = 0
    while count == 0 or k < count:
        time.sleep(interval)
        k += 1
        cur = state(k)
        d = diff(first, cur)
        if json_path != "-":
            click.echo(f"— growth since snapshot 0 ({k * interval:g} s) —")
            heap_report.render_diff(d, sys.stdout, limit=limit, width=width)
        if json_path == "-":
            heap_report.to_json(heap_report.diff_dict(d, limit), sys.stdout)
        elif json_path:
            with open_private(json_path) as f:
                heap_report.to_json(heap_report.diff_dict(d, limit), f)
        sys.stdout.flush()
    return 0
