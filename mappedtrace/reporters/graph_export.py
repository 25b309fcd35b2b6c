"""Export a :class:`~mappedtrace.graph.HeapGraph` as JSON or Graphviz dot.

``mappedtrace graph (PID | FILE) -o FILE.json|FILE.dot`` calls :func:`export`.
Both writers stream item by item (a graph of millions of objects is never
held as one Python structure).
"""
from __future__ import annotations

import json
from typing import IO

from ..errors import MappedTraceError
from ..fileio import write_private
from ..graph import EDGE_EXACT, EDGE_UNREACHED, EDGE_WEAK, HOW_NAMES, HeapGraph


def to_json(graph: HeapGraph, stream: IO[str], precision: dict | None = None,
            notes: list[str] | None = None) -> None:
    """Write ``{"notes", "nodes", "edges", "roots", "root_edges", "precision", "warnings"}``.

    Nodes are listed in address order and named by index (``id``); edges
    refer to node ids.  ``exact`` tells a typed pointer from a word that
    merely looked like one; ``unreached`` marks edges inside leaked objects.
    ``precision`` is the analysis' figures (the leak report's), else the graph's own;
    ``notes`` what the report says first (binaries without maps).
    """
    g = graph
    w = stream.write
    w('{"notes": ' + json.dumps(list(notes or [])) + ',\n"nodes": [')
    names = {}
    label = g.label_ids                     # a type derived from the holder names first
    for i in range(len(g)):
        tid = int(g.type_ids[i])
        lid = int(label[i])
        if lid not in names:
            names[lid] = g.type_name(lid)
        w(("," if i else "") + "\n" + json.dumps({
            "id": i, "address": int(g.addresses[i]), "size": int(g.sizes[i]),
            "type": names[lid] or f"unk{int(g.sizes[i])}", "type_id": tid,
            "how": HOW_NAMES[int(g.how[i])], "reached": bool(g.how[i] != 0),
            "ambiguous": bool(g.ambiguous[i])}))
    w('],\n"edges": [')
    for k, e in enumerate(g.edges):
        f = int(e["flags"])
        w(("," if k else "") + "\n" + json.dumps({
            "src": int(e["src"]), "src_off": int(e["src_off"]), "dst": int(e["dst"]),
            "dst_off": int(e["dst_off"]), "exact": bool(f & EDGE_EXACT), "weak": bool(f & EDGE_WEAK),
            "unreached": bool(f & EDGE_UNREACHED)}))
    w('],\n"roots": [')
    for k, r in enumerate(g.roots):
        w(("," if k else "") + "\n" + json.dumps({
            "index": k, "kind": r.kind, "value": int(r.value), "size": int(r.size),
            "type": g.type_name(r.type_id), "type_id": int(r.type_id), "exact": bool(r.exact),
            "source": r.source, "thread": r.thread}))
    w('],\n"root_edges": [')
    for k, e in enumerate(g.root_edges):
        w(("," if k else "") + "\n" + json.dumps({
            "root": int(e["root"]), "root_off": int(e["root_off"]), "dst": int(e["dst"]),
            "dst_off": int(e["dst_off"]), "exact": bool(int(e["flags"]) & EDGE_EXACT)}))
    w('],\n"precision": ' + json.dumps(g.precision.as_dict() if precision is None else precision))
    if getattr(g, "capture", None) is not None:
        w(',\n"capture": ' + json.dumps(g.capture))
    w(',\n"warnings": ' + json.dumps(list(g.warnings)) + "}\n")


def _q(s: str) -> str:
    """A dot double-quoted string body."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: HeapGraph, stream: IO[str], *, max_nodes: int = 20000) -> None:
    """Write a Graphviz digraph: boxes for objects (red: unreached, dashed:
    scanned conservatively), ellipses for roots, dashed edges for
    conservative pointers.  Only the first ``max_nodes`` objects (address
    order) are drawn; a comment says how many were left out.
    """
    g = graph
    w = stream.write
    n = min(len(g), max_nodes)
    w("digraph heap {\n  rankdir=LR;\n  node [shape=box, fontname=monospace, fontsize=9];\n")
    if len(g) > n:
        w(f"  // {len(g) - n} objects beyond max_nodes={max_nodes} left out\n")
    for i in range(n):
        name = g.object_name(i)
        how = HOW_NAMES[int(g.how[i])]
        style = {"unreached": 'color=red', "conservative": 'style=dashed', "typed": ''}[how]
        label = f"{int(g.addresses[i]):#x}\\n{_q(name)}\\n{int(g.sizes[i])} B"
        w(f'  n{i} [label="{label}"{", " + style if style else ""}];\n')
    used_roots = set()
    for e in g.root_edges:
        d = int(e["dst"])
        if d >= n:
            continue
        r = int(e["root"])
        if r not in used_roots:
            used_roots.add(r)
            w(f'  r{r} [shape=ellipse, label="{_q(g.roots[r].source)}"];\n')
        st = "" if int(e["flags"]) & EDGE_EXACT else " [style=dashed]"
        w(f"  r{r} -> n{d}{st};\n")
    for e in g.edges:
        s, d = int(e["src"]), int(e["dst"])
        if s >= n or d >= n:
            continue
        f = int(e["flags"])
        attrs = [f'label="+{int(e["src_off"])}"']
        if not f & EDGE_EXACT:
            attrs.append("style=dashed")
        if f & EDGE_WEAK:
            attrs.append("arrowhead=odot")
        if f & EDGE_UNREACHED:
            attrs.append("color=red")
        w(f"  n{s} -> n{d} [{', '.join(attrs)}];\n")
    w("}\n")


#: outputs written as tables (columns), not as one document
TABLE_SUFFIXES = (".parquet", ".duckdb", ".db")


def export(graph: HeapGraph, path: str, precision: dict | None = None,
           notes: list[str] | None = None) -> None:
    """Write ``graph`` to ``path`` (``.json`` or ``.dot``; mode 0600, replaced
    atomically; the tables of :mod:`~mappedtrace.analyses.tables` for
    ``.parquet``, ``.duckdb``, ``.db``)."""
    if path.endswith(TABLE_SUFFIXES):
        from ..analyses.dominators import dominator_tree
        from ..analyses.tables import export as export_tables, heap_tables
        export_tables(heap_tables(graph, dominator_tree(graph)), path)
        return
    if path.endswith(".json"):
        writer = to_json
    elif path.endswith(".dot") or path.endswith(".gv"):
        writer = to_dot
    else:
        raise MappedTraceError(f"cannot tell the export format of {path!r}",
                               hint="name the output FILE.json or FILE.dot")
    with write_private(path) as f:
        if writer is to_json:
            to_json(graph, f, precision, notes)
        else:
            writer(graph, f)
