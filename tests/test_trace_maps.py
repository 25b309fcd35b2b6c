"""Marking with the real type table: samples/mark_structs.c built with ``mappedtrace cc``
(the pass plugin writes .mtmap), roots from the .mtmap global table."""
from __future__ import annotations

import subprocess

import numpy as np

import mappedtrace
from mappedtrace.analyses.leaks import find_leaks
from mappedtrace.formats.mtmap import SLOT_STORED
from mappedtrace.modules import ModuleMap
from mappedtrace.roots import Root
from mappedtrace.trace import mark

from test_trace_helpers import ROOT, SAMPLES, start, stop
from test_trace_structs import CONSERVATIVE, KEPT, LEAKED, TYPED

import mappedtrace.formats.maps as maps_mod  # noqa: E402
from conftest import require_plugin  # noqa: E402


def test_mark_with_mtmap_types(tmp_path):
    require_plugin()
    exe = tmp_path / "mark_structs"
    cc = ROOT / ".venv" / "bin" / "mappedtrace"
    r = subprocess.run([str(cc), "cc", "-O0", "-o", str(exe), str(SAMPLES / "mark_structs.c")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr.strip()[-500:]
    bm = maps_mod.BinaryMaps.load(str(exe))
    assert bm.has_maps, "the binary has no maps (pass plugin not loaded)"
    prog = start(exe)
    try:
        with mappedtrace.attach(prog.pid) as t:
            bias = ModuleMap(t).main.bias       # PIE: the map's addresses are link-time ones
            roots = [Root("range", gl.address + bias, gl.size, gl.type_id, True, f"global {gl.name}")
                     for gl in bm.globals if not gl.tls]
            assert any(r.source == "global g" for r in roots)
            g = mark(t, prog.chunks(), roots, bm.types)
            gc = mark(t, prog.chunks(), roots, bm.types, mode="conservative")
            rep, repc = find_leaks(g, t), find_leaks(gc, t)
    finally:
        stop(prog)
    inv = prog.name_of()
    # `g.stale = (long)node(...)`: the pass sees a ptrtoint stored into the
    # long field and marks it STORED, so the node it holds is kept (sound typing)
    gtype = bm.types[next(gl.type_id for gl in bm.globals if gl.name == "g")]
    stored = [s.offset for s in gtype.slots if s.flags & SLOT_STORED]
    assert stored == [prog.offs[("globals", "stale")]], gtype
    reached = sorted(inv[int(g.addresses[i])] for i in np.nonzero(g.reached)[0])
    assert reached == sorted(KEPT + ["stale"])
    assert sorted(inv[l.address] for l in rep.leaks) == sorted(set(LEAKED) - {"stale"})
    for name, tname in TYPED.items():
        n = g.node(g.find(prog.addr(name)))
        assert (n.how, n.type_name) == ("typed", tname), name
    for name in CONSERVATIVE:
        assert g.node(g.find(prog.addr(name))).how == "conservative", name
    got = {inv[l.address]: l for l in rep.leaks}
    assert got["ll0"].kind == "direct" and got["ll0"].type == "struct node"
    assert got["lt0"].type == "struct tree" and got["str"].type == "unk24"
    assert g.precision.dangling_pointers == 1
    assert sorted(inv[l.address] for l in repc.leaks) == sorted(set(LEAKED) - {"stale"})
