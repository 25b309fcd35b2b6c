"""Why is it alive: shortest paths from the roots to an object (DESIGN step 10).

One breadth-first search of the *reversed* heap digraph
(:class:`~mappedtrace.analyses.dominators.HeapDigraph`: the same edges that
keep objects alive, roots as vertices) from the object gives, for every root
that reaches it, a shortest path from that root; the paths of the nearest
roots of distinct holders (a global, a frame, a thread-local) are returned,
each hop with the word that holds the pointer and whether that word is a
known pointer (exact) or merely looks like one (conservative).  igraph's BFS
(C) does the search; the work is bounded by the object's ancestors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import EDGE_EXACT, EDGE_UNREACHED, EDGE_WEAK, HeapGraph
from .dominators import HeapDigraph, heap_digraph, root_holder


@dataclass
class Hop:
    """One object on a path, reached through the word at ``via_offset`` of the
    previous step (the root's word for the first hop)."""

    node: int
    address: int
    size: int
    type: str
    via_offset: int           # offset of the pointer word in the previous object / root range
    dst_offset: int           # where in this object the pointer points (0: its start)
    exact: bool               # the pointer word is a known pointer


@dataclass
class RootPath:
    """A shortest path from one root to the object asked about."""

    root: int                 # index in graph.roots
    source: str               # the root's provenance ("global cache", "thread 7 #1 main rbx", …)
    holder: str               # what holds it (see dominators.root_holder)
    root_exact: bool
    hops: list[Hop] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every link of the path, the root included, is a known pointer."""
        return self.root_exact and all(h.exact for h in self.hops)


class PathFinder:
    """Answers ``why`` queries on one graph (the digraph and edge index made once)."""

    def __init__(self, graph: HeapGraph, digraph: HeapDigraph | None = None):
        self.graph = graph
        self.dg = digraph or heap_digraph(graph, defer=False)   # every reason, stale words too
        self._g = self.dg.igraph()
        e = graph.edges
        keep = (e["flags"] & (EDGE_UNREACHED | EDGE_WEAK)) == 0
        self._edges = e[keep]
        self._esrc = self._edges["src"]                 # sorted: edges are in (src, src_off) order
        if len(self._esrc) > 1 and not bool(np.all(self._esrc[1:] >= self._esrc[:-1])):
            o = np.argsort(self._esrc, kind="stable")
            self._edges, self._esrc = self._edges[o], self._esrc[o]
        re_ = graph.root_edges
        o = np.argsort(re_["root"], kind="stable")
        self._redges = re_[o]
        self._rsrc = self._redges["root"]

    def _type(self, i: int) -> str:
        tid = int(self.graph.type_ids[i])
        return self.graph.type_name(tid) if tid else f"unk{int(self.graph.sizes[i])}"

    def _link(self, u: int, v: int) -> tuple[int, int, bool]:
        """(word offset in u, offset in v, exact) of one edge u → v, an exact one if any."""
        n = self.dg.n_objects
        if u >= n:
            arr, key, col = self._redges, self._rsrc, "root_off"
            k = u - n
        else:
            arr, key, col = self._edges, self._esrc, "src_off"
            k = u
        lo, hi = np.searchsorted(key, k, "left"), np.searchsorted(key, k, "right")
        seg = arr[lo:hi]
        seg = seg[seg["dst"] == v]
        if not len(seg):
            return 0, 0, False
        ex = (seg["flags"] & EDGE_EXACT) != 0
        j = int(np.flatnonzero(ex)[0]) if ex.any() else 0
        return int(seg[col][j]), int(seg["dst_off"][j]), bool(ex[j])

    def paths(self, node: int, max_paths: int = 3) -> list[RootPath]:
        """Shortest paths from the nearest roots of up to ``max_paths`` distinct
        holders to ``node`` (empty: the roots do not reach it): the nearest
        ``4 * max_paths`` holders are found, then exact paths come first,
        shorter before longer."""
        n = self.dg.n_objects
        vids, _layers, parents = self._g.bfs(int(node), mode="in")
        out: list[RootPath] = []
        holders: set[str] = set()
        for v in vids:                                   # BFS order: nearest first
            if v < n or v >= self.dg.pseudo_root:
                continue
            r = self.graph.roots[v - n]
            h = root_holder(r.source)
            if h in holders:
                continue
            holders.add(h)
            path = RootPath(v - n, r.source, h, r.exact)
            u = v
            for _ in range(n + 1):                       # bounded by the object count
                w = parents[u]
                if w < 0 or w == u:
                    break
                off, doff, ex = self._link(u, w)
                path.hops.append(Hop(w, int(self.graph.addresses[w]), int(self.graph.sizes[w]),
                                     self._type(w), off, doff, ex))
                if w == node:
                    break
                u = w
            out.append(path)
            if len(out) >= 4 * max_paths:
                break
        out.sort(key=lambda p: (not p.exact, len(p.hops)))
        return out[:max_paths]
