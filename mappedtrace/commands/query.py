"""``mappedtrace query (PID | FILE) "SQL"``: the heap as tables, queried with DuckDB."""
from __future__ import annotations

import json
import sys

import click

from ._analysis_opts import (analyse_arg, max_memory_option, open_private, output_path, print_warnings,
                             remote_options, roots_option)
from ..errors import MappedTraceError


class QueryError(MappedTraceError):
    """The SQL engine refused the query (exit 2, like a usage error)."""

    exit_code = 2


@click.command(help="Query the heap with SQL (DuckDB). Tables: objects (id, address, size, type, how, "
                    "reachable, retained, dominator_object, dominator_root…), edges (src, dst, src_off, "
                    "dst_off, exact…), roots (id, source, holder, exact, retained…), root_edges, types, "
                    "fields. Example: SELECT type, count(*), sum(size) FROM objects GROUP BY type "
                    "ORDER BY 3 DESC")
@click.argument("what")
@click.argument("sql")
@click.option("--json", "json_path", metavar="FILE", callback=output_path, help="Write the result as JSON to FILE ('-': stdout).")
@click.option("--max-rows", default=100, show_default=True, type=click.IntRange(1),
              help="Rows printed on the terminal (JSON gets them all).")
@roots_option
@remote_options
@max_memory_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
def command(what: str, sql: str, json_path: str | None, max_rows: int, roots_mode: str,
            width: int | None) -> int:
    import duckdb

    from ..analyses.dominators import dominator_tree
    from ..analyses.tables import connect, heap_tables
    from ..reporters import heap_report

    a = analyse_arg(what, roots_mode=roots_mode, leaks=False)
    con = connect(heap_tables(a.graph, dominator_tree(a.graph)))
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if cols else []
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QueryError(f"query: {msg}",
                         hint="tables: objects, edges, roots, root_edges, types, fields "
                              "('mappedtrace query --help')") from None
    if json_path != "-":
        heap_report.render_rows(cols, rows, sys.stdout, max_rows=max_rows, width=width)
    if json_path:
        doc = {"columns": cols, "rows": [[_plain(v) for v in r] for r in rows]}
        if json_path == "-":
            json.dump(doc, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            with open_private(json_path) as f:
                json.dump(doc, f, indent=1)
    print_warnings(a.warnings)
    return 0


def _plain(v):
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)
