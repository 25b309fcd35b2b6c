"""Leak classification on small generated heaps: SCCs, direct/indirect, types, rendering."""
from __future__ import annotations

import io
import json
import struct

import numpy as np

from mappedtrace.analyses.leaks import _tarjan, _wcc, find_leaks
from mappedtrace.reporters.leaks_report import render, to_json
from mappedtrace.roots import Root
from mappedtrace.trace import mark

from test_trace_helpers import C, S, T
from test_trace_kernels import MemTarget

B = 0x10000
VEC = 0x77
TYPES = {VEC: T(VEC, "Vec<[u8; 16]>", 32, "struct", 8, (S(0, VEC), S(8, VEC)))}


def heap(links: dict[int, list[int]], size: int = 40, extra: dict[int, bytes] | None = None):
    """Chunks at B + 0x40*i; links[i] = the chunks i points to (word by word)."""
    mem = bytearray(0x40 * (max(links) + 2))
    for i, outs in links.items():
        for k, j in enumerate(outs):
            struct.pack_into("<Q", mem, 0x40 * i + 8 * k, B + 0x40 * j)
    for i, data in (extra or {}).items():
        mem[0x40 * i:0x40 * i + len(data)] = data
    return MemTarget({B: mem}), [C(B + 0x40 * i, size) for i in links]


def kinds(rep):
    return {(l.address - B) // 0x40: l.kind for l in rep.leaks}


def test_tarjan_and_wcc():
    # 0→1→2→0 (SCC), 2→3, 4 self-loop, 5 alone
    a = np.array([0, 1, 2, 2, 4]); b = np.array([1, 2, 0, 3, 4])
    order = np.lexsort((b, a)); a, b = a[order], b[order]
    ptr = np.searchsorted(a, np.arange(7))
    comp = _tarjan(6, ptr, b)
    assert comp[0] == comp[1] == comp[2] and len({comp[0], comp[3], comp[4], comp[5]}) == 4
    w = _wcc(6, a, b)
    assert list(w) == [0, 0, 0, 0, 4, 5]


def test_tarjan_deep_chain_is_iterative():
    m = 50000
    a = np.arange(m - 1); b = a + 1
    comp = _tarjan(m, np.searchsorted(a, np.arange(m + 1)), b)
    assert len(set(comp.tolist())) == m


def test_direct_indirect():
    # chain 0→1→2; cycle 3⇄4 entered from 5; self-loop 6; cycle 7⇄8 with no entry; 9 kept
    t, chunks = heap({0: [1], 1: [2], 2: [], 3: [4], 4: [3], 5: [3], 6: [6], 7: [8], 8: [7], 9: [0 + 9]})
    g = mark(t, chunks, [Root("value", B + 0x40 * 9, 8, 0, True, "r")], {})
    rep = find_leaks(g)
    k = kinds(rep)
    assert 9 not in k
    assert {i for i, v in k.items() if v == "direct"} == {0, 5, 6, 7}
    s = rep.summary
    assert (s["leaked_objects"], s["direct_objects"], s["indirect_objects"]) == (9, 4, 5)
    assert (s["reachable_objects"], s["reachable_bytes"]) == (1, 40)
    assert [st.objects for st in rep.structures] == [3, 3, 2, 1]
    assert rep.leaks[0].kind == "direct"


def test_types_inferred_and_escaped_in_report():
    # 0 typed by size+content (unique 40-byte struct with pointers), 1 by 0's typed slot,
    # 2 unknown with a string preview
    t, chunks = heap({0: [1], 1: [], 2: []}, extra={2: b"[bold]not markup[/bold]\0"})
    g = mark(t, chunks, [], TYPES)
    rep = find_leaks(g)
    by = {(l.address - B) // 0x40: l for l in rep.leaks}
    assert (by[0].type, by[0].type_source) == ("Vec<[u8; 16]>", "size")
    assert (by[1].type, by[1].type_source) == ("Vec<[u8; 16]>", "pointer")
    assert by[2].type == "unk40" and "[bold]not markup[/bold]" in by[2].preview
    buf = io.StringIO()
    render(rep, buf, width=80)
    out = buf.getvalue()
    assert "Vec<[u8; 16]>" in out and "[bold]not markup[/bold]" in out
    assert max(len(x) for x in out.splitlines()) <= 80
    j = io.StringIO()
    to_json(rep, j)
    d = json.loads(j.getvalue())
    assert d["summary"]["leaked_objects"] == 3
    assert {l["type"] for l in d["leaks"]} == {"Vec<[u8; 16]>", "unk40"}


def test_no_leaks_report():
    t, chunks = heap({0: []})
    g = mark(t, chunks, [Root("value", B, 8, 0, True, "r")], {})
    rep = find_leaks(g)
    assert rep.summary["leaked_objects"] == 0 and rep.leaks == []
    buf = io.StringIO()
    render(rep, buf)
    assert "no leaks" in buf.getvalue()


UNIT, VT, P = 0x80, 0x81, 0x82


def test_no_vtable_or_zero_sized_types():
    types = {**TYPES,
             UNIT: T(UNIT, "()", 0, "struct"),
             VT: T(VT, "<x::A as x::T>::{vtable_type}", 32, "struct", 8, (S(0, UNIT), S(8, UNIT))),
             P: T(P, "x::P", 24, "struct", 8, (S(0, UNIT),))}
    t, chunks = heap({0: [1], 1: [], 2: [1]})
    # 0 and 2 (40 B) fit Vec<…> and the vtable type by size: only Vec<…> counts.
    # x::P (24 B, usable 24) never fits a 40-byte chunk.
    rep = find_leaks(mark(t, chunks, [], types))
    by = {(l.address - B) // 0x40: l for l in rep.leaks}
    assert by[0].type == "Vec<[u8; 16]>" and by[2].type == "Vec<[u8; 16]>"
    assert by[1].type == "Vec<[u8; 16]>" and by[1].type_source == "pointer"
    assert all("vtable" not in l.type and l.type != "()" for l in rep.leaks)
    # a pointer typed `()*` says nothing: the chunk is scanned, not taken as pointer-free
    g = mark(t, chunks, [Root("value", B, 8, UNIT, True, "dyn data")], types)
    assert g.node(0).how == "conservative" and g.node(1).reached


def test_pointer_to_zero_sized_does_not_type():
    types = {UNIT: T(UNIT, "()", 0, "struct"),
             P: T(P, "x::P", 32, "struct", 8, (S(0, UNIT), S(8, P)))}
    t, chunks = heap({0: [1, 2], 1: [], 2: []})
    rep = find_leaks(mark(t, chunks, [], types))
    by = {(l.address - B) // 0x40: l for l in rep.leaks}
    assert by[0].type == "x::P" and by[0].type_source == "size"
    assert by[1].type == "unk40"          # not "()": zero-sized pointees type nothing
    assert by[2].type == "x::P" and by[2].type_source == "pointer"


def test_json_writer_is_json_dump():
    """The template JSON writer gives json.dump's exact text (strings escaped, empty lists)."""
    from test_trace_kernels import TYPES as KTYPES, gen_heap
    for seed, mode in ((1, "precise"), (2, "conservative")):
        t, chunks, roots = gen_heap(seed)
        rep = find_leaks(mark(t, chunks, roots, KTYPES, mode=mode), t)
        rep.warnings.append('a "quoted" warning \u00e9\n')
        if seed == 2:       # a live capture's figures (session.capture_figures)
            rep.capture = {"mode": "fork", "pause_ms": 12.5, "stop_ms": 1.0, "fork_ms": 10.25,
                           "captured_bytes": 4096, "fallback": 'a "why" \u00e9'}
        out = io.StringIO()
        to_json(rep, out)
        assert out.getvalue() == json.dumps(rep.to_dict(), indent=1) + "\n"
    empty = find_leaks(mark(t, [], roots, KTYPES), t)
    out = io.StringIO()
    to_json(empty, out)
    assert out.getvalue() == json.dumps(empty.to_dict(), indent=1) + "\n"
