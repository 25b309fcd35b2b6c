"""Retained sizes: the dominator tree of the heap graph (DESIGN step 10).

An object *x* dominates *y* when every path from the roots to *y* passes
through *x*; the **retained size** of *x* is the bytes that would be freed if
*x* were: its own size plus that of every object it dominates (Eclipse MAT's
"retained heap").  The shape follows Go's viewcore
(``internal/gocore/dominator.go``): a pseudo-root parents every root, and each
root is a vertex of its own, so "retained by this global / this frame" comes
for free.

Vertices of :class:`HeapDigraph`: heap objects ``0 … n-1`` (the graph's node
indices), roots ``n … n+R-1`` (``graph.roots`` order), the pseudo-root
``n+R``.  Edges: every heap edge from a reached object (edges of the leak
scan, :data:`~mappedtrace.graph.EDGE_UNREACHED`, keep nothing alive and are
left out; so are weak edges, e.g. Rust's ``Weak``), every root edge, and
pseudo-root → root.  Conservative edges are kept, with one exception: an
edge from a vertex that no exact root reaches into an object that exact roots
keep alive is left out (it changes no object's liveness; left in, a stale
word on an uninstrumented frame would take the credit from the variable that
really holds the object).  So a holder's retained size says what it keeps
alive *given the exact roots*; where conservative words also point into it,
freeing the holder could free less, and the report counts those words
(``deferred_edges``) beside the conservative edges.

The immediate dominators come from igraph's ``Graph.dominator`` (the
Lengauer–Tarjan algorithm, T. Lengauer and R. E. Tarjan, "A fast algorithm
for finding dominators in a flowgraph", TOPLAS 1979; C code).  Subtree sums
use pointer doubling over the dominator tree with numpy (``O(n log depth)``,
no Python loop per object): a linked list a million long takes 20 rounds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..graph import EDGE_EXACT, EDGE_UNREACHED, EDGE_WEAK, HeapGraph

#: idom value of the pseudo-root and of vertices the roots do not reach
NO_IDOM = -1


@dataclass
class HeapDigraph:
    """The heap graph with roots as vertices, as edge arrays (see the module doc)."""

    n_objects: int
    n_roots: int
    src: np.ndarray          # i64, every edge
    dst: np.ndarray          # i64
    exact: np.ndarray        # bool per edge: a known pointer (pseudo-root edges count as exact)
    heap_edges: int          # how many of the graph's edges are object → object
    conservative_edges: int  # object→object or root→object edges that are conservative
    #: edges into objects that exact roots keep alive, from vertices they do not
    #: reach (stale words of uninstrumented frames): left out, see heap_digraph
    deferred_edges: int = 0

    @property
    def n_vertices(self) -> int:
        return self.n_objects + self.n_roots + 1

    @property
    def pseudo_root(self) -> int:
        return self.n_objects + self.n_roots



def heap_digraph(graph: HeapGraph) -> HeapDigraph:
    """The heap graph of ``graph`` with a vertex per root and a pseudo-root
    (every edge; :func:`dominator_tree` defers some, see the module doc)."""
    n, r = len(graph), len(graph.roots)
    e = graph.edges
    keep = (e["flags"] & (EDGE_UNREACHED | EDGE_WEAK)) == 0
    hs, hd = e["src"][keep].astype(np.int64), e["dst"][keep].astype(np.int64)
    hx = (e["flags"][keep] & EDGE_EXACT) != 0
    re_ = graph.root_edges
    rs = re_["root"].astype(np.int64) + n
    rd = re_["dst"].astype(np.int64)
    rx = (re_["flags"] & EDGE_EXACT) != 0
    ps = np.full(r, n + r, np.int64)
    pd = np.arange(n, n + r, dtype=np.int64)
    return HeapDigraph(n, r, np.concatenate([ps, rs, hs]), np.concatenate([pd, rd, hd]),
                       np.concatenate([np.ones(r, bool), rx, hx]), int(len(hs)),
                       int((~hx).sum() + (~rx).sum()))


@dataclass
class DominatorTree:
    """Immediate dominators and retained sizes of every vertex of a :class:`HeapDigraph`.

    ``idom[v]`` is the immediate dominator of vertex ``v`` (:data:`NO_IDOM`
    for the pseudo-root and for objects the roots do not reach);
    ``retained[v]`` the bytes it retains (objects' usable sizes; a root or
    the pseudo-root retains what it dominates).
    """

    digraph: HeapDigraph
    idom: np.ndarray
    retained: np.ndarray
    sizes: np.ndarray                        # bytes of each vertex (0 for roots and the pseudo-root)
    reached: np.ndarray                      # bool per vertex
    warnings: list[str] = field(default_factory=list)
    _pre: np.ndarray | None = field(default=None, repr=False)
    _nsub: np.ndarray | None = field(default=None, repr=False)

    @property
    def preorder(self) -> np.ndarray:
        """Each vertex's position in a preorder of the dominator tree (-1: not reached)."""
        if self._pre is None:
            self._pre = preorder(self.idom, self.digraph.pseudo_root, self.subtree_vertices)
        return self._pre

    @property
    def subtree_vertices(self) -> np.ndarray:
        """Vertices in each vertex's dominator subtree, itself included."""
        if self._nsub is None:
            self._nsub = subtree_sums(self.idom, self.reached.astype(np.uint64))
        return self._nsub

    def children(self, v: int) -> np.ndarray:
        """Vertices immediately dominated by ``v``, biggest retained first."""
        c = np.flatnonzero(self.idom == v)
        return c[np.argsort(-self.retained[c].astype(np.int64), kind="stable")]


def subtree_sums(parent: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Sum of ``weight`` over each vertex's subtree in the forest ``parent``
    (``parent[v] < 0`` for a tree root).

    Pointer doubling: after round *k*, ``acc[v]`` holds the weights of the
    descendants of ``v`` at distance below ``2**k``; the next round adds the
    same sums shifted ``2**k`` levels up (``np.bincount`` onto the ``2**k``-th
    ancestor).  Exact for byte counts below 2**53 (float64 weights).
    """
    n = len(parent)
    acc = weight.astype(np.float64)
    up = np.where(parent < 0, n, parent).astype(np.int64)   # n: above every root
    for _ in range(64):                                       # depth < 2**64
        live = up < n
        if not live.any():
            break
        acc = acc + np.bincount(up[live], weights=acc[live], minlength=n)[:n]
        up = np.append(up, n)[up]          # the 2**(k+1)-th ancestor (n: none)
    return np.rint(acc).astype(np.uint64)


def dominator_tree(graph: HeapGraph) -> DominatorTree:
    """Immediate dominators and retained sizes of every object and root of ``graph``.

    One igraph graph holds every edge plus a second source vertex ``X`` with
    an edge to each exact root: the vertices ``X`` reaches are those exact
    roots keep alive; the edges into them from vertices ``X`` does not reach
    are deleted (deferred: see the module doc), and so are ``X``'s, before
    the dominators are computed from the pseudo-root.
    """
    import igraph
    dg = heap_digraph(graph)
    nv = dg.n_vertices
    x = nv                                            # the exact roots' source
    exact_roots = np.flatnonzero([ro.exact for ro in graph.roots]).astype(np.int64) + dg.n_objects
    g = igraph.Graph(n=nv + 1, directed=True)
    g.add_edges(np.column_stack([np.concatenate([dg.src, np.full(len(exact_roots), x)]),
                                 np.concatenate([dg.dst, exact_roots])]))
    ex = np.zeros(nv + 1, bool)
    ex[np.asarray(g.subcomponent(x, mode="out"), dtype=np.int64)] = True
    ex[dg.pseudo_root] = True                         # the pseudo-root keeps its edges
    drop = ~ex[dg.src] & ex[dg.dst]
    dg.deferred_edges = int(drop.sum())
    g.delete_edges(np.concatenate([np.flatnonzero(drop), len(dg.src) + np.arange(len(exact_roots))]).tolist())
    raw = g.dominator(dg.pseudo_root, mode="out")
    # igraph: -1 for the root itself, NaN for vertices it does not reach
    f = np.asarray(raw[:nv], dtype=np.float64)
    reached = ~np.isnan(f)
    idom = np.where(reached, f, NO_IDOM).astype(np.int64)
    idom[dg.pseudo_root] = NO_IDOM
    sizes = np.zeros(nv, np.uint64)
    sizes[:dg.n_objects] = graph.sizes
    retained = subtree_sums(idom, np.where(reached, sizes, 0))
    return DominatorTree(dg, idom, retained, sizes, reached)


# --------------------------------------------------------------------------
# Tables: by type, by root
# --------------------------------------------------------------------------

_FRAME = re.compile(r"^(thread \d+ #\d+ \S+)")
_STACK = re.compile(r"^(thread \d+) ")


def root_holder(source: str) -> str:
    """What holds a root, for grouping: the frame (``thread T #N function``)
    for stack slots and registers, the variable for globals and thread-locals,
    the thread for a scanned stack, else the source as it is."""
    m = _FRAME.match(source)
    if m:
        return m.group(1)
    if source.startswith(("global ", "tls ")):
        return source.split(" +", 1)[0]
    m = _STACK.match(source)
    if m and "stack" in source:
        return source
    return source


@dataclass
class TypeRow:
    type: str
    objects: int
    shallow_bytes: int
    retained_bytes: int       # retained by the objects of this type that no other object of it dominates
    exact_typed: int          # objects whose type came from a typed pointer (not a guess)


@dataclass
class HolderRow:
    holder: str               # e.g. "global cache", "thread 4242 #1 main"
    kind: str                 # "global" | "tls" | "frame" | "stack" | "other"
    roots: int
    retained_bytes: int
    exact: bool               # every root of this holder is exact


def _type_label(graph: HeapGraph, i: int) -> str:
    tid = int(graph.type_ids[i])
    return graph.type_name(tid) if tid else f"unk{int(graph.sizes[i])}"


def by_type(graph: HeapGraph, dom: DominatorTree) -> list[TypeRow]:
    """MAT's histogram with retained sizes: per type, the objects, their bytes,
    and the bytes retained by the type's *topmost* objects (those whose
    dominator chain holds no other object of the type, so nested objects of
    one type are not counted twice).  Reached objects only, biggest retained
    first."""
    n = len(graph)
    reached = dom.reached[:n]
    idx = np.flatnonzero(reached)
    labels = [_type_label(graph, int(i)) for i in idx]
    # a label id per object; nested = some strict dominator has the same label.
    lab_of: dict[str, int] = {}
    lid = np.full(dom.digraph.n_vertices, -1, np.int64)
    for i, s in zip(idx.tolist(), labels):
        lid[i] = lab_of.setdefault(s, len(lab_of))
    top = _topmost_of_label(dom, lid, idx)
    rows: dict[str, TypeRow] = {}
    typed = graph.type_ids[idx] != 0
    for k, (i, s) in enumerate(zip(idx.tolist(), labels)):
        row = rows.get(s)
        if row is None:
            row = rows[s] = TypeRow(s, 0, 0, 0, 0)
        row.objects += 1
        row.shallow_bytes += int(graph.sizes[i])
        row.exact_typed += int(bool(typed[k]))
        if top[k]:
            row.retained_bytes += int(dom.retained[i])
    return sorted(rows.values(), key=lambda r: (-r.retained_bytes, -r.shallow_bytes, r.type))


def path_sums(parent: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Sum of ``weight`` over each vertex and all its ancestors in the forest
    ``parent`` (pointer doubling, ``O(n log depth)``; exact below 2**53)."""
    n = len(parent)
    acc = weight.astype(np.float64)
    up = np.where(parent < 0, n, parent).astype(np.int64)
    for _ in range(64):
        live = up < n
        if not live.any():
            break
        acc[live] += acc[up[live]]
        up = np.append(up, n)[up]
    return np.rint(acc).astype(np.int64)


def preorder(parent: np.ndarray, root: int, sizes: np.ndarray) -> np.ndarray:
    """Position of each vertex in a depth-first preorder of the tree
    ``parent`` from ``root`` (-1 for vertices outside it), children in index
    order.  ``sizes[v]``: vertices in v's subtree.  A child's position is its
    parent's + 1 + the subtree sizes of its earlier siblings, so a vertex's
    position is a sum along its path to the root (:func:`path_sums`)."""
    n = len(parent)
    kids = np.flatnonzero(parent >= 0)
    kids = kids[np.argsort(parent[kids], kind="stable")]
    w = np.zeros(n, np.int64)
    if len(kids):
        sz = sizes[kids].astype(np.int64)
        cum = np.cumsum(sz) - sz                     # exclusive sum over all kids in order
        first = np.searchsorted(parent[kids], parent[kids], side="left")
        w[kids] = 1 + cum - cum[first]               # 1 + earlier siblings' subtrees
    pos = path_sums(parent, w)
    up = np.where(parent < 0, np.arange(n), parent)
    for _ in range(64):                              # the forest root of each vertex
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        up = nxt
    pos[up != root] = -1
    return pos


def _topmost_of_label(dom: "DominatorTree", lid: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For each vertex of ``idx``: True when no strict dominator carries its
    label.  With a preorder ``pre`` and subtree sizes, ``u`` is a strict
    ancestor of ``v`` iff ``pre[u] < pre[v] < pre[u] + size[u]``; subtrees nest,
    so sorting one label's vertices by ``pre``, ``v`` is nested iff the running
    maximum of ``pre + size`` of the earlier ones exceeds ``pre[v]``."""
    pre = dom.preorder
    end = pre + dom.subtree_vertices.astype(np.int64)
    lab = lid[idx]
    order = np.lexsort((pre[idx], lab))
    big = np.int64(end.max() + 1 if len(end) else 1)
    key_end = lab[order] * big + end[idx][order]
    runmax = np.maximum.accumulate(key_end)
    prev = np.concatenate([[np.int64(-1)], runmax[:-1]])
    nested = prev > lab[order] * big + pre[idx][order]
    top = np.empty(len(idx), bool)
    top[order] = ~nested
    return top


def by_holder(graph: HeapGraph, dom: DominatorTree) -> list[HolderRow]:
    """Per holder of roots (a global, a thread-local, a frame), the bytes its
    roots retain together: what would be freed if that variable or frame let
    go.  Roots of one holder that share objects retain them together only
    when no other holder reaches them (dominators of the holder's own
    vertices)."""
    n = dom.digraph.n_objects
    rows: dict[str, HolderRow] = {}
    for k, root in enumerate(graph.roots):
        v = n + k
        h = root_holder(root.source)
        row = rows.get(h)
        if row is None:
            kind = ("frame" if _FRAME.match(root.source) else
                    "global" if root.source.startswith("global ") else
                    "tls" if root.source.startswith("tls ") else
                    "stack" if "stack" in root.source else "other")
            row = rows[h] = HolderRow(h, kind, 0, 0, True)
        row.roots += 1
        row.retained_bytes += int(dom.retained[v])
        row.exact = row.exact and root.exact
    out = [r for r in rows.values() if r.retained_bytes]
    return sorted(out, key=lambda r: (-r.retained_bytes, r.holder))
