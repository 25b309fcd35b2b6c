"""Typing by holder (issues #14 and #19): the heap buffers of Rust and C++ std
containers named from the container that holds them, and field names on the
hops of ``why``.  Two programs built at test time (tests/containers/) hold
their containers live and print what they allocated; ``top`` must count the
derived types exactly, ``why`` must name each hop's field, and the leak report
of a leaked ``shared_ptr`` cycle must name its control blocks."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, need, run_mt

HERE = ROOT / "tests" / "containers"


def _build(cmd: list[str]) -> None:
    r = subprocess.run([MAPPEDTRACE, *cmd], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def rust_exe(tmp_path_factory) -> Path:
    need("rustc", "clang-22", "ld.lld-22")
    exe = tmp_path_factory.mktemp("rust") / "rust_containers"
    _build(["rustc", "-O", "-g", "--edition=2021", "-o", str(exe), str(HERE / "rust_containers.rs")])
    return exe


@pytest.fixture(scope="module")
def cxx_exe(tmp_path_factory) -> Path:
    need("clang++-22")
    exe = tmp_path_factory.mktemp("cxx") / "cxx_containers"
    _build(["c++", "-O2", "-o", str(exe), str(HERE / "cxx_containers.cpp")])
    return exe


class Live:
    """The program running, stopped at "ready" (it waits on stdin); its truth lines."""

    def __init__(self, exe: Path, *args: str):
        self.p = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.truth: list[list[str]] = []
        for line in self.p.stdout:
            if line.startswith("ready"):
                break
            if line.startswith("truth "):
                self.truth.append(line.split()[1:])
        else:
            raise AssertionError(f"{exe} ended before 'ready' ({self.p.wait()})")

    def get(self, key: str) -> list[list[str]]:
        return [t[1:] for t in self.truth if t[0] == key]

    def mt(self, *args: str) -> dict:
        r = run_mt(*args[:1], str(self.p.pid), *args[1:], "--json", "-")
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def _count(top: dict, pattern: str) -> int:
    """Objects of the types whose name matches ``pattern`` (a regex, whole name)."""
    rx = re.compile(pattern)
    return sum(r["objects"] for r in top["types"] if rx.fullmatch(r["type"]))


def _hops(why: dict) -> list[dict]:
    return [h for o in why["objects"] for p in o["paths"] for h in p["hops"]]


def test_rust_containers_named_by_holder(rust_exe):
    live = Live(rust_exe, "5")
    try:
        top = live.mt("top", "--limit", "100")
        (vbuf, vlen, vcap), = live.get("vec")
        names, tags = live.get("name"), live.get("tags")
        (items,), = live.get("map")
        items = int(items)
        assert _count(top, r"alloc::vec::Vec<rust_containers::Node, alloc::alloc::Global> buffer") == 1, top["types"]
        # the nodes' names and the map's keys
        (queued,), = live.get("queue")
        assert _count(top, r"alloc::string::String buffer") == len(names) + items + int(queued), top["types"]
        assert _count(top, r"alloc::collections::vec_deque::VecDeque<alloc::string::String, "
                           r"alloc::alloc::Global> buffer") == 1, top["types"]
        assert _count(top, r"alloc::vec::Vec<u32, alloc::alloc::Global> buffer") == len(tags), top["types"]
        assert _count(top, r"alloc::vec::Vec<u8, alloc::alloc::Global> buffer") == items, top["types"]
        assert _count(top, r"std::collections::hash::map::HashMap<alloc::string::String, "
                           r"alloc::vec::Vec<u8, alloc::alloc::Global>, .*> table") == 1, top["types"]
        assert _count(top, r"alloc::rc::RcInner<rust_containers::Ring>") == 2, top["types"]
        assert _count(top, r"alloc::boxed::Box<\[u64\], alloc::alloc::Global> buffer") == 1, top["types"]
        assert _count(top, r"alloc::sync::ArcInner<alloc::vec::Vec<u16, alloc::alloc::Global>>") == 1, top["types"]
        assert _count(top, r"alloc::vec::Vec<u16, alloc::alloc::Global> buffer") == 1, top["types"]
        (sl, sn), = live.get("slice")
        assert live.mt("why", sl)["objects"][0]["type"] == \
            f"alloc::boxed::Box<[u64], alloc::alloc::Global> buffer (len {sn})"

        why = live.mt("why", vbuf)
        obj = why["objects"][0]
        assert obj["type"] == (f"alloc::vec::Vec<rust_containers::Node, alloc::alloc::Global> buffer "
                               f"(len {vlen}, cap {vcap})"), obj
        assert any(h["via_field"].startswith("rust_containers::State.nodes.") and h["exact"]
                   for h in _hops(why)), why
        addr, n, cap = names[2]
        why = live.mt("why", addr, "--paths", "4")
        assert why["objects"][0]["type"] == f"alloc::string::String buffer (len {n}, cap {cap})", why
        # the element's index and field inside the Vec's buffer
        assert any(re.fullmatch(r"alloc::vec::Vec<rust_containers::Node, alloc::alloc::Global> buffer"
                                r"\[\d\]\.name\..*", h["via_field"]) for h in _hops(why)), why
        # the tables say the same: the type column, and what the holder says of each buffer
        q = live.mt("query", "SELECT count(*), min(detail) FROM objects "
                             "WHERE type = 'alloc::string::String buffer' AND reachable")
        assert q["rows"][0][0] == len(names) + items + int(queued) and q["rows"][0][1].startswith("len "), q
        why = live.mt("why", "alloc::string::String buffer", "--objects", "2")
        assert len(why["objects"]) == 2 and all(o["type"].startswith("alloc::string::String buffer (len ")
                                                for o in why["objects"]), why
        rc = [a for (a,) in live.get("rc")]
        why = live.mt("why", rc[1], "--paths", "4")
        assert any(".next." in h["via_field"] and h["via_field"].startswith("alloc::rc::RcInner<")
                   for h in _hops(why)), why
    finally:
        live.close()


def test_cxx_containers_named_by_holder(cxx_exe):
    live = Live(cxx_exe, "5")
    try:
        top = live.mt("top", "--limit", "100")
        t = {k: int(v[0][0]) for k, v in ((k, live.get(k)) for k in
                                         ("map", "umap", "longstr", "vectors", "buckets", "list"))}
        string = r"std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >"
        assert _count(top, r"std::vector<app::Node \*, std::allocator<app::Node \*> > buffer") == t["vectors"]
        assert _count(top, rf"std::_Rb_tree_node<std::pair<const {string}, int> >") == t["map"], top["types"]
        assert _count(top, rf"{string} buffer") == t["longstr"], top["types"]
        assert _count(top, rf"std::_List_node<{string} >") == t["list"], top["types"]
        assert _count(top, r"std::__detail::_Hash_node<std::pair<const long, app::Node \*>, (true|false)>") \
            == t["umap"], top["types"]
        assert _count(top, r"std::_Hashtable<long, .*> buckets") == t["buckets"], top["types"]
        assert _count(top, r"std::_Sp_counted_ptr_inplace<app::Node, std::allocator<void>, "
                           r"\(__gnu_cxx::_Lock_policy\)2>") == 2, top["types"]
        # state.solo's block: not in the type table (nothing typed points to one), named by its vtable
        assert _count(top, r"std::_Sp_counted_ptr<app::Node ?\*, \(__gnu_cxx::_Lock_policy\)2>") == 1, top["types"]

        (vbuf, vlen, vcap), = live.get("vector")
        why = live.mt("why", vbuf)
        obj = why["objects"][0]
        assert obj["type"] == f"std::vector<app::Node *, std::allocator<app::Node *> > buffer (len {vlen}, cap {vcap})"
        first = why["objects"][0]["paths"][0]["hops"][0]
        assert first["via_field"] == "app::State.nodes._M_impl._M_start" and first["exact"], why
        node = live.get("node")[3][0]
        why = live.mt("why", node)
        assert any(re.fullmatch(r"std::vector<app::Node \*, std::allocator<app::Node \*> > buffer\[3\]",
                                h["via_field"]) for h in _hops(why)), why
        cyc = [a for (a,) in live.get("cycle")]
        why = live.mt("why", cyc[1], "--paths", "4")
        assert any(h["via_field"].startswith("app::State.ring.") for h in _hops(why)), why
        r = run_mt("why", str(live.p.pid), cyc[0])
        assert "app::State.ring._M_" in r.stdout and "exact" in r.stdout, r.stdout
    finally:
        live.close()


def test_cxx_leaked_shared_ptr_cycle_names_its_control_blocks(cxx_exe, tmp_path):
    """At exit the leaked cycle's two control blocks are leaks, named by their
    virtual table (nothing typed reaches them)."""
    js = tmp_path / "leaks.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", str(cxx_exe), "3"], input="",
                       capture_output=True, text=True, timeout=300)
    leaked = {int(a, 16) for a in re.findall(r"truth leaked (0x[0-9a-f]+)", r.stdout)}
    assert len(leaked) == 2, r.stdout
    rep = json.loads(js.read_text())
    got = {int(l["address"], 16) if isinstance(l["address"], str) else l["address"]: l for l in rep["leaks"]}
    # (the Nodes of state.nodes are leaked too: `new`, never deleted; the state's
    # containers are freed by its destructor)
    assert leaked <= set(got), (rep["leaks"], r.stderr[-2000:])
    for a in leaked:
        assert got[a]["type"].startswith("std::_Sp_counted_ptr_inplace<app::Node, std::allocator<void>"), got[a]
        assert got[a]["type_source"] == "holder", got[a]
    p = rep["precision"]
    # the reachable containers' buffers, nodes and blocks, and the two leaked blocks
    assert p["derived_objects"] >= 2 and p["derived_bytes"] >= p["derived_bytes_typed"] >= 0, p


def test_field_path_on_a_table():
    """Member paths from fields alone: base classes walked through unnamed,
    array elements indexed, and among overlapping enum variants of one size
    the one with members (Rust's ``Some(x)`` over ``None``)."""
    from mappedtrace.analyses.fields import field_path, find_member
    from mappedtrace.formats.mtmap import FIELD_BASE, FIELD_TEMPLATE_ARG, FIELD_VARIANT, Field, TypeInfo
    types = {
        1: TypeInfo(1, "long", 8, "scalar"),
        2: TypeInfo(2, "void*", 8, "pointer"),
        3: TypeInfo(3, "Inner", 16, "struct", fields=[Field(0, 1, "x"), Field(8, 2, "p")]),
        4: TypeInfo(4, "Inner[3]", 48, "array", elem_type=3),
        5: TypeInfo(5, "Empty", 1, "struct"),
        6: TypeInfo(6, "Outer", 56, "struct", fields=[Field(0, 5, "", FIELD_BASE), Field(0, 1, "a"),
                                                      Field(8, 4, "arr"), Field(0, 3, "T", FIELD_TEMPLATE_ARG)]),
        7: TypeInfo(7, "None", 8, "struct", fields=[Field(0, 2, "T", FIELD_TEMPLATE_ARG)]),
        8: TypeInfo(8, "Some", 8, "struct", fields=[Field(0, 2, "__0")]),
        9: TypeInfo(9, "Option", 8, "enum", fields=[Field(0, 7, "None", FIELD_VARIANT),
                                                    Field(0, 8, "Some", FIELD_VARIANT)]),
    }
    assert field_path(types, 6, 8 + 16 + 8) == "arr[1].p"
    assert field_path(types, 6, 0) == "a"
    assert field_path(types, 6, 56 + 8 + 8) == "[1].arr[0].p"      # the next Outer of an array
    assert field_path(types, 9, 0) == "Some.__0"
    assert field_path(types, 2, 0) == "" and field_path(types, 99, 0) == ""
    assert find_member(types, 9, "__0") == (0, 2) and find_member(types, 3, "p") == (8, 2)
    assert find_member(types, 6, "p") is None                       # not inside arrays
    assert find_member(types, 6, "T") is None                       # template arguments are not members


def test_rust_leaked_rc_cycle_names_its_buffers(tmp_path):
    """tests/leak_corpus_rust/rc_cycle.rs: the leaked RcInner blocks are typed
    by the leak analysis; each one's Vec<u32> then names its payload buffer."""
    need("rustc", "clang-22", "ld.lld-22")
    from conftest import run_traced
    exe = tmp_path / "rc_cycle"
    _build(["rustc", "-O", "--edition=2021", "-o", str(exe), str(ROOT / "tests" / "leak_corpus_rust" / "rc_cycle.rs")])
    _, report, truth, _ = run_traced(exe, tmp_path)
    by_addr = {int(l["address"], 16) if isinstance(l["address"], str) else l["address"]: l for l in report["leaks"]}
    payload = [a for a, (_, how) in truth.items() if how == "indirect"]
    blocks = [a for a, (_, how) in truth.items() if how == "cycle"]
    assert len(payload) == 3 and len(blocks) == 3, truth
    assert all(by_addr[a]["type"] == "alloc::rc::RcInner<rc_cycle::Node>" for a in blocks), report["leaks"]
    assert all(by_addr[a]["type"] == "alloc::vec::Vec<u32, alloc::alloc::Global> buffer" and
               by_addr[a]["type_source"] == "holder" for a in payload), report["leaks"]
