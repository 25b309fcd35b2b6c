"""The differential check of a relocation pass: the heap graph after the pass is the
graph before with the moved objects' addresses replaced (issue 17's "isomorphic").

Used by the tests, and by ``farmem --relocate`` when ``$MTFARMEM_RELOCATE_VERIFY`` is set
(:mod:`mappedtrace.farmem.segregate`): the process is then stopped around the pass so
that nothing but the move changes the graph.
"""
from __future__ import annotations

from ..graph import EDGE_EXACT


def graph_signature(g, rename: dict[int, int] | None = None) -> tuple[dict, set]:
    """Objects ``{address: (size, type id)}`` and edges ``(src, src_off, dst, dst_off,
    exact)`` of heap graph ``g``, addresses renamed by ``rename`` (old → new)."""
    rename = rename or {}
    addrs = [rename.get(int(a), int(a)) for a in g.addresses]
    objs = {a: (int(s), int(t)) for a, s, t in zip(addrs, g.sizes, g.type_ids)}
    edges = {(addrs[int(x["src"])], int(x["src_off"]), addrs[int(x["dst"])], int(x["dst_off"]),
              bool(int(x["flags"]) & EDGE_EXACT)) for x in g.edges}
    return objs, edges


def differs(before, after, moved: list[tuple[int, int, int]]) -> str | None:
    """None when ``after`` is ``before`` with each ``(old, new, size)`` of ``moved`` applied;
    else what differs, in one line."""
    ob, eb = graph_signature(before, {o: n for o, n, _s in moved})
    oa, ea = graph_signature(after)
    if ob != oa:
        gone, new = len(ob.keys() - oa.keys()), len(oa.keys() - ob.keys())
        changed = sum(1 for a in ob.keys() & oa.keys() if ob[a] != oa[a])
        return (f"objects differ: {gone} only before, {new} only after, {changed} with another size or type "
                f"({len(ob)} before, {len(oa)} after)")
    if eb != ea:
        return f"edges differ: {len(eb - ea)} only before, {len(ea - eb)} only after ({len(eb)} before)"
    return None
