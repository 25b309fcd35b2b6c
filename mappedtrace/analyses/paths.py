"""Why is it alive: shortest paths from the roots to an object (DESIGN step 10).

A breadth-first search of the *reversed* heap digraph
(:class:`~mappedtrace.analyses.dominators.HeapDigraph`: the edges that keep
objects alive, roots as vertices) from the object gives, for every root that
reaches it, a shortest path from that root; the paths of the nearest roots of
distinct holders (a global, a frame, a thread-local) are returned, each hop
with the word that holds the pointer, named as ``Type.field`` from the type
table (``[index]`` for array and container elements: :func:`word_name`), and
whether that word is a known pointer (exact) or merely looks like one
(conservative).  The search runs
level by level on numpy arrays (the reverse edges as CSR, made once per
graph) and stops as soon as enough holders are found, so a query costs what
the object's nearest ancestors cost, not the whole heap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import EDGE_EXACT, EDGE_UNREACHED, EDGE_WEAK, HeapGraph
from .dominators import HeapDigraph, csr, heap_digraph, root_holder
from .fields import field_path


def word_name(graph: HeapGraph, node: int, off: int) -> str:
    """The word at byte ``off`` of heap object ``node`` as ``Type.field``
    (``Vec<Node> buffer[3].name``: an element of a container's buffer), or ""
    when the object has no type.  A derived object's elements are named by
    their element type; its other bytes (a hash table's control bytes) by
    the offset."""
    el = graph.derived_elems.get(int(node))
    tid = int(graph.label_ids[node])
    tname = graph.type_name(tid) if tid else ""
    if el is not None:
        elem, start, count, stride = el
        if stride and start <= off < start + count * stride:
            k, r = divmod(off - start, stride)
            sub = field_path(graph.types, elem, r)
            return f"{tname}[{k}]" + (f".{sub}" if sub and sub[0] not in "[+" else sub)
        if count == 1 and start <= off:
            sub = field_path(graph.types, elem, off - start)
            return f"{tname}.{sub}" if sub and sub[0] not in "[+" else tname + sub
    if not tid:
        return ""
    sub = field_path(graph.types, tid, off)
    return f"{tname}.{sub}" if sub and sub[0] not in "[+" else tname + sub


def root_word_name(graph: HeapGraph, root: int, off: int) -> str:
    """The word at ``off`` of a typed root range (a global's or a frame slot's
    field) as ``Type.field``; "" for a register or an untyped range."""
    r = graph.roots[root]
    if r.kind != "range" or not r.type_id:
        return ""
    tname = graph.type_name(r.type_id)
    sub = field_path(graph.types, r.type_id, off)
    return f"{tname}.{sub}" if sub and sub[0] not in "[+" else tname + sub


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
    via_field: str = ""       # that word as Type.field[index] ("" when its holder has no type)


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


#: levels searched past the one where the first holder was found
EXTRA_LEVELS = 3
#: vertices a query visits at most
MAX_VISITED = 2_000_000


class PathFinder:
    """Answers ``why`` queries on one graph (reverse adjacency and edge index made once)."""

    def __init__(self, graph: HeapGraph, digraph: HeapDigraph | None = None):
        self.graph = graph
        self.dg = digraph or heap_digraph(graph)       # every edge: stale words are reasons too
        # predecessors grouped by vertex (reverse CSR): the kernel's counting sort,
        # else numpy's argsort
        self._rptr, self._rsrc = csr(self.dg.n_vertices, self.dg.dst, self.dg.src)
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
        self._rkey = self._redges["root"]
        self._holders = [root_holder(r.source) for r in graph.roots]

    def _type(self, i: int) -> str:
        return self.graph.object_name(i)

    def _link(self, u: int, v: int) -> tuple[int, int, bool]:
        """(word offset in u, offset in v, exact) of one edge u → v, an exact one if any."""
        n = self.dg.n_objects
        if u >= n:
            arr, key, col = self._redges, self._rkey, "root_off"
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

    def _search(self, node: int, want: int) -> tuple[np.ndarray, list[int]]:
        """Reverse BFS from ``node``: (next hop toward ``node`` of every vertex
        seen, -1 elsewhere; root vertices in the order found).  Stops after the
        level where ``want`` distinct holders are known, or :data:`EXTRA_LEVELS`
        levels after the first holder was found, or after :data:`MAX_VISITED`
        vertices: the nearest holders are what a user asks for."""
        n, pr = self.dg.n_objects, self.dg.pseudo_root
        nxt = np.full(self.dg.n_vertices, -1, np.int64)
        nxt[node] = node
        roots: list[int] = []
        holders: set[str] = set()
        frontier = np.array([node], np.int64)
        visited, first_level = 1, None
        for level in range(self.dg.n_vertices):         # bounded: each level adds a new vertex
            lo, hi = self._rptr[frontier], self._rptr[frontier + 1]
            cnt = hi - lo
            total = int(cnt.sum())
            if not total:
                break
            idx = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(total)
            preds, via = self._rsrc[idx], np.repeat(frontier, cnt)
            fresh = (nxt[preds] < 0) & (preds != pr)
            new, first = np.unique(preds[fresh], return_index=True)
            if not len(new):
                break
            nxt[new] = via[fresh][first]
            visited += len(new)
            for p in new[new >= n].tolist():
                roots.append(p)
                holders.add(self._holders[p - n])
            if holders and first_level is None:
                first_level = level
            if len(holders) >= want or visited > MAX_VISITED or \
                    (first_level is not None and level - first_level >= EXTRA_LEVELS):
                break
            frontier = new[new < n]
            if not len(frontier):
                break
        return nxt, roots

    def paths(self, node: int, max_paths: int = 3) -> list[RootPath]:
        """Shortest paths from the nearest roots of up to ``max_paths`` distinct
        holders to ``node`` (empty: the roots do not reach it): the nearest
        ``4 * max_paths`` holders are found, then exact paths come first,
        shorter before longer."""
        n = self.dg.n_objects
        nxt, found = self._search(int(node), 4 * max_paths)
        out: list[RootPath] = []
        seen: set[str] = set()
        for v in found:
            r = self.graph.roots[v - n]
            h = self._holders[v - n]
            if h in seen:
                continue
            seen.add(h)
            path = RootPath(v - n, r.source, h, r.exact)
            u = v
            for _ in range(n + 1):                       # bounded by the object count
                w = int(nxt[u])
                off, doff, ex = self._link(u, w)
                via = root_word_name(self.graph, u - n, off) if u >= n else word_name(self.graph, u, off)
                path.hops.append(Hop(w, int(self.graph.addresses[w]), int(self.graph.sizes[w]),
                                     self._type(w), off, doff, ex, via))
                if w == node:
                    break
                u = w
            out.append(path)
        out.sort(key=lambda p: (not p.exact, len(p.hops)))
        return out[:max_paths]
