"""Marking and leak classification on a real process (samples/mark_structs.c).

The program prints every object it allocated, the layout of its structs and
the address of its global ``g``; the test attaches with ptrace, marks from a
typed range root over ``g`` and compares with what the program built.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import mappedtrace
from mappedtrace.analyses.leaks import find_leaks
from mappedtrace.errors import MappedTraceError
from mappedtrace.roots import Root
from mappedtrace.trace import mark

from conftest import need
from test_trace_helpers import GLOBALS, SAMPLES, build, start, stop, structs_types

KEPT = (["kl0", "kl1", "kl2"] + [f"kt{i}" for i in range(7)] + ["ibuf", "ik", "parr"]
        + [f"pa{i}" for i in range(4)] + ["flex", "fx0", "fx1", "fx2", "tag", "un", "narr"]
        + [f"na{i}" for i in range(4)] + ["opq", "op1", "op3", "amb", "am0", "dg"])
LEAKED = ([f"ll{i}" for i in range(5)] + ["cy0", "cy1", "cy2"] + [f"lt{i}" for i in range(7)]
          + ["str", "stale", "tokept"])
TYPED = {**{f"kl{i}": "struct node" for i in range(3)}, **{f"kt{i}": "struct tree" for i in range(7)},
         "parr": "struct node*", "pa0": "struct node",
         "flex": "struct flex", **{f"fx{i}": "struct node" for i in range(3)},
         "tag": "struct tagged", "narr": "struct node", "na0": "struct node",
         "dg": "struct node"}
#: na1..na3 sit in narr's elements after the first: a `struct node *` to a chunk
#: of 4 nodes does not prove an array (it could be one node and trailing data),
#: so the elements after the first are narr's tail, scanned conservatively
#: pa1..pa3 likewise: a `struct node **` to a chunk of 4 pointers does not prove an
#: array either (it could point to the first member of a bigger struct, whose other
#: members a guessed element would type wrongly: tests/sound_typing/first_member.c)
CONSERVATIVE = ["ibuf", "ik", "un", "opq", "op1", "op3", "amb", "na1", "na2", "na3", "pa1", "pa2", "pa3"]
#: objects read whole by type (a flexible array of pointers)
WHOLE = ["flex"]


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    """Graphs of the running program: {(mode, kernel): graph} + leak reports."""
    exe = build(SAMPLES / "mark_structs.c", tmp_path_factory.mktemp("ms") / "mark_structs")
    prog = start(exe)
    try:
        types = structs_types(prog)
        ga, gs = prog.globals["g"]
        roots = [Root("range", ga, gs, GLOBALS, True, "global g")]
        out = {}
        with mappedtrace.attach(prog.pid) as t:
            for mode in ("precise", "conservative"):
                for kernel in ("c", "numpy"):
                    if kernel == "c":
                        need("cc")
                    g = mark(t, prog.chunks(), roots, types, mode=mode, kernel=kernel)
                    out[(mode, kernel)] = (g, find_leaks(g, t))
        yield prog, out
    finally:
        stop(prog)


def _names(prog, addrs):
    inv = prog.name_of()
    return sorted(inv[a] for a in addrs)


def test_precise_reached_and_leaked(snap):
    prog, out = snap
    # the test's lists agree with what the program says it built
    assert sorted(n for n, c in prog.cls.items() if c == "kept") == sorted(KEPT)
    assert sorted(n for n, c in prog.cls.items() if c in ("leaked", "stale")) == sorted(LEAKED)
    g, rep = out[("precise", "c")]
    reached = [int(g.addresses[i]) for i in np.nonzero(g.reached)[0]]
    assert _names(prog, reached) == sorted(KEPT)
    assert _names(prog, [l.address for l in rep.leaks]) == sorted(LEAKED)
    assert "gone" not in _names(prog, reached)    # freed: not a node


def test_precise_types_and_how(snap):
    prog, out = snap
    g, _ = out[("precise", "c")]
    for name, tname in TYPED.items():
        n = g.node(g.find(prog.addr(name)))
        assert (n.how, n.type_name) == ("typed", tname), name
    for name in CONSERVATIVE:
        assert g.node(g.find(prog.addr(name))).how == "conservative", name
    amb = g.node(g.find(prog.addr("amb")))
    assert amb.ambiguous and g.precision.objects_ambiguous == 1


def test_precise_edges_and_statistics(snap):
    prog, out = snap
    g, _ = out[("precise", "c")]
    edges = {(int(e.src), e.src_off): e for e in g.iter_edges()}
    f = lambda n: g.find(prog.addr(n))
    # an array of pointers: the first element exact, the others its tail (conservative)
    for i in range(4):
        e = edges[(f("parr"), 8 * i)]
        assert (e.dst, e.dst_off, e.exact) == (f(f"pa{i}"), 0, i == 0)
    # an array of structs: the first element by type, the rest conservatively (its tail)
    next_off = prog.offs[("node", "next")]
    for i in range(4):
        e = edges[(f("narr"), 16 * i + next_off)]
        assert e.dst == f(f"na{i}") and e.exact == (i == 0)
    # flexible array members
    items = prog.offs[("flex", "items")]
    for i in range(3):
        assert edges[(f("flex"), items + 8 * i)].dst == f(f"fx{i}")
    # a union slot is followed but not exact; a conservatively scanned buffer too
    assert not edges[(f("tag"), prog.offs[("tagged", "u")])].exact
    assert not edges[(f("ibuf"), 0)].exact and edges[(f("ibuf"), 0)].dst == f("ik")
    # the interior root pointer lands 24 bytes into ibuf
    roots = {(r.dst, r.dst_off) for r in g.iter_root_edges()}
    assert (f("ibuf"), 24) in roots
    p = g.precision
    assert p.dangling_pointers == 1           # dg->next points into a freed chunk
    assert p.pointers_to_static == 0
    assert p.roots_exact == 1 and p.roots_conservative == 0
    # am0 is typed by the first pointer that reached it (amb's left as a struct tree);
    # a struct-typed object's bytes past sizeof (malloc's slack, narr's other
    # elements) are its tail, scanned conservatively
    usable = lambda n: prog.objs[n][1]
    fixed = {n: (usable(n) if n in WHOLE else min(usable(n), 8 if t.endswith("*") else prog.sizes[t.split()[1]]))
             for n, t in {**TYPED, "am0": "struct tree"}.items()}
    tail = sum(usable(n) - fixed[n] for n in fixed)
    assert p.heap_bytes_typed == sum(fixed.values())
    assert p.heap_bytes_tail == tail > 0
    assert p.heap_bytes_conservative == sum(usable(n) for n in CONSERVATIVE) + tail
    assert p.edges_exact > 0 and p.edges_conservative == 8 + 3      # + parr's 3 tail words


def test_direct_indirect_and_types(snap):
    prog, out = snap
    _, rep = out[("precise", "c")]
    inv = prog.name_of()
    got = {inv[l.address]: (l.kind, l.type) for l in rep.leaks}
    cy_entry = min(["cy0", "cy1", "cy2"], key=prog.addr)
    lt_entry = min([f"lt{i}" for i in range(7)], key=prog.addr)
    direct = {"ll0", cy_entry, lt_entry, "str", "stale", "tokept"}
    assert {n for n, (k, _) in got.items() if k == "direct"} == direct
    for n, (_, t) in got.items():
        want = ("struct node" if n[:2] in ("ll", "cy") or n == "tokept" else
                "struct tree" if n.startswith("lt") else "unk24")
        assert t == want, n
    s = rep.summary
    assert (s["leaked_objects"], s["direct_objects"], s["indirect_objects"]) == (18, 6, 12)
    assert s["reachable_objects"] == len(KEPT)
    assert s["leaked_bytes"] == sum(prog.objs[n][1] for n in LEAKED)
    # structures, biggest first: the leaked tree (7 x 40 bytes) leads
    assert [inv[a] for a in rep.structures[0].direct] == [lt_entry]
    assert rep.structures[0].objects == 7
    sizes = [st.bytes for st in rep.structures]
    assert sizes == sorted(sizes, reverse=True)
    strleak = next(l for l in rep.leaks if inv[l.address] == "str")
    assert "hello, leaked world" in strleak.preview


def test_conservative_mode_keeps_stale(snap):
    prog, out = snap
    g, rep = out[("conservative", "c")]
    leaked = _names(prog, [l.address for l in rep.leaks])
    assert leaked == sorted(set(LEAKED) - {"stale"})      # the long in g keeps it alive
    assert set(n.how for n in g.nodes() if n.reached) == {"conservative"}
    assert g.precision.heap_bytes_typed == 0 and g.precision.roots_conservative == 1


def test_kernels_agree(snap):
    _, out = snap
    for mode in ("precise", "conservative"):
        a, ra = out[(mode, "c")]
        b, rb = out[(mode, "numpy")]
        assert_same_graph(a, b)
        assert ra.to_dict()["leaks"] == rb.to_dict()["leaks"]


def test_leak_json_schema(snap):
    _, out = snap
    _, rep = out[("precise", "c")]
    from mappedtrace.reporters.leaks_report import to_json
    import io
    buf = io.StringIO()
    to_json(rep, buf)
    d = json.loads(buf.getvalue())
    assert set(d) >= {"summary", "leaks", "precision"}
    assert set(d["summary"]) >= {"leaked_objects", "leaked_bytes", "direct_objects",
                                 "indirect_objects", "reachable_objects", "reachable_bytes"}
    assert all(isinstance(v, int) for v in d["summary"].values())
    for l in d["leaks"]:
        assert set(l) >= {"address", "size", "type", "kind"}
        assert isinstance(l["address"], int) and isinstance(l["size"], int)
        assert isinstance(l["type"], str) and l["kind"] in ("direct", "indirect")
    assert d["precision"]["dangling_pointers"] == 1


def assert_same_graph(a, b) -> None:
    assert np.array_equal(a.addresses, b.addresses)
    assert np.array_equal(a.type_ids, b.type_ids)
    assert np.array_equal(a.how, b.how)
    assert np.array_equal(a.ambiguous, b.ambiguous)
    assert np.array_equal(a.edges, b.edges)
    assert np.array_equal(a.root_edges, b.root_edges)
    pa, pb = a.precision.as_dict(), b.precision.as_dict()
    for k in ("kernel", "read_s", "mark_s", "total_s", "mark_queue_bytes"):
        pa.pop(k, None)
        pb.pop(k, None)
    assert pa == pb


def test_render_and_graph_export(snap, tmp_path):
    import io
    from mappedtrace.reporters import graph_export
    from mappedtrace.reporters.leaks_report import render
    prog, out = snap
    g, rep = out[("precise", "c")]
    buf = io.StringIO()
    render(rep, buf, width=100)
    text = buf.getvalue()
    assert "18 leaked objects" in text and "6 direct, 12 indirect" in text
    assert "struct tree" in text and "'hello, leaked world'" in text
    assert "dangling pointers: 1" in text
    assert max(len(l) for l in text.splitlines()) <= 100
    # JSON export: every node, edge and root edge, parseable
    jp = tmp_path / "g.json"
    graph_export.export(g, str(jp))
    assert (jp.stat().st_mode & 0o777) == 0o600
    d = json.loads(jp.read_text())
    assert len(d["nodes"]) == len(g) and len(d["edges"]) == len(g.edges)
    assert len(d["root_edges"]) == len(g.root_edges) == 11
    by_addr = {n["address"]: n for n in d["nodes"]}
    assert by_addr[prog.addr("kl0")]["type"] == "struct node"
    assert by_addr[prog.addr("str")]["how"] == "unreached"
    dp = tmp_path / "g.dot"
    graph_export.export(g, str(dp))
    dot = dp.read_text()
    assert dot.startswith("digraph heap {") and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == len(g.edges) + len(g.root_edges)
    with pytest.raises(MappedTraceError):
        graph_export.export(g, str(tmp_path / "g.txt"))
