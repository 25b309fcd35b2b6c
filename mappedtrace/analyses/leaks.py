"""Leaks (DESIGN step 10): in-use objects the roots do not reach.

:func:`find_leaks` groups the unreachable objects of a
:class:`~mappedtrace.graph.HeapGraph` into *leaked structures* (weakly
connected components of the unreachable subgraph) and classifies each
object:

* **direct**: no other unreachable object points to it, or it is the entry
  of an unreachable cycle: the strongly connected components (SCCs) of the
  unreachable subgraph are computed with Tarjan's algorithm (R. Tarjan,
  "Depth-first search and linear graph algorithms", SIAM J. Comput. 1972;
  iterative here, O(V+E)); an SCC that no *other* unreachable SCC points to
  has one direct object, its lowest address (deterministic);
* **indirect**: every other unreachable object.

Edges between unreachable objects come from the marker's leak scan, which is
conservative (a leaked object's type is not known from the roots): a stale
word inside a leaked object can make a direct leak look indirect, never the
reverse.

Type of a leaked object, in order: its own type (if the graph typed it, or
named it by its allocation site in a ``--alloc-sites`` build: "site"); a
typed pointer slot of another leaked object whose type is known, pointing at
its first byte ("pointer"); else a unique struct of the type table whose
malloc usable size equals the chunk's and whose pointer slots all hold null
or plausible pointers, at least one into the heap ("size", a heuristic; never
a zero-sized, opaque, type-erased or vtable type); else
``unk<size>`` with a short preview of the bytes.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MappedTraceError
from ..graph import EDGE_WEAK, HOW_UNREACHED, HeapGraph

SLOT_UNTYPED = 0x1
SLOT_FUNCTION = 0x2
SLOT_CONSERVATIVE = 0x4
SLOT_WEAK = 0x8
TYPE_FLEX = 0x2
TYPE_ERASED = 0x4

#: bytes of an object shown in a preview
PREVIEW_BYTES = 48
#: leaks that get a preview (the first ones, biggest structures first)
PREVIEW_LIMIT = 2000


@dataclass
class Leak:
    """One leaked object."""

    address: int
    size: int
    type: str                 # type name, or "unk<size>"
    kind: str                 # "direct" | "indirect"
    node: int                 # index in the graph
    structure: int            # index in LeakReport.structures
    type_id: int = 0
    type_source: str = ""     # "own" | "site" | "pointer" | "size" | "holder" (derived, analyses/containers.py) | "" (unknown)
    preview: str = ""
    #: where it was allocated (``file:line in function``; "" unknown or not a --alloc-sites build)
    site: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "size": self.size, "type": self.type, "kind": self.kind,
                "structure": self.structure, "type_source": self.type_source or "unknown",
                "preview": self.preview, "site": self.site or None}


@dataclass
class LeakStructure:
    """A weakly connected group of leaked objects."""

    index: int
    objects: int
    bytes: int
    direct: list[int]          # addresses of its direct leaks
    types: dict[str, int]      # type name → objects
    leaks: Sequence[Leak] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "objects": self.objects, "bytes": self.bytes,
                "direct": self.direct, "types": self.types}


class _Columns:
    """The leaked objects in report order, column-wise: a heap with 200 000
    leaks makes its :class:`Leak` objects only when they are looked at (making
    them all took about 2 s)."""

    def __init__(self, addr: np.ndarray, size: np.ndarray, direct: np.ndarray, node: np.ndarray,
                 structure: np.ndarray, tid: np.ndarray, src: np.ndarray, code: np.ndarray,
                 names: list[str], bounds: np.ndarray, previews: dict[int, str],
                 site: np.ndarray | None = None, sites: list[str] | None = None):
        self.addr, self.size, self.direct, self.node = addr, size, direct, node
        self.site = site if site is not None else np.full(len(addr), -1, np.int64)
        self.sites = sites or []        # "file:line in function" of each site index
        self.structure, self.tid, self.src, self.code = structure, tid, src, code
        self.names = names              # type name of each code
        self.bounds = bounds            # structure k is rows bounds[k] .. bounds[k + 1]
        self.previews = previews        # row → preview

    def leak(self, i: int) -> Leak:
        return Leak(self.addr.item(i), self.size.item(i), self.names[self.code.item(i)],
                    "direct" if self.direct.item(i) else "indirect", self.node.item(i),
                    self.structure.item(i), self.tid.item(i), _Inferrer.SOURCES[self.src.item(i)],
                    self.previews.get(i, ""), self.site_name(self.site.item(i)))

    def site_name(self, k: int) -> str:
        return self.sites[k] if k >= 0 else ""

    def structure_at(self, k: int) -> LeakStructure:
        lo, hi = self.bounds.item(k), self.bounds.item(k + 1)
        types: dict[str, int] = {}
        for c in self.code[lo:hi].tolist():          # in leak order, as the JSON lists them
            name = self.names[c]
            types[name] = types.get(name, 0) + 1
        return LeakStructure(k, hi - lo, int(self.size[lo:hi].sum()),
                             self.addr[lo:hi][self.direct[lo:hi]].tolist(), types, LeakList(self, lo, hi))


class _View(Sequence):
    """A read-only, list-like view whose items are made on access by ``_item``."""

    def _item(self, i: int):
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._item(i)

    def __iter__(self):
        return (self._item(i) for i in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, tuple, _View)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented


class LeakList(_View):
    """A read-only, list-like view of leaks (:class:`Leak` made on access)."""

    def __init__(self, cols: _Columns | None, lo: int = 0, hi: int = 0):
        self._cols, self._lo, self._hi = cols, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    def _item(self, i: int):
        return self._cols.leak(self._lo + i)

    def __repr__(self) -> str:
        return f"<{len(self)} leaks>"


class StructureList(_View):
    """A read-only, list-like view of the leaked structures, biggest first."""

    def __init__(self, cols: _Columns | None):
        self._cols = cols

    def __len__(self) -> int:
        return 0 if self._cols is None else len(self._cols.bounds) - 1

    def _item(self, i: int):
        return self._cols.structure_at(i)

    def __repr__(self) -> str:
        return f"<{len(self)} structures>"


@dataclass
class LeakReport:
    """The result of :func:`find_leaks`; ``to_dict()`` is the leak JSON of DESIGN.md.

    ``leaks`` and ``structures`` are list-like sequences whose items are made
    as they are accessed."""

    summary: dict[str, int]
    leaks: Sequence[Leak]
    structures: Sequence[LeakStructure]
    precision: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    #: what the report says first (binaries without maps: mappedtrace.session.maps_notes)
    notes: list[str] = field(default_factory=list)
    #: how a live process was captured (mode, pause_ms…), None for a snapshot file
    capture: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"summary": dict(self.summary), "notes": list(self.notes),
               "leaks": [l.as_dict() for l in self.leaks],
               "structures": [s.as_dict() for s in self.structures],
               "sites": self.to_dict_sites(),
               "precision": dict(self.precision), "warnings": list(self.warnings)}
        if self.capture is not None:
            out["capture"] = dict(self.capture)
        return out

    def leak_rows(self):
        """The values of :meth:`Leak.as_dict` of every leak, in order, as tuples
        ``(address, size, type, kind, structure, type_source, preview, site)``,
        without making the :class:`Leak` objects."""
        cols = getattr(self.leaks, "_cols", None)
        if cols is None:
            for l in self.leaks:
                d = l.as_dict()
                yield tuple(d.values())
            return
        names, prev, src, sn = cols.names, cols.previews, _Inferrer.SOURCES, cols.sites
        for i, (a, sz, c, dr, st, so, si) in enumerate(zip(cols.addr.tolist(), cols.size.tolist(),
                                                           cols.code.tolist(), cols.direct.tolist(),
                                                           cols.structure.tolist(), cols.src.tolist(),
                                                           cols.site.tolist())):
            yield (a, sz, names[c], "direct" if dr else "indirect", st, src[so] or "unknown", prev.get(i, ""),
                   sn[si] if si >= 0 else None)

    def structure_rows(self):
        """The values of :meth:`LeakStructure.as_dict` of every structure, in
        order: ``(index, objects, bytes, direct, types)``."""
        cols = getattr(self.leaks, "_cols", None)
        if cols is None:
            for st in self.structures:
                yield tuple(st.as_dict().values())
            return
        b = cols.bounds.tolist()
        if len(b) < 2:
            return
        nbytes = np.add.reduceat(cols.size, cols.bounds[:-1]).tolist()
        addr, direct, code, names = cols.addr.tolist(), cols.direct.tolist(), cols.code.tolist(), cols.names
        for k in range(len(b) - 1):
            lo, hi = b[k], b[k + 1]
            if hi - lo == 1:
                yield (k, 1, nbytes[k], [addr[lo]] if direct[lo] else [], {names[code[lo]]: 1})
                continue
            types: dict[str, int] = {}
            for c in code[lo:hi]:
                types[names[c]] = types.get(names[c], 0) + 1
            yield (k, hi - lo, nbytes[k], [addr[i] for i in range(lo, hi) if direct[i]], types)

    def to_dict_sites(self) -> list[dict[str, Any]]:
        """``sites`` of the leak JSON: :meth:`by_site` as dicts."""
        return [dict(zip(("site", "type", "objects", "bytes", "direct", "indirect"), r)) for r in self.by_site()]

    def by_site(self) -> list[tuple[str, str, int, int, int, int]]:
        """(site, type, objects, bytes, direct, indirect) per allocation site and
        type, most bytes first; site "" for leaks without one.  Empty when no
        leak has a site (a build without ``--alloc-sites``)."""
        acc: dict[tuple[str, str], list[int]] = {}
        cols = getattr(self.leaks, "_cols", None)
        if cols is not None:
            if not (cols.site >= 0).any():
                return []
            rows = zip(cols.site.tolist(), cols.code.tolist(), cols.size.tolist(), cols.direct.tolist())
            it = ((cols.site_name(si), cols.names[c], sz, dr) for si, c, sz, dr in rows)
        else:
            it = ((l.site, l.type, l.size, l.kind == "direct") for l in self.leaks)
        for site, t, sz, dr in it:
            a = acc.setdefault((site, t), [0, 0, 0, 0])
            a[0] += 1
            a[1] += sz
            a[2 if dr else 3] += 1
        if not any(site for site, _ in acc):
            return []
        return sorted(((s, t, *v) for (s, t), v in acc.items()), key=lambda r: (-r[3], -r[2], r[0], r[1]))

    def by_type(self) -> list[tuple[str, int, int, int, int]]:
        """(type, objects, bytes, direct, indirect) per type, most bytes first."""
        cols = getattr(self.leaks, "_cols", None)
        if cols is None:
            acc: dict[str, list[int]] = {}
            for l in self.leaks:
                a = acc.setdefault(l.type, [0, 0, 0, 0])
                a[0] += 1
                a[1] += l.size
                a[2 if l.kind == "direct" else 3] += 1
            rows = [(k, *v) for k, v in acc.items()]
        else:
            k = len(cols.names)
            cnt = np.bincount(cols.code, minlength=k)
            nbytes = np.zeros(k, np.int64)
            np.add.at(nbytes, cols.code, cols.size)
            d = np.bincount(cols.code, weights=cols.direct, minlength=k).astype(np.int64)
            rows = [(cols.names[c], int(cnt[c]), int(nbytes[c]), int(d[c]), int(cnt[c] - d[c]))
                    for c in np.flatnonzero(cnt).tolist()]
        return sorted(rows, key=lambda r: (-r[2], -r[1], r[0]))


# --------------------------------------------------------------------------
def _tarjan(m: int, ptr: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """SCC id of each of ``m`` vertices (CSR ``ptr``/``adj``), Tarjan, iterative."""
    index = [-1] * m
    low = [0] * m
    onstack = [False] * m
    comp = np.full(m, -1, np.int64)
    stack: list[int] = []
    counter = ncomp = 0
    ptr_l = ptr.tolist()
    adj_l = adj.tolist()
    for root in range(m):
        if index[root] >= 0:
            continue
        work = [(root, ptr_l[root])]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        onstack[root] = True
        while work:
            v, i = work[-1]
            if i < ptr_l[v + 1]:
                work[-1] = (v, i + 1)
                w = adj_l[i]
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    onstack[w] = True
                    work.append((w, ptr_l[w]))
                elif onstack[w] and index[w] < low[v]:
                    low[v] = index[w]
                continue
            work.pop()
            if work:
                u = work[-1][0]
                if low[v] < low[u]:
                    low[u] = low[v]
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    onstack[w] = False
                    comp[w] = ncomp
                    if w == v:
                        break
                ncomp += 1
    return comp


def _wcc(m: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weakly connected component label (its lowest vertex) of each vertex; union-find."""
    parent = list(range(m))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            if rx < ry:
                parent[ry] = rx
            else:
                parent[rx] = ry
    return np.array([find(x) for x in range(m)], dtype=np.int64)


def _components(m: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SCC id, WCC label) of ``m`` vertices with edges ``a[i] -> b[i]`` (sorted by a).

    Only the vertices that have an edge go through the Python loops; every
    other vertex is its own component (a leak heap is mostly such singletons).
    """
    comp = np.arange(m, dtype=np.int64)
    wcc = np.arange(m, dtype=np.int64)
    if not len(a):
        return comp, wcc
    inv = np.unique(np.concatenate([a, b]))
    k = len(inv)
    la, lb = np.searchsorted(inv, a), np.searchsorted(inv, b)
    ptr = np.searchsorted(la, np.arange(k + 1))
    sub = _tarjan(k, ptr, lb)
    comp[inv] = m + sub                 # ids past m: never collide with the singletons'
    wcc[inv] = inv[_wcc(k, la, lb)]
    _, comp = np.unique(comp, return_inverse=True)
    return comp.astype(np.int64), wcc


def _usable(n: int) -> int:
    """glibc x86-64 malloc usable size for a request of n bytes."""
    return max(32, (n + 8 + 15) & ~15) - 8


def _slot_words(t, size: int) -> list[tuple[int, int, int]]:
    """(offset, target type id, flags) of the slots of one ``t`` (plus FLEX elements)."""
    out = []
    for s in sorted(t.slots, key=lambda s: s.offset):
        cnt = max(1, int(s.count)) if int(s.stride) else 1
        for i in range(min(cnt, max(0, size // 8) + 1)):
            off = int(s.offset) + i * int(s.stride)
            if off + 8 > size:
                break
            out.append((off, int(s.target), int(s.flags)))
    return out


def _preview(data: bytes | None) -> str:
    """Printable runs (4+ chars) of the bytes, escaped; else the first 16 bytes in hex."""
    if not data:
        return ""
    runs = _PRINTABLE.findall(data)
    if runs:
        return " ".join(repr(r.decode("ascii")) for r in runs)[:80]
    return data[:16].hex(" ")


class _Local:
    """Node index → index among the (sorted) unreached nodes, -1 for any other
    node: a binary search, not a map of the whole heap (an int64 per object, two
    of them, for a few thousand leaks: 320 MB at 20 M objects; issue #13)."""

    def __init__(self, nodes: np.ndarray):
        self.nodes = nodes

    def __getitem__(self, idx) -> np.ndarray:
        x = np.asarray(idx, np.int64)
        m = len(self.nodes)
        if m == 0:
            return np.full(x.shape, -1, np.int64)
        i = np.minimum(np.searchsorted(self.nodes, x), m - 1)
        return np.where(self.nodes[i] == x, i, -1)


class _Inferrer:
    """Type inference over the leaked objects, vectorised per type."""

    SOURCES = ("", "own", "pointer", "size", "site", "holder")

    def __init__(self, g: HeapGraph, unreached: np.ndarray):
        self.g = g
        self.nodes = unreached
        self.local = _Local(unreached)
        self.tid = np.zeros(len(unreached), np.uint64)
        self.src = np.zeros(len(unreached), np.uint8)
        self._cands: dict[int, list] | None = None
        self._slots: dict[int, tuple] = {}

    def _type_slots(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, pointee ids) of the exact typed slots of one element of ``tid``."""
        r = self._slots.get(tid)
        if r is None:
            t = self.g.types[tid]
            ws = [(o, tg) for o, tg, fl in _slot_words(t, int(t.size))
                  if tg and not fl & (SLOT_UNTYPED | SLOT_FUNCTION | SLOT_CONSERVATIVE | SLOT_WEAK)]
            r = (np.array([w[0] for w in ws], np.uint64), np.array([w[1] for w in ws], np.uint64))
            self._slots[tid] = r
        return r

    def assign(self, li: np.ndarray, tids: np.ndarray, source: int) -> np.ndarray:
        """Type the untyped ones of ``li`` (first occurrence wins); return them in order."""
        free = self.tid[li] == 0
        li, tids = li[free], tids[free]
        if not len(li):
            return li
        u, first = np.unique(li, return_index=True)
        order = np.argsort(first, kind="stable")
        u, first = u[order], first[order]
        self.tid[u] = tids[first]
        self.src[u] = source
        return u

    def propagate(self, frontier: np.ndarray, levels: int) -> None:
        g = self.g
        for _ in range(levels):
            if not len(frontier):
                return
            nxt = []
            ft = self.tid[frontier]
            for tid in np.unique(ft).tolist():
                if tid not in g.types:
                    continue
                offs, tg = self._type_slots(tid)
                if not len(offs):
                    continue
                li = frontier[ft == tid]
                w, valid = g.words(self.nodes[li], offs)
                d = g.find_many(w.reshape(-1)).reshape(w.shape)
                ld = self.local[np.where(d >= 0, d, len(g))]
                at0 = (d >= 0) & (w == g.addresses[np.maximum(d, 0)])
                known = np.array([self._informative(int(x)) for x in tg.tolist()], bool)
                # the pointee must fit in the chunk it points to
                tsz = np.array([int(g.types[int(x)].size) if int(x) in g.types else 0
                                for x in tg.tolist()], np.uint64)
                fits = tsz[None, :] <= g.sizes[np.maximum(d, 0)]
                hit = valid & at0 & (ld >= 0) & known[None, :] & fits
                rows, cols = np.nonzero(hit)          # row-major: node order, then slot order
                nxt.append(self.assign(ld[rows, cols], tg[cols], 2))
            frontier = np.concatenate(nxt) if nxt else np.zeros(0, np.int64)

    def _informative(self, tid: int) -> bool:
        """A type worth giving an object: known, sized, not code, not a vtable."""
        t = self.g.types.get(tid)
        return (t is not None and int(t.size) > 0 and t.kind not in ("unknown", "function")
                and "{vtable" not in t.name)

    def _candidates(self) -> dict[int, list]:
        if self._cands is None:
            self._cands = {}
            for tid, t in self.g.types.items():
                if (int(t.flags) & (TYPE_FLEX | TYPE_ERASED) or t.kind not in ("struct", "union", "enum")
                        or not self._informative(int(tid))):
                    continue
                offs = [o for o, _, fl in _slot_words(t, int(t.size))
                        if not fl & (SLOT_FUNCTION | SLOT_CONSERVATIVE)]
                if offs and int(t.size) > 0:
                    self._cands.setdefault(_usable(int(t.size)), []).append(
                        (int(tid), np.array(offs, np.uint64)))
        return self._cands

    def by_size(self, li: np.ndarray) -> np.ndarray:
        """Type ``li`` by a unique size-and-content match; return the typed ones."""
        g = self.g
        li = li[self.tid[li] == 0]
        sizes = g.sizes[self.nodes[li]]
        out = []
        for size, cands in self._candidates().items():
            sel = li[sizes == size]
            if not len(sel):
                continue
            fits = np.zeros(len(sel), np.int64)
            pick = np.zeros(len(sel), np.uint64)
            for tid, offs in cands:
                w, valid = g.words(self.nodes[sel], offs)
                flat = w.reshape(-1)
                inheap = (g.find_many(flat) >= 0).reshape(w.shape)
                plausible = (w == 0) | inheap | g.mapped_many(flat).reshape(w.shape)
                # every slot plausible, and at least one pointing into the heap
                ok = np.all(plausible & valid, axis=1) & np.any(inheap, axis=1)
                fits += ok
                pick = np.where(ok, np.uint64(tid), pick)
            one = fits == 1
            out.append(self.assign(sel[one], pick[one], 3))
        return np.concatenate(out) if out else np.zeros(0, np.int64)


_PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")


def _by_holder(g: HeapGraph, inf: _Inferrer, unreached: np.ndarray, local: _Local, levels: int) -> None:
    from .containers import derive_from
    known = np.nonzero((inf.tid != 0) & (inf.src != 5))[0]
    if len(known):
        named = derive_from(g, unreached[known], inf.tid[known])
        inf.propagate(inf.assign(local[named], g.derived_ids[named], 5), levels)


def find_leaks(graph: HeapGraph, target=None, *, infer_budget: int = 1_000_000) -> LeakReport:
    """Find the leaked objects of ``graph`` and classify them.

    :param graph: a graph from :func:`mappedtrace.trace.mark`.
    :param target: unused when the graph carries its snapshot bytes (it does
        when built by ``mark``); kept for symmetry with the other analyses.
    :param infer_budget: bound on the levels of pointer propagation in type inference.
    :returns: a :class:`LeakReport`; ``to_dict()`` gives the leak JSON.
    """
    g = graph
    n = len(g)
    unreached = np.nonzero(g.how == HOW_UNREACHED)[0].astype(np.int64)
    m = len(unreached)
    local = _Local(unreached)
    e = g.edges_from(g.how == HOW_UNREACHED)      # only the leaked objects' edges are needed
    if len(e):
        keep = (local[e["src"]] >= 0) & (local[e["dst"]] >= 0) & ((e["flags"] & EDGE_WEAK) == 0)
        a, b = local[e["src"][keep]], local[e["dst"][keep]]
    else:
        a = b = np.zeros(0, np.int64)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    comp, wcc = _components(m, a, b)
    has_in = np.zeros(int(comp.max()) + 1 if m else 0, bool)
    cross = comp[a] != comp[b]
    has_in[comp[b[cross]]] = True
    # entry of each SCC: its lowest local index = lowest address (nodes are address-ordered)
    entry = np.full(len(has_in), m, np.int64)
    np.minimum.at(entry, comp, np.arange(m))
    direct = np.zeros(m, bool)
    direct[entry[~has_in]] = True

    inf = _Inferrer(g, unreached)
    levels = max(1, infer_budget)
    if g.derived_ids is not None:             # named by their holder (analyses/containers.py) first
        held = np.nonzero(g.derived_ids[unreached] != 0)[0]
        inf.propagate(inf.assign(held, g.derived_ids[unreached][held], 5), levels)
    own_t = g.type_ids_of(unreached)
    own = np.nonzero(own_t != 0)[0]
    first = inf.assign(own, own_t[own], 1)
    # an unreached object is never typed by the marker: a type it has is its site's
    if g.node_site is not None:
        inf.src[first[g.node_site[unreached[first]] >= 0]] = 4
    inf.propagate(first, levels)
    inf.propagate(inf.by_size(np.nonzero(direct)[0]), levels)
    # containers in the leaked objects typed so far name their buffers (each
    # container checked against the buffer: analyses/containers.py)
    _by_holder(g, inf, unreached, local, levels)
    inf.propagate(inf.by_size(np.arange(m)), levels)
    _by_holder(g, inf, unreached, local, levels)

    # structures, biggest first (bytes, then objects, then lowest address);
    # inside one: direct leaks first, then by address
    cols = None
    nstruct = 0
    if m:
        addr = g.addresses[unreached]
        size = g.sizes[unreached].astype(np.int64)
        _, ginv = np.unique(wcc, return_inverse=True)
        gbytes = np.bincount(ginv, weights=size).astype(np.int64)
        gcount = np.bincount(ginv)
        gaddr = np.full(len(gcount), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(gaddr, ginv, addr.astype(np.int64))
        grank = np.empty(len(gcount), np.int64)
        grank[np.lexsort((gaddr, -gcount, -gbytes))] = np.arange(len(gcount))
        rank = grank[ginv]
        order = np.lexsort((addr, ~direct, rank))
        nstruct = len(gcount)
        tid, src = inf.tid[order], inf.src[order]
        size_o = size[order]
        # one code per type name: the table's name of a typed leak, else unk<size>
        names: list[str] = []
        index: dict[str, int] = {}

        def code_of(name: str) -> int:
            if name not in index:
                index[name] = len(names)
                names.append(name)
            return index[name]

        code = np.empty(m, np.int64)
        typed = tid != 0
        if typed.any():
            ut, inv_t = np.unique(tid[typed], return_inverse=True)
            code[typed] = np.array([code_of(g.type_name(int(x))) for x in ut.tolist()], np.int64)[inv_t]
        if (~typed).any():
            us, inv_s = np.unique(size_o[~typed], return_inverse=True)
            code[~typed] = np.array([code_of(f"unk{int(x)}") for x in us.tolist()], np.int64)[inv_s]
        bounds = np.searchsorted(rank[order], np.arange(nstruct + 1))
        site = g.node_site[unreached[order]] if g.node_site is not None else None
        cols = _Columns(addr[order].astype(np.int64), size_o, direct[order], unreached[order], rank[order],
                        tid.astype(np.int64), src, code, names, bounds, {},
                        site, [s.where for s in getattr(g, "sites", [])])
        # previews of the first PREVIEW_LIMIT leaks whose type is unknown or guessed
        for i in np.flatnonzero(~typed | (src == 3))[:PREVIEW_LIMIT].tolist():
            data = g.object_bytes(cols.node.item(i), PREVIEW_BYTES)
            if data is None and target is not None:
                try:
                    data = target.read(cols.addr.item(i), min(cols.size.item(i), PREVIEW_BYTES))
                except MappedTraceError:        # a preview is best effort
                    data = None
            cols.previews[i] = _preview(data)
    leaks = LeakList(cols, 0, m)
    structures = StructureList(cols)
    reached = g.how != HOW_UNREACHED
    ndirect = int(direct.sum())
    summary = {
        "leaked_objects": m,
        "leaked_bytes": int(g.sizes[unreached].sum()) if m else 0,
        "direct_objects": ndirect,
        "indirect_objects": m - ndirect,
        "reachable_objects": int(reached.sum()),
        # (sum with a mask: ``sizes[reached]`` was a copy of 8 bytes per object)
        "reachable_bytes": int(g.sizes.sum(where=reached)) if n else 0,
        "structures": nstruct,
    }
    return LeakReport(summary, leaks, structures, g.precision.as_dict(), list(g.warnings))
