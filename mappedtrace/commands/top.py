"""``mappedtrace top (PID | FILE)``: objects, shallow and retained bytes by type and by holder."""
from __future__ import annotations

import sys

import click

from ._analysis_opts import (analyse_arg, max_memory_option, open_private, output_path, print_warnings,
                             remote_options, roots_option)


def heap_summary(graph, dom) -> dict:
    """Counts shared by the ``top`` report and its JSON."""
    import numpy as np
    n = len(graph)
    reached = dom.reached[:n]
    sizes = graph.sizes.astype(np.uint64)
    return {"objects_reached": int(reached.sum()), "bytes_reached": int(sizes[reached].sum()),
            "objects_unreached": int((~reached).sum()), "bytes_unreached": int(sizes[~reached].sum()),
            "objects_typed": int((graph.type_ids[reached] != 0).sum()),
            "edges_exact": int(dom.digraph.heap_edges + len(graph.root_edges) - dom.digraph.conservative_edges),
            "edges_conservative": dom.digraph.conservative_edges,
            "conservative_edges_deferred": dom.digraph.deferred_edges,
            **{k: getattr(graph.precision, k) for k in ("derived_objects", "derived_bytes",
                                                        "derived_objects_typed", "derived_bytes_typed")}}


@click.command(help="Objects, shallow bytes and retained bytes (dominator tree) by type and by the "
                    "root that holds them (global, thread-local, frame), largest first.")
@click.argument("what")
@click.option("--json", "json_path", metavar="FILE", callback=output_path, help="Write the tables as JSON to FILE ('-': stdout).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="Rows per table.")
@roots_option
@remote_options
@max_memory_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
def command(what: str, json_path: str | None, limit: int, roots_mode: str, width: int | None) -> int:
    from ..analyses.dominators import by_holder, by_site, by_type, dominator_tree
    from ..reporters import heap_report

    a = analyse_arg(what, roots_mode=roots_mode, leaks=False)
    dom = dominator_tree(a.graph)
    types, holders, sites = by_type(a.graph, dom), by_holder(a.graph, dom), by_site(a.graph, dom)
    summary = heap_summary(a.graph, dom)
    if json_path != "-":
        heap_report.render_top(types, holders, summary, sys.stdout, limit=limit, width=width, sites=sites)
    if json_path:
        with open_private(json_path) as f:
            heap_report.to_json(heap_report.top_dict(types, holders, summary, limit, sites), f)
    print_warnings(a.warnings)
    return 0
