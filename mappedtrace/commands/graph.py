"""``mappedtrace graph (PID | FILE) -o FILE.{json,dot}``: export the heap object graph."""
from __future__ import annotations

import click

from ._analysis_opts import analyse_arg, capture_option, print_warnings, roots_option
from ..errors import MappedTraceError


@click.command(help="Export the heap object graph (objects, edges, root edges, precision) "
                    "of a running process or a snapshot as JSON or Graphviz dot.")
@click.argument("what")
@click.option("-o", "--output", required=True, metavar="FILE.json|FILE.dot")
@roots_option
@capture_option
def command(what: str, output: str, roots_mode: str, capture_mode: str) -> int:
    if not output.endswith((".json", ".dot")):
        raise MappedTraceError(f"{output}: the output must end in .json or .dot")
    from ..reporters import graph_export

    a = analyse_arg(what, capture_mode, roots_mode=roots_mode, leaks=False)
    graph_export.export(a.graph, output)
    g = a.graph
    click.echo(f"wrote {output}: {len(g)} objects", err=True)
    if g.capture is not None:
        from ..reporters.leaks_report import capture_line
        click.echo(capture_line(g.capture), err=True)
    print_warnings(a.warnings)
    return 0
