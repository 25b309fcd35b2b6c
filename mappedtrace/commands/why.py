"""``mappedtrace why (PID | FILE) ADDRESS|TYPE``: shortest paths from the roots to an object."""
from __future__ import annotations

import sys

import click

from ._analysis_opts import (analyse_arg, max_memory_option, open_private, output_path, print_warnings,
                             remote_options, roots_option)
from ..errors import MappedTraceError


def _address(s: str) -> int | None:
    try:
        return int(s, 0)
    except ValueError:
        return None


@click.command(help="Why is an object alive: the shortest paths from the roots (a global, a frame's "
                    "register or slot, a thread-local) to the object at ADDRESS, or to the biggest "
                    "objects (by retained size) of TYPE; each hop exact or conservative.")
@click.argument("what")
@click.argument("query")
@click.option("--paths", "max_paths", default=3, show_default=True, type=click.IntRange(1),
              help="Paths per object, from roots of distinct holders.")
@click.option("--objects", "max_objects", default=3, show_default=True, type=click.IntRange(1),
              help="Objects shown for a TYPE query.")
@click.option("--json", "json_path", metavar="FILE", callback=output_path, help="Write the paths as JSON to FILE ('-': stdout).")
@roots_option
@remote_options
@max_memory_option
@click.option("--width", type=int, default=None, help="Report width (columns).")
def command(what: str, query: str, max_paths: int, max_objects: int, json_path: str | None,
            roots_mode: str, width: int | None) -> int:
    import numpy as np

    from ..analyses.paths import PathFinder
    from ..reporters import heap_report

    a = analyse_arg(what, roots_mode=roots_mode, leaks=False)
    g = a.graph
    addr = _address(query)
    if addr is not None:
        i = g.find(addr)
        if i is None:
            raise MappedTraceError(f"{query}: no heap object in use contains this address",
                                   hint="give an address inside an object ('mappedtrace graph' or 'top' lists them)")
        nodes = [i]
    else:
        from ..analyses.dominators import dominator_tree
        ids = [tid for tid, t in g.types.items() if getattr(t, "name", None) == query]
        label = g.label_ids                     # derived (container) types name objects first
        cand = np.flatnonzero(np.isin(label, np.asarray(ids, dtype=np.uint64)))
        if not len(cand) and query.startswith("unk") and query[3:].isdigit():
            cand = np.flatnonzero((label == 0) & (g.sizes == int(query[3:])))
        if not len(cand):
            raise MappedTraceError(f"{query}: no object of this type in the heap, and not an address",
                                   hint="type names as 'mappedtrace top' prints them, e.g. 'struct node'; "
                                        "addresses as 0x…")
        dom = dominator_tree(g)
        ret = dom.retained[cand].astype(np.int64)
        nodes = [int(x) for x in cand[np.lexsort((cand, -ret))][:max_objects]]
    pf = PathFinder(g)
    found = []
    for i in nodes:
        reached = bool(g.reached[i])
        paths = pf.paths(i, max_paths) if reached else []
        found.append((i, int(g.addresses[i]), pf._type(i), reached, paths))
    sites = {i: g.site_of(i).where for i in nodes if g.site_of(i) is not None}
    if json_path != "-":
        heap_report.render_why(query, found, sys.stdout, width=width, sites=sites)
    if json_path:
        with open_private(json_path) as f:
            heap_report.to_json(heap_report.why_dict(query, found, sites), f)
    print_warnings(a.warnings)
    return 0
