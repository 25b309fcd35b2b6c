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

The immediate dominators come from the compiled kernel (``_mark.c``:
SNCA, the semidominators of Lengauer and Tarjan, "A fast algorithm for
finding dominators in a flowgraph", TOPLAS 1979, with the idoms by the
nearest-common-ancestor rule of Georgiadis' thesis, 2005) on CSR arrays made
from the numpy edge arrays; igraph's ``Graph.dominator`` (Lengauer–Tarjan
too) is the fallback without a C compiler and the tests' oracle.  Measured
on 4 M objects / 12 M edges: igraph spent most of its time converting the
edges into its own vectors, one Python object at a time.  Subtree sums
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


def subtree_sums(parent: np.ndarray, weight: np.ndarray, *, kernel: str = "auto") -> np.ndarray:
    """Sum of ``weight`` over each vertex's subtree in the forest ``parent``
    (``parent[v] < 0`` for a tree root).

    The compiled kernel (``mt_subtree_sums``: one pass from the leaves up,
    O(n)) when it builds (``kernel`` "auto" or "c"); else (and as its test
    oracle, ``kernel="numpy"``) pointer doubling: after round *k*, ``acc[v]`` holds the weights of the
    descendants of ``v`` at distance below ``2**k``; the next round adds the
    same sums shifted ``2**k`` levels up (``np.bincount`` onto the ``2**k``-th
    ancestor).  Exact for byte counts below 2**53 (float64 weights).
    """
    n = len(parent)
    from .._markkernel import load
    k = load() if kernel in ("auto", "c") and n else None
    if k is not None:
        par = np.ascontiguousarray(parent, np.int64)
        w = np.ascontiguousarray(weight, np.uint64)
        out = np.empty(n, np.uint64)
        ffi = k.ffi
        done = k.lib.mt_subtree_sums(n, ffi.from_buffer("int64_t[]", par), ffi.from_buffer("uint64_t[]", w),
                                     ffi.from_buffer("uint64_t[]", out))
        if done == n:
            return out
        if done == -2:
            raise MemoryError("mt_subtree_sums: out of memory")
        # (a cycle or a parent out of range: not a forest; the doubling below bounds its rounds)
    acc = weight.astype(np.float64)
    up = np.where(parent < 0, n, parent).astype(np.int64)   # n: above every root
    for _ in range(64):                                       # depth < 2**64
        live = up < n
        if not live.any():
            break
        acc = acc + np.bincount(up[live], weights=acc[live], minlength=n)[:n]
        up = np.append(up, n)[up]          # the 2**(k+1)-th ancestor (n: none)
    return np.rint(acc).astype(np.uint64)


def dominator_tree(graph: HeapGraph, *, kernel: str = "auto") -> DominatorTree:
    """Immediate dominators and retained sizes of every object and root of ``graph``.

    First the vertices that exact roots keep alive (reachable from a second
    source ``X`` with an edge to each exact root); the edges into them from
    vertices ``X`` does not reach are deferred (see the module doc); then the
    dominators from the pseudo-root.  ``kernel``: ``"c"`` (the compiled
    kernel: SNCA on CSR arrays, no Python object per edge), ``"igraph"``
    (igraph's Lengauer-Tarjan; the fallback without a C compiler, and the
    tests' oracle), or ``"auto"`` (C when it builds).
    """
    from .._markkernel import load
    dg = heap_digraph(graph)
    nv = dg.n_vertices
    exact_roots = np.flatnonzero([ro.exact for ro in graph.roots]).astype(np.int64) + dg.n_objects
    k = load() if kernel in ("auto", "c") else None
    if kernel == "c" and k is None:
        raise RuntimeError("the C kernel is not available")
    idom = (_idom_c(k, dg, exact_roots) if k is not None else _idom_igraph(dg, exact_roots))
    reached = idom >= 0
    reached[dg.pseudo_root] = True
    sizes = np.zeros(nv, np.uint64)
    sizes[:dg.n_objects] = graph.sizes
    retained = subtree_sums(idom, np.where(reached, sizes, 0))
    return DominatorTree(dg, idom, retained, sizes, reached)


def _deferred(dg: HeapDigraph, ex: np.ndarray) -> np.ndarray:
    """The edges to defer, given which vertices exact roots keep alive."""
    ex = ex.copy()
    ex[dg.pseudo_root] = True                         # the pseudo-root keeps its edges
    drop = ~ex[dg.src] & ex[dg.dst]
    dg.deferred_edges = int(drop.sum())
    return drop


def csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, adj): the successor lists of ``n`` vertices given as edge arrays,
    each vertex's edges in input order; the compiled kernel's counting sort
    where it builds, else a stable numpy argsort."""
    from .._markkernel import load
    src = np.ascontiguousarray(src, np.int64)
    dst = np.ascontiguousarray(dst, np.int64)
    k = load()
    if k is None:
        o = np.argsort(src, kind="stable")
        return np.searchsorted(src[o], np.arange(n + 1)), dst[o]
    ptr = np.empty(n + 1, np.int64)
    adj = np.empty(max(len(src), 1), np.int64)
    rc = k.lib.mt_csr(n, len(src), k.ffi.from_buffer("int64_t[]", src), k.ffi.from_buffer("int64_t[]", dst),
                      k.ffi.from_buffer("int64_t[]", ptr), k.ffi.from_buffer("int64_t[]", adj))
    if rc != 0:
        raise MemoryError("mt_csr failed") if rc == -2 else ValueError("an edge names no vertex")
    return ptr, adj[:len(src)]


def _idom_c(k, dg: HeapDigraph, exact_roots: np.ndarray) -> np.ndarray:
    ffi, lib = k.ffi, k.lib
    nv = dg.n_vertices
    x = nv                                            # the exact roots' source
    ptr, adj = csr(nv + 1, np.concatenate([dg.src, np.full(len(exact_roots), x)]),
                   np.concatenate([dg.dst, exact_roots]))
    seen = np.zeros(nv + 1, np.uint8)
    start = np.array([x], np.int64)
    if lib.mt_reach(nv + 1, ffi.from_buffer("int64_t[]", ptr), ffi.from_buffer("int64_t[]", adj), 1,
                    ffi.from_buffer("int64_t[]", start), ffi.from_buffer("uint8_t[]", seen)) < 0:
        raise MemoryError("mt_reach failed")
    keep = ~_deferred(dg, seen[:nv].astype(bool))
    del ptr, adj
    ptr, adj = csr(nv, dg.src[keep], dg.dst[keep])
    idom = np.empty(nv, np.int64)
    if lib.mt_dominators(nv, ffi.from_buffer("int64_t[]", ptr), ffi.from_buffer("int64_t[]", adj),
                         dg.pseudo_root, ffi.from_buffer("int64_t[]", idom)) < 0:
        raise MemoryError("mt_dominators failed")
    return idom


def _idom_igraph(dg: HeapDigraph, exact_roots: np.ndarray) -> np.ndarray:
    import igraph
    nv = dg.n_vertices
    x = nv
    g = igraph.Graph(n=nv + 1, directed=True)
    g.add_edges(np.column_stack([np.concatenate([dg.src, np.full(len(exact_roots), x)]),
                                 np.concatenate([dg.dst, exact_roots])]))
    ex = np.zeros(nv + 1, bool)
    ex[np.asarray(g.subcomponent(x, mode="out"), dtype=np.int64)] = True
    drop = _deferred(dg, ex[:nv])
    g.delete_edges(np.concatenate([np.flatnonzero(drop), len(dg.src) + np.arange(len(exact_roots))]).tolist())
    raw = g.dominator(dg.pseudo_root, mode="out")
    # igraph: -1 for the root itself, NaN for vertices it does not reach
    f = np.asarray(raw[:nv], dtype=np.float64)
    idom = np.where(np.isnan(f), NO_IDOM, f).astype(np.int64)
    idom[dg.pseudo_root] = NO_IDOM
    return idom


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
class SiteRow:
    site: str                 # "file:line in function" ("" for objects without a site)
    type: str                 # the site's type ("" unknown)
    objects: int
    shallow_bytes: int
    retained_bytes: int       # retained by the site's objects that no other object of it dominates


@dataclass
class HolderRow:
    holder: str               # e.g. "global cache", "thread 4242 #1 main"
    kind: str                 # "global" | "tls" | "frame" | "stack" | "other"
    roots: int
    retained_bytes: int
    exact: bool               # every root of this holder is exact


def type_labels(graph: HeapGraph) -> tuple[np.ndarray, list[str]]:
    """(a label id per object, the label names): the type's name (the type
    derived from the holder where there is one), or
    ``unkN`` for an untyped object of N bytes.  Types of one name share a
    label.  Vectorised: a Python step per distinct type or size, not per object."""
    n = len(graph)
    names: list[str] = []
    of: dict[str, int] = {}
    lid = np.empty(n, np.int64)
    label = graph.label_ids                     # a derived (container) type names first
    typed = label != 0
    if typed.any():
        u, inv = np.unique(label[typed], return_inverse=True)
        ids = np.array([of.setdefault(graph.type_name(int(t)), len(of)) for t in u], np.int64)
        lid[typed] = ids[inv]
    if (~typed).any():
        u, inv = np.unique(graph.sizes[~typed], return_inverse=True)
        ids = np.array([of.setdefault(f"unk{int(sz)}", len(of)) for sz in u], np.int64)
        lid[~typed] = ids[inv]
    names = [""] * len(of)
    for k, v in of.items():
        names[v] = k
    return lid, names


def by_type(graph: HeapGraph, dom: DominatorTree) -> list[TypeRow]:
    """MAT's histogram with retained sizes: per type, the objects, their bytes,
    and the bytes retained by the type's *topmost* objects (those whose
    dominator chain holds no other object of the type, so nested objects of
    one type are not counted twice).  Reached objects only, biggest retained
    first."""
    n = len(graph)
    idx = np.flatnonzero(dom.reached[:n])
    lab, names = type_labels(graph)
    lid = np.full(dom.digraph.n_vertices, -1, np.int64)
    lid[:n] = lab
    top = _topmost_of_label(dom, lid, idx)
    k = len(names)
    li = lab[idx]
    sizes = graph.sizes[idx].astype(np.float64)
    objects = np.bincount(li, minlength=k)
    shallow = np.rint(np.bincount(li, weights=sizes, minlength=k)).astype(np.int64)
    typed = np.bincount(li, weights=(graph.type_ids[idx] != 0).astype(np.float64), minlength=k)
    ret = np.rint(np.bincount(li[top], weights=dom.retained[idx][top].astype(np.float64),
                              minlength=k)).astype(np.int64)
    rows = [TypeRow(names[j], int(objects[j]), int(shallow[j]), int(ret[j]), int(typed[j]))
            for j in np.flatnonzero(objects)]
    return sorted(rows, key=lambda r: (-r.retained_bytes, -r.shallow_bytes, r.type))


def _path_sums_c(parent: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(path sums, tree root of each vertex) by the compiled kernel
    (``mt_path_sums``: parents before children, O(n)), or None without it
    or when ``parent`` is not a forest."""
    from .._markkernel import load
    n = len(parent)
    k = load() if n else None
    if k is None:
        return None
    par = np.ascontiguousarray(parent, np.int64)
    w = np.ascontiguousarray(weight, np.int64)
    out, root = np.empty(n, np.int64), np.empty(n, np.int64)
    f = k.ffi
    done = k.lib.mt_path_sums(n, f.from_buffer("int64_t[]", par), f.from_buffer("int64_t[]", w),
                              f.from_buffer("int64_t[]", out), f.from_buffer("int64_t[]", root))
    if done == -2:
        raise MemoryError("mt_path_sums: out of memory")
    return (out, root) if done == n else None


def path_sums(parent: np.ndarray, weight: np.ndarray, *, kernel: str = "auto") -> np.ndarray:
    """Sum of ``weight`` over each vertex and all its ancestors in the forest
    ``parent``: the compiled kernel (O(n)) where it builds, else (and as its
    test oracle, ``kernel="numpy"``) pointer doubling, ``O(n log depth)``,
    exact below 2**53."""
    got = _path_sums_c(parent, weight) if kernel in ("auto", "c") else None
    if got is not None:
        return got[0]
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


def preorder(parent: np.ndarray, root: int, sizes: np.ndarray, *, kernel: str = "auto") -> np.ndarray:
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
    got = _path_sums_c(parent, w) if kernel in ("auto", "c") else None
    if got is not None:
        pos, up = got
    else:
        pos = path_sums(parent, w, kernel="numpy")
        up = np.where(parent < 0, np.arange(n), parent)
        for _ in range(64):                              # the forest root of each vertex
            nxt = up[up]
            if np.array_equal(nxt, up):
                break
            up = nxt
    pos[up != root] = -1
    return pos


def by_site(graph: HeapGraph, dom: DominatorTree) -> list[SiteRow]:
    """:func:`by_type` by allocation site (a ``--alloc-sites`` build): per
    site, the reached objects it allocated, their bytes, and what its topmost
    ones retain; objects without a site are one row (site "").  Empty for a
    graph without sites."""
    if graph.node_site is None or not len(graph.sites):
        return []
    n = len(graph)
    idx = np.flatnonzero(dom.reached[:n])
    k = len(graph.sites) + 1
    lab = np.where(graph.node_site >= 0, graph.node_site, k - 1).astype(np.int64)
    lid = np.full(dom.digraph.n_vertices, -1, np.int64)
    lid[:n] = lab
    top = _topmost_of_label(dom, lid, idx)
    li = lab[idx]
    objects = np.bincount(li, minlength=k)
    shallow = np.rint(np.bincount(li, weights=graph.sizes[idx].astype(np.float64), minlength=k)).astype(np.int64)
    ret = np.rint(np.bincount(li[top], weights=dom.retained[idx][top].astype(np.float64),
                              minlength=k)).astype(np.int64)
    rows = []
    for j in np.flatnonzero(objects).tolist():
        s = graph.sites[j] if j < k - 1 else None
        tname = graph.type_name(s.type_id) if s is not None and s.type_id in graph.types else ""
        rows.append(SiteRow(s.where if s is not None else "", tname, int(objects[j]), int(shallow[j]), int(ret[j])))
    return sorted(rows, key=lambda r: (-r.retained_bytes, -r.shallow_bytes, r.site))


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
