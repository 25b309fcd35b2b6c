"""Marking over the real glibc heap walk (mappedtrace.heap.glibc) of a live process."""
from __future__ import annotations

import numpy as np

import mappedtrace
from mappedtrace.analyses.leaks import find_leaks
from mappedtrace.heap import glibc
from mappedtrace.modules import ModuleMap
from mappedtrace.roots import Root
from mappedtrace.trace import mark

from test_trace_helpers import GLOBALS, SAMPLES, build, start, stop, structs_types
from test_trace_structs import KEPT, LEAKED, assert_same_graph


def test_mark_over_glibc_heap(tmp_path):
    exe = build(SAMPLES / "mark_structs.c", tmp_path / "mark_structs")
    prog = start(exe)
    try:
        types = structs_types(prog)
        ga, gs = prog.globals["g"]
        roots = [Root("range", ga, gs, GLOBALS, True, "global g")]
        with mappedtrace.attach(prog.pid) as t:
            heap = glibc.GlibcHeap(t, ModuleMap(t))
            g = mark(t, heap, roots, types, kernel="c")
            g2 = mark(t, heap, roots, types, kernel="numpy")
            g3 = mark(t, list(heap.in_use()), roots, types, kernel="c")   # chunk records
            rep = find_leaks(g, t)
    finally:
        stop(prog)
    assert_same_graph(g, g2)
    assert_same_graph(g, g3)
    inv = prog.name_of()
    # every object of the program is an in-use chunk of the walk, with its usable size
    for name, (addr, size) in prog.objs.items():
        i = g.find(addr)
        if name == "gone":
            assert i is None or int(g.addresses[i]) != addr     # freed (tcache): not a node
            continue
        assert i is not None and int(g.addresses[i]) == addr and int(g.sizes[i]) == size, name
    reached = {inv[int(g.addresses[i])] for i in np.nonzero(g.reached)[0] if int(g.addresses[i]) in inv}
    assert reached == set(KEPT)
    leaked = {inv[l.address] for l in rep.leaks if l.address in inv}
    assert leaked == set(LEAKED)
    assert g.precision.dangling_pointers == 1     # dg->next: into the freed chunk
