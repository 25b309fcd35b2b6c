"""``mappedtrace graph (PID | FILE) -o FILE.{json,dot}``: export the heap object graph."""
from __future__ import annotations

import os

import click

from ._analysis_opts import (analyse_arg, capture_option, max_memory_option, output_path, print_warnings,
                             remote_options, roots_option)
from ..errors import MappedTraceError


def _output(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An existing NAME.parquet directory is replaced (the tables are a directory)."""
    if value.endswith(".parquet") and os.path.isdir(value) and not os.path.islink(value):
        return value
    return output_path(ctx, param, value)


@click.command(help="Export the heap object graph (objects, edges, root edges, precision) "
                    "of a running process or a snapshot as JSON or Graphviz dot, or as tables "
                    "(objects, edges, roots, root_edges, types, fields; see 'mappedtrace query'): "
                    "NAME.parquet (a directory, one Parquet file per table), FILE.duckdb, FILE.db (SQLite).")
@click.argument("what")
@click.option("-o", "--output", required=True, metavar="FILE.json|.dot|.parquet|.duckdb|.db", callback=_output)
@roots_option
@capture_option
@remote_options
@max_memory_option
@click.option("--tree", is_flag=True,
              help="PID and all its descendants: one file per process, -o a pattern ('{pid}' is "
                   "replaced by the PID, else '.PID' goes before the suffix), and a summary.")
def command(what: str, output: str, roots_mode: str, capture_mode: str, tree: bool = False) -> int:
    from ..reporters import graph_export
    if not output.endswith((".json", ".dot") + graph_export.TABLE_SUFFIXES):
        raise MappedTraceError(f"{output}: the output must end in .json, .dot, .parquet (a directory "
                               f"of Parquet tables), .duckdb or .db (SQLite)")

    if tree:
        from ._tree import graph_tree
        return graph_tree(what, output, roots_mode, graph_export.export)

    a = analyse_arg(what, capture_mode, roots_mode=roots_mode, leaks=False)
    for n in a.notes:
        click.echo(f"mappedtrace: note: {n}", err=True)
    graph_export.export(a.graph, output, precision=a.precision, notes=a.notes)
    g = a.graph
    click.echo(f"wrote {output}: {len(g)} objects", err=True)
    if g.capture is not None:
        from ..reporters.leaks_report import capture_line
        click.echo(capture_line(g.capture), err=True)
    print_warnings(a.warnings)
    return 0
