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

Type of a leaked object, in order: its own type (if the graph typed it); a
typed pointer slot of another leaked object whose type is known, pointing at
its first byte ("pointer"); else a unique struct of the type table whose
malloc usable size equals the chunk's and whose pointer slots all hold null
or plausible pointers, with at least one non-null ("size", a heuristic); else
``unk<size>`` with a short preview of the bytes.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..graph import EDGE_WEAK, HOW_UNREACHED, HeapGraph

SLOT_UNTYPED = 0x1
SLOT_FUNCTION = 0x2
SLOT_CONSERVATIVE = 0x4
SLOT_WEAK = 0x8
TYPE_FLEX = 0x2

#: bytes of an object shown in a preview
PREVIEW_BYTES = 48


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
    type_source: str = ""     # "own" | "pointer" | "size" | "" (unknown)
    preview: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "size": self.size, "type": self.type, "kind": self.kind,
                "structure": self.structure, "type_source": self.type_source or "unknown",
                "preview": self.preview}


@dataclass
class LeakStructure:
    """A weakly connected group of leaked objects."""

    index: int
    objects: int
    bytes: int
    direct: list[int]          # addresses of its direct leaks
    types: dict[str, int]      # type name → objects
    leaks: list[Leak] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "objects": self.objects, "bytes": self.bytes,
                "direct": self.direct, "types": self.types}


@dataclass
class LeakReport:
    """The result of :func:`find_leaks`; ``to_dict()`` is the leak JSON of DESIGN.md."""

    summary: dict[str, int]
    leaks: list[Leak]
    structures: list[LeakStructure]
    precision: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "leaks": [l.as_dict() for l in self.leaks],
                "structures": [s.as_dict() for s in self.structures],
                "precision": dict(self.precision), "warnings": list(self.warnings)}

    def by_type(self) -> list[tuple[str, int, int, int, int]]:
        """(type, objects, bytes, direct, indirect) per type, most bytes first."""
        acc: dict[str, list[int]] = {}
        for l in self.leaks:
            a = acc.setdefault(l.type, [0, 0, 0, 0])
            a[0] += 1
            a[1] += l.size
            a[2 if l.kind == "direct" else 3] += 1
        return sorted(((k, *v) for k, v in acc.items()), key=lambda r: (-r[2], -r[1], r[0]))


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
    runs, cur = [], bytearray()
    for b in data + b"\0":
        if 0x20 <= b < 0x7F:
            cur.append(b)
            continue
        if len(cur) >= 4:
            runs.append(cur.decode("ascii"))
        cur = bytearray()
    if runs:
        return " ".join(repr(r) for r in runs)[:80]
    return data[:16].hex(" ")


class _Inferrer:
    def __init__(self, g: HeapGraph, unreached: np.ndarray):
        self.g = g
        self.local = {int(n): i for i, n in enumerate(unreached)}
        self.nodes = unreached
        self.typ: dict[int, tuple[int, str]] = {}
        self.queue: deque[int] = deque()
        self._cands: dict[int, list] | None = None

    def word(self, node: int, off: int) -> int | None:
        b = self.g.object_bytes(node, off + 8)
        if b is None or len(b) < off + 8:
            return None
        return int.from_bytes(b[off:off + 8], "little")

    def set(self, li: int, tid: int, how: str) -> None:
        if li not in self.typ:
            self.typ[li] = (tid, how)
            self.queue.append(li)

    def propagate(self, budget: int) -> int:
        g = self.g
        while self.queue and budget > 0:
            li = self.queue.popleft()
            budget -= 1
            t = g.types.get(self.typ[li][0])
            if t is None:
                continue
            node = int(self.nodes[li])
            for off, tgt, fl in _slot_words(t, int(g.sizes[node])):
                if not tgt or fl & (SLOT_UNTYPED | SLOT_FUNCTION | SLOT_CONSERVATIVE | SLOT_WEAK):
                    continue
                v = self.word(node, off)
                if not v:
                    continue
                d = g.find(v)
                if d is not None and d in self.local and v == int(g.addresses[d]) and tgt in g.types:
                    self.set(self.local[d], tgt, "pointer")
        return budget

    def _candidates(self) -> dict[int, list]:
        if self._cands is None:
            self._cands = {}
            for tid, t in self.g.types.items():
                if int(t.flags) & TYPE_FLEX or t.kind not in ("struct", "union", "enum"):
                    continue
                words = [w for w in _slot_words(t, int(t.size))
                         if not w[2] & (SLOT_FUNCTION | SLOT_CONSERVATIVE)]
                if words and int(t.size) > 0:
                    self._cands.setdefault(_usable(int(t.size)), []).append((tid, words))
        return self._cands

    def by_size(self, li: int) -> None:
        g = self.g
        node = int(self.nodes[li])
        fits = []
        for tid, words in self._candidates().get(int(g.sizes[node]), []):
            ok, nonnull = True, 0
            for off, _, _ in words:
                v = self.word(node, off)
                if v is None:
                    ok = False
                    break
                if v == 0:
                    continue
                nonnull += 1
                if g.find(v) is None and not g.is_mapped(v):
                    ok = False
                    break
            if ok and nonnull:
                fits.append(tid)
        if len(fits) == 1:
            self.set(li, fits[0], "size")


def find_leaks(graph: HeapGraph, target=None, *, infer_budget: int = 1_000_000) -> LeakReport:
    """Find the leaked objects of ``graph`` and classify them.

    :param graph: a graph from :func:`mappedtrace.trace.mark`.
    :param target: unused when the graph carries its snapshot bytes (it does
        when built by ``mark``); kept for symmetry with the other analyses.
    :param infer_budget: bound on objects visited by type inference.
    :returns: a :class:`LeakReport`; ``to_dict()`` gives the leak JSON.
    """
    g = graph
    n = len(g)
    unreached = np.nonzero(g.how == HOW_UNREACHED)[0].astype(np.int64)
    m = len(unreached)
    local = np.full(n + 1, -1, np.int64)
    local[unreached] = np.arange(m)
    e = g.edges
    if len(e):
        keep = (local[e["src"]] >= 0) & (local[e["dst"]] >= 0) & ((e["flags"] & EDGE_WEAK) == 0)
        a, b = local[e["src"][keep]], local[e["dst"][keep]]
    else:
        a = b = np.zeros(0, np.int64)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    ptr = np.searchsorted(a, np.arange(m + 1)) if m else np.zeros(1, np.int64)
    comp = _tarjan(m, ptr, b) if m else np.zeros(0, np.int64)
    has_in = np.zeros(int(comp.max()) + 1 if m else 0, bool)
    cross = comp[a] != comp[b] if m else np.zeros(0, bool)
    has_in[comp[b[cross]]] = True
    entry = np.full(len(has_in), -1, np.int64)
    # entry of each SCC: its lowest local index = lowest address (nodes are address-ordered)
    for li in range(m - 1, -1, -1):
        entry[comp[li]] = li
    direct = np.zeros(m, bool)
    ent = entry[~has_in]
    direct[ent] = True
    wcc = _wcc(m, a, b) if m else np.zeros(0, np.int64)

    inf = _Inferrer(g, unreached)
    budget = infer_budget
    for li in range(m):
        tid = int(g.type_ids[unreached[li]])
        if tid:
            inf.set(li, tid, "own")
    budget = inf.propagate(budget)
    for li in np.nonzero(direct)[0].tolist() + [i for i in range(m) if not direct[i]]:
        if budget <= 0:
            break
        if li not in inf.typ:
            inf.by_size(li)
            budget = inf.propagate(budget - 1)

    # structures, biggest first
    groups: dict[int, list[int]] = {}
    for li in range(m):
        groups.setdefault(int(wcc[li]), []).append(li)
    leaks_by_group = []
    for root, members in groups.items():
        lst = []
        for li in members:
            node = int(unreached[li])
            size = int(g.sizes[node])
            tid, how = inf.typ.get(li, (0, ""))
            name = g.type_name(tid) if tid else f"unk{size}"
            preview = _preview(g.object_bytes(node, PREVIEW_BYTES)) if not tid or how == "size" else ""
            if not tid and target is not None and g.mem is None:
                try:
                    preview = _preview(target.read(int(g.addresses[node]), min(size, PREVIEW_BYTES)))
                except Exception:       # a preview is best effort
                    preview = ""
            lst.append(Leak(int(g.addresses[node]), size, name, "direct" if direct[li] else "indirect",
                            node, -1, tid, how, preview))
        lst.sort(key=lambda l: (l.kind != "direct", l.address))
        leaks_by_group.append(lst)
    leaks_by_group.sort(key=lambda L: (-sum(l.size for l in L), -len(L), L[0].address))
    leaks: list[Leak] = []
    structures: list[LeakStructure] = []
    for si, lst in enumerate(leaks_by_group):
        for l in lst:
            l.structure = si
        leaks.extend(lst)
        structures.append(LeakStructure(si, len(lst), sum(l.size for l in lst),
                                        [l.address for l in lst if l.kind == "direct"],
                                        dict(Counter(l.type for l in lst)), lst))
    reached = g.how != HOW_UNREACHED
    ndirect = int(direct.sum())
    summary = {
        "leaked_objects": m,
        "leaked_bytes": int(g.sizes[unreached].sum()) if m else 0,
        "direct_objects": ndirect,
        "indirect_objects": m - ndirect,
        "reachable_objects": int(reached.sum()),
        "reachable_bytes": int(g.sizes[reached].sum()) if n else 0,
        "structures": len(structures),
    }
    return LeakReport(summary, leaks, structures, g.precision.as_dict(), list(g.warnings))
