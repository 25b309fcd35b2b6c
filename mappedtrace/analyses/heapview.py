"""What the heap viewer shows, as plain data: a sample of the dominator tree,
the type and holder tables, paths to the roots of the biggest objects, and a
diff when there are two snapshots.

A heap of millions of objects is *sampled*, not embedded: the dominator tree
is cut where a subtree retains less than :data:`MIN_SHARE` of the heap, at
:data:`MAX_CHILDREN` children per vertex, :data:`MAX_DEPTH` levels and
:data:`MAX_NODES` vertices in all; what is cut is summed into one "N more"
vertex per parent, so every level still adds up to its parent's retained size.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..graph import HeapGraph
from .dominators import DominatorTree, by_holder, by_type, root_holder
from .paths import PathFinder

MIN_SHARE = 0.002
MAX_CHILDREN = 24
MAX_DEPTH = 14
MAX_NODES = 3000
#: objects of the sampled tree that get their paths to the roots
MAX_PATHS = 120


def _children_index(idom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the dominator tree: children of v are ``kids[ptr[v]:ptr[v+1]]``."""
    has = np.flatnonzero(idom >= 0)
    order = has[np.argsort(idom[has], kind="stable")]
    ptr = np.searchsorted(idom[order], np.arange(len(idom) + 1))
    return order, ptr


def tree_sample(graph: HeapGraph, dom: DominatorTree) -> list[dict]:
    """The sampled dominator tree as a list of vertices, parents before
    children: ``{"id", "parent", "label", "kind", "address", "size",
    "retained", "count"}`` (``parent`` indexes this list, -1 for the top;
    ``kind``: "all", "root", "object" or "more")."""
    n = len(graph)
    pr = dom.digraph.pseudo_root
    kids, ptr = _children_index(dom.idom)
    total = int(dom.retained[pr]) or 1
    ret = dom.retained
    out = [{"id": 0, "parent": -1, "label": "all reachable objects", "kind": "all", "address": 0,
            "size": 0, "retained": int(ret[pr]), "count": 1}]
    queue = [(pr, 0, 0)]
    head = 0
    while head < len(queue) and len(out) < MAX_NODES:
        v, idx, depth = queue[head]
        head += 1
        ch = kids[ptr[v]:ptr[v + 1]]
        if not len(ch) or depth >= MAX_DEPTH:
            continue
        ch = ch[np.argsort(-ret[ch].astype(np.int64), kind="stable")]
        big = ch[(ret[ch] >= MIN_SHARE * total)][:MAX_CHILDREN]
        for c in big.tolist():
            if len(out) >= MAX_NODES:
                break
            if c >= n:
                r = graph.roots[c - n]
                node = {"label": root_holder(r.source), "kind": "root", "address": 0, "size": 0,
                        "exact": bool(r.exact), "source": r.source}
            else:
                node = {"label": graph.object_name(int(c)), "kind": "object",
                        "address": int(graph.addresses[c]), "size": int(graph.sizes[c]), "node": int(c)}
            node.update(id=len(out), parent=idx, retained=int(ret[c]), count=1)
            out.append(node)
            queue.append((c, node["id"], depth + 1))
        rest = len(ch) - len(big)
        if rest > 0 and len(out) < MAX_NODES:
            rb = int(ret[ch].sum()) - int(ret[big].sum())
            out.append({"id": len(out), "parent": idx, "label": f"{rest} more", "kind": "more",
                        "address": 0, "size": 0, "retained": rb, "count": rest})
    return out


def view_data(graph: HeapGraph, dom: DominatorTree, *, title: str, precision: dict,
              diff: dict | None = None) -> dict:
    """Everything the page needs, JSON-ready."""
    tree = tree_sample(graph, dom)
    objs = sorted((t for t in tree if t["kind"] == "object"), key=lambda t: -t["retained"])[:MAX_PATHS]
    pf = PathFinder(graph)
    paths = {}
    for t in objs:
        ps = pf.paths(t["node"], 2)
        paths[str(t["id"])] = [{"source": p.source, "holder": p.holder, "exact": p.exact,
                                "root_exact": p.root_exact,
                                "hops": [{"type": h.type, "address": h.address, "size": h.size,
                                          "via": h.via_offset, "exact": h.exact} for h in p.hops]}
                               for p in ps]
    n = len(graph)
    reached = dom.reached[:n]
    return {"title": title,
            "summary": {"objects": n, "reachable": int(reached.sum()),
                        "reachable_bytes": int(graph.sizes[reached].sum()),
                        "unreachable": int((~reached).sum()),
                        "unreachable_bytes": int(graph.sizes[~reached].sum())},
            "precision": {k: v for k, v in precision.items() if isinstance(v, (int, float, str, bool))},
            "types": [asdict(r) for r in by_type(graph, dom)[:300]],
            "holders": [asdict(r) for r in by_holder(graph, dom)[:100]],
            "tree": tree, "paths": paths, "diff": diff}
