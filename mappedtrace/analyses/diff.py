"""Growth between two heap snapshots of one process (DESIGN step 10).

Objects are matched by address, usable size and type: an object at the same
address with the same size and type in both snapshots is "kept"; the rest
are "new" (only after) or "gone" (only before).  An address freed and reused
by an object of the same size and type counts as kept: a snapshot holds no
allocation counter to tell them apart (stated, not hidden: the report says
the match is by address).

Growth is reported by type (objects and bytes before/after, new, gone, kept)
and by holder (the bytes each global, thread-local or frame alone retains,
from the dominator trees of both snapshots).  **Suspects** are the holders
whose retained bytes grew most, each with its *accumulation point*: walking
down the after-snapshot's dominator tree from the holder, always into the
child whose retained size grew most, while that child accounts for at least
half of the growth, and stopping at the first object whose child has the same
type (the head of a growing list or tree: where the structure starts, not its
millionth link) — the shape of Eclipse MAT's leak-suspect report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MappedTraceError
from ..graph import HeapGraph
from .dominators import DominatorTree, by_holder, dominator_tree, root_holder, type_labels

#: a child must account for this share of its parent's growth to be walked into
ACCUMULATION_SHARE = 0.5
#: longest walk down the dominator tree from a holder
MAX_WALK = 64


@dataclass
class HeapState:
    """One snapshot's graph with its dominator tree and identity."""

    graph: HeapGraph
    dom: DominatorTree
    pid: int
    exe: str
    label: str = ""

    @classmethod
    def of(cls, analysis, label: str = "") -> "HeapState":
        t = analysis.target
        return cls(analysis.graph, dominator_tree(analysis.graph), int(getattr(t, "pid", 0) or 0),
                   str(getattr(t, "exe", "") or ""), label)


@dataclass
class TypeGrowth:
    type: str
    objects_before: int
    objects_after: int
    bytes_before: int
    bytes_after: int
    new_objects: int
    gone_objects: int
    kept_objects: int

    @property
    def growth_bytes(self) -> int:
        return self.bytes_after - self.bytes_before


@dataclass
class HolderGrowth:
    holder: str
    kind: str
    retained_before: int
    retained_after: int

    @property
    def growth_bytes(self) -> int:
        return self.retained_after - self.retained_before


@dataclass
class Step:
    type: str
    address: int
    retained_before: int
    retained_after: int
    new: bool


@dataclass
class Suspect:
    holder: str
    kind: str
    growth_bytes: int
    path: list[Step] = field(default_factory=list)   # holder's object … accumulation point

    @property
    def accumulation(self) -> Step | None:
        return self.path[-1] if self.path else None


@dataclass
class HeapDiff:
    before: HeapState
    after: HeapState
    types: list[TypeGrowth]
    holders: list[HolderGrowth]
    suspects: list[Suspect]
    totals: dict


def check_same_process(a: HeapState, b: HeapState) -> None:
    """A diff compares two snapshots of one process; anything else is refused."""
    if a.exe and b.exe and a.exe != b.exe:
        raise MappedTraceError(f"the snapshots are of different programs ({a.exe} and {b.exe})",
                               hint="diff two snapshots of the same process, older first")
    if a.pid and b.pid and a.pid != b.pid:
        raise MappedTraceError(f"the snapshots are of different processes (PID {a.pid} and {b.pid})",
                               hint="diff two snapshots of the same process, older first")


def _match(a: HeapGraph, b: HeapGraph) -> tuple[np.ndarray, np.ndarray]:
    """(index in a, index in b) of the objects kept from a to b."""
    # both graphs' addresses are sorted and unique (node order): a binary search
    # per object instead of intersect1d's sort of both arrays together
    ia = np.arange(len(a.addresses))
    ib = np.searchsorted(b.addresses, a.addresses)
    hit = ib < len(b.addresses)
    hit[hit] = b.addresses[ib[hit]] == a.addresses[hit]
    ia, ib = ia[hit], ib[hit]
    same = (a.sizes[ia] == b.sizes[ib]) & (a.type_ids[ia] == b.type_ids[ib])
    return ia[same], ib[same]


def diff(before: HeapState, after: HeapState, *, suspects: int = 5) -> HeapDiff:
    """Growth from ``before`` to ``after`` (reached objects only)."""
    check_same_process(before, after)
    ga, gb = before.graph, after.graph
    ra, rb = before.dom.reached[:len(ga)], after.dom.reached[:len(gb)]
    ia, ib = _match(ga, gb)
    kept_a = np.zeros(len(ga), bool); kept_a[ia] = True
    kept_b = np.zeros(len(gb), bool); kept_b[ib] = True
    (la, na), (lb, nb) = type_labels(ga), type_labels(gb)
    rows: dict[str, TypeGrowth] = {}

    def count(lab: np.ndarray, names: list[str], sel: np.ndarray, sizes: np.ndarray) -> dict[str, tuple[int, int]]:
        c = np.bincount(lab[sel], minlength=len(names))
        b = np.rint(np.bincount(lab[sel], weights=sizes[sel].astype(np.float64), minlength=len(names)))
        return {names[j]: (int(c[j]), int(b[j])) for j in np.flatnonzero(c)}
    n_before, n_after = count(la, na, ra, ga.sizes), count(lb, nb, rb, gb.sizes)
    gone = count(la, na, ra & ~kept_a, ga.sizes)
    new = count(lb, nb, rb & ~kept_b, gb.sizes)
    kept = count(lb, nb, rb & kept_b, gb.sizes)
    for t in set(n_before) | set(n_after):
        ob, bb = n_before.get(t, (0, 0))
        oa, ba = n_after.get(t, (0, 0))
        rows[t] = TypeGrowth(t, ob, oa, bb, ba, new.get(t, (0, 0))[0], gone.get(t, (0, 0))[0],
                             kept.get(t, (0, 0))[0])
    types = sorted(rows.values(), key=lambda r: (-r.growth_bytes, r.type))

    ha = {h.holder: h for h in by_holder(ga, before.dom)}
    hb = {h.holder: h for h in by_holder(gb, after.dom)}
    holders = [HolderGrowth(k, (hb.get(k) or ha.get(k)).kind,
                            ha[k].retained_bytes if k in ha else 0, hb[k].retained_bytes if k in hb else 0)
               for k in set(ha) | set(hb)]
    holders.sort(key=lambda h: (-h.growth_bytes, h.holder))

    # retained-before of each after-node (0 for new objects), for the walk
    ret_before = np.zeros(after.dom.digraph.n_vertices, np.int64)
    ret_before[ib] = before.dom.retained[ia].astype(np.int64)
    out = [_suspect(after, h, ret_before, (lb, nb), kept_b) for h in holders[:suspects] if h.growth_bytes > 0]
    totals = {"objects_before": int(ra.sum()), "objects_after": int(rb.sum()),
              "bytes_before": int(ga.sizes[ra].sum()), "bytes_after": int(gb.sizes[rb].sum()),
              "new_objects": int((rb & ~kept_b).sum()), "gone_objects": int((ra & ~kept_a).sum()),
              "kept_objects": int((rb & kept_b).sum()), "matched_by": "address, size and type"}
    return HeapDiff(before, after, types, holders, out, totals)


def _suspect(after: HeapState, h: HolderGrowth, ret_before: np.ndarray, labels: tuple[np.ndarray, list[str]],
             kept: np.ndarray) -> Suspect:
    g, dom = after.graph, after.dom
    n = len(g)
    s = Suspect(h.holder, h.kind, h.growth_bytes)
    ret_after = dom.retained.astype(np.int64)
    grow = ret_after - ret_before
    starts = [n + k for k, r in enumerate(g.roots) if root_holder(r.source) == h.holder]
    cand = np.concatenate([dom.children(v) for v in starts]) if starts else np.array([], np.int64)
    cur_type = None
    for _ in range(MAX_WALK):
        cand = cand[cand < n]
        if not len(cand):
            break
        best = int(cand[np.argmax(grow[cand])])
        need = ACCUMULATION_SHARE * (s.path[-1].retained_after - s.path[-1].retained_before
                                     if s.path else h.growth_bytes)
        if grow[best] <= 0 or grow[best] < need:
            break
        t = str(labels[1][labels[0][best]])         # (label index per node, label names)
        if cur_type is not None and t == cur_type:
            break                                   # a recursive structure starts at the current step
        s.path.append(Step(t, int(g.addresses[best]), int(ret_before[best]), int(ret_after[best]),
                           not bool(kept[best])))
        cur_type = t
        cand = dom.children(best)
    return s
