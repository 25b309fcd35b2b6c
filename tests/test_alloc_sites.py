"""Allocation sites (``mappedtrace cc --alloc-sites``, issue #11 item 6).

* ``tests/alloc_sites/sites.c`` is built at test time with the pass and
  linked with ``foreign.c`` built without it (a library that frees and
  reallocates objects from typed sites).  It prints each object's site
  (``__LINE__`` of the malloc call) and the truth of its leaks; the report
  must name exactly those leaks, each with its site, and no site for the
  objects the library reallocated.
* The same program under valgrind (``-gdwarf-4``): no error.
* Generated heaps: the C kernel and the numpy marker agree with sites, and
  the site-word rules (address check, offset check) hold.
* Malformed ``.mtsites`` sections give BadData with section and offset.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mappedtrace.errors import BadData, UnsupportedVersion
from mappedtrace.formats import allocsites as fas
from mappedtrace.heap.allocsites import SiteTable, find_sites
from mappedtrace.trace import mark

import conftest
from conftest import MAPPEDTRACE, ROOT, addr, assert_exact, need, require_plugin

SRC = ROOT / "tests" / "alloc_sites"
TRUTH_H = ROOT / "tests" / "leak_corpus"
SITE_LINE = re.compile(r"^site (0x[0-9a-f]+) (\S+):(\d+) (\w+)$", re.M)
FOREIGN_LINE = re.compile(r"^foreign (0x[0-9a-f]+)( moved)?$", re.M)


def build(tmp: Path, opt: str, *extra: str, sites: bool = True) -> Path:
    """sites.c with the maps (and --alloc-sites), linked with foreign.c built without."""
    require_plugin()
    need("clang-22")
    lib = tmp / "libforeign.so"
    if not lib.exists():
        subprocess.run(["clang-22", "-O2", "-shared", "-fPIC", *extra, "-o", str(lib), str(SRC / "foreign.c")],
                       check=True, capture_output=True, timeout=300)
    exe = tmp / f"sites{opt}{'-sites' if sites else ''}{''.join(extra)}"
    r = subprocess.run([MAPPEDTRACE, "cc", *(["--alloc-sites"] if sites else []), opt, *extra,
                        f"-I{TRUTH_H}", "-o", str(exe), str(SRC / "sites.c"), f"-L{tmp}", "-lforeign",
                        f"-Wl,-rpath,{tmp}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def run(exe: Path, tmp: Path) -> tuple[str, dict]:
    js = tmp / f"{exe.name}.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), "--", str(exe)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 23, r.stderr[-3000:]
    return r.stderr, json.loads(js.read_text())


def truth_of(stderr: str) -> tuple[dict, set]:
    return conftest.truth_of(stderr)


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_leaks_say_where_they_were_allocated(opt: str, tmp_path: Path) -> None:
    exe = build(tmp_path, opt)
    err, rep = run(exe, tmp_path)
    truth, kept = truth_of(err)
    assert_exact(rep, truth, kept, err[-3000:])
    leaks = {addr(l["address"]): l for l in rep["leaks"]}
    # the site each object was allocated at, as the program printed it (the
    # last line for an address wins: chunks are reused)
    where = {int(a, 16): (f, f":{line} in {fn}") for a, f, line, fn in SITE_LINE.findall(err)}
    moves = FOREIGN_LINE.findall(err)
    foreign = {int(a, 16) for a, _ in moves}
    assert len(foreign) == 3 and moves[2][1] == "", moves        # the shrink stayed in place
    for a, l in leaks.items():
        if a in foreign:
            # reallocated by the library: the old site word is gone, never read as truth
            assert l["site"] is None, l
        else:
            # the file as the debug info names it (relative to the build directory)
            f, rest = where[a]
            assert l["site"].endswith(rest) and f.endswith(l["site"][:-len(rest)]), (hex(a), l, where[a])
            assert l["type_source"] in ("site", "pointer"), l
    # every leak from a typed site is named by its type
    by = {l["site"]: l["type"] for l in rep["leaks"] if l["site"]}
    assert {(s.split(" in ")[1], t) for s, t in by.items() if not s.endswith(" in main")} == {
        ("make_leaf", "struct leaf"), ("make_tree", "struct tree")}
    mains = {s: t for s, t in by.items() if s.endswith(" in main")}
    # aligned_alloc; realloc(NULL, 2 * sizeof *rr): an array its site proves
    assert sorted(mains.values()) == ["struct leaf", "struct rec[2]"], mains
    # the groups: one per (site, type), counts from the program's own lines
    groups = {(g["site"], g["type"]): g for g in rep["sites"]}
    leaf_site = next(s for s in by if s.endswith(" in make_leaf"))
    n_leaf = sum(1 for a in truth if a in where and leaf_site.endswith(where[a][1]) and a not in foreign)
    g = groups[(leaf_site, "struct leaf")]
    assert g["objects"] == n_leaf == 13 and g["direct"] == 11 and g["indirect"] == 2
    assert sum(g["objects"] for g in rep["sites"]) == len(truth)
    # precision: the records held only by void* slots are typed by their site
    p = rep["precision"]
    nbag = int(re.search(r"^bag (\d+)$", err, re.M).group(1))
    assert p["objects_typed_by_site"] >= nbag
    assert p["objects_with_site"] >= len(truth) - len(foreign)
    # reachable objects: bag records typed (their own site), leaves typed
    assert p["objects_typed"] >= 2 * nbag


def test_sites_type_what_void_pointers_hold(tmp_path: Path) -> None:
    """The same program without --alloc-sites: the records held by void* are
    scanned conservatively, leaks have no site, and fewer bytes are typed."""
    err_a, with_ = run(build(tmp_path, "-O2"), tmp_path)
    err_b, without = run(build(tmp_path, "-O2", sites=False), tmp_path)
    truth, kept = truth_of(err_b)
    assert_exact(without, truth, kept, err_b[-3000:])
    assert without["sites"] == [] and all(l["site"] is None for l in without["leaks"])
    assert without["precision"]["objects_with_site"] == 0
    nbag = int(re.search(r"^bag (\d+)$", err_a, re.M).group(1))
    pa, pb = with_["precision"], without["precision"]
    assert pa["objects_typed"] - pb["objects_typed"] >= nbag
    assert pa["heap_bytes_typed"] > pb["heap_bytes_typed"]
    # leaked objects named by their site instead of by their size
    assert sum(l["type"].startswith("unk") for l in with_["leaks"]) < \
        sum(l["type"].startswith("unk") for l in without["leaks"])


def test_valgrind_clean(tmp_path: Path) -> None:
    """The padded requests and the site words stay inside what malloc gave;
    the library frees and reallocates them: valgrind finds no error."""
    need("valgrind")
    exe = build(tmp_path, "-O2", "-gdwarf-4")
    r = subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=no", str(exe)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Invalid" not in r.stderr and "uninitialised" not in r.stderr, r.stderr[-3000:]


def build_bytes(tmp: Path, *extra: str, mode: str = "--alloc-sites") -> Path:
    require_plugin()
    exe = tmp / ("bytes" + "".join(extra) + mode.replace("=", "-"))
    r = subprocess.run([MAPPEDTRACE, "cc", *([mode] if mode else []), "-O2", *extra, f"-I{TRUTH_H}",
                        "-o", str(exe), str(SRC / "bytes.c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("store_ptr", [False, True])
def test_byte_buffers(store_ptr: bool, tmp_path: Path) -> None:
    """sds-like strings and listpack-like buffers (tests/alloc_sites/bytes.c):
    their sites say "pointer-free memory".  With no pointer written into
    untyped memory anywhere in the program their words are skipped (typed for
    scanning); a program that memcpy's a pointer into a char buffer keeps
    them scanned (named only), and the object held only there is no leak.
    A struct allocated in a freed string's chunk is typed by its own site."""
    exe = build_bytes(tmp_path, *(["-DSTORE_PTR"] if store_ptr else []))
    err, rep = run(exe, tmp_path)
    truth, kept = truth_of(err)
    assert_exact(rep, truth, kept, err[-3000:])
    p = rep["precision"]
    nbag = int(re.search(r"^bag (\d+)$", err, re.M).group(1))
    line = next(i + 1 for i, t in enumerate((SRC / "bytes.c").read_text().splitlines())
                if "void *sh = malloc(" in t)
    (leak,) = rep["leaks"]
    assert leak["type"].startswith("char[") and leak["site"].endswith(f"bytes.c:{line} in str_new"), leak
    if store_ptr:
        assert p["untyped_pointer_writes"] >= 1 and p["objects_bytes_by_site"] == 0, p
        assert p["objects_named_by_site"] >= nbag + 1, p
    else:
        assert p["untyped_pointer_writes"] == 0, p
        assert p["objects_bytes_by_site"] >= nbag and p["heap_bytes_bytes_by_site"] >= 1500, p
        # the strings' and buffers' bytes up to their site words are typed
        assert p["heap_bytes_typed"] >= p["heap_bytes_bytes_by_site"]


def test_compact_sites_grow_no_chunk(tmp_path: Path) -> None:
    """``--alloc-sites=compact``: the chunks are those of a build without
    sites (the default mode grows some), the objects whose chunk had room
    keep their site, and the answer is still exact."""
    usable = re.compile(r"^usable (\d+)$", re.M)
    out = {}
    for mode in ("", "--alloc-sites", "--alloc-sites=compact"):
        exe = build_bytes(tmp_path, mode=mode)
        err, rep = run(exe, tmp_path)
        assert_exact(rep, *truth_of(err), err[-3000:])
        out[mode] = (int(usable.search(err).group(1)), rep["precision"])
    assert out["--alloc-sites=compact"][0] == out[""][0] < out["--alloc-sites"][0], out
    full, compact = out["--alloc-sites"][1], out["--alloc-sites=compact"][1]
    assert 0 < compact["objects_with_site"] < full["objects_with_site"], (compact, full)


def test_maps_cli_lists_no_error_and_driver_flag_is_ours(tmp_path: Path) -> None:
    """--alloc-sites is the driver's (clang never sees it); the binary has a
    .mtsites section whose records decode with the program's lines."""
    exe = build(tmp_path, "-O2")
    from mappedtrace.formats.maps import BinaryMaps
    bm = BinaryMaps.load(str(exe))
    text = (SRC / "sites.c").read_text().splitlines()
    # one record per allocation call left after inlining: every SITE() line, no other
    lines = {i + 1 for i, t in enumerate(text) if re.search(r";\s*SITE\(", t)}
    assert {s.line for s in bm.sites} == lines and len(lines) == 8
    for s in bm.sites:
        assert "SITE(" in text[s.line - 1], s
        assert s.kind in ("malloc", "calloc", "realloc", "aligned_alloc")
    assert {s.function for s in bm.sites} == {"make_leaf", "make_tree", "new_rec", "main"}
    # and `mappedtrace maps` lists them
    r = subprocess.run([MAPPEDTRACE, "maps", "--json", str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["summary"]["alloc_sites"] == len(bm.sites)
    assert {(a["line"], a["function"], a["type"]) for a in m["alloc_sites"]} >= {
        (s.line, "make_tree", "struct tree") for s in bm.sites if s.function == "make_tree"}
    r = subprocess.run([MAPPEDTRACE, "maps", str(exe)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "160"})
    assert r.returncode == 0 and "allocation sites" in r.stdout and "in new_rec" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize("wrapper_maps", [True, False])
def test_allocation_wrappers(wrapper_maps: bool, tmp_path: Path) -> None:
    """``--alloc-fn=xmalloc,xrealloc:realloc``: each object's site is the
    wrapper's caller (its line, its type), whether the wrappers are built with
    sites too (two words: the caller's is taken) or without the maps at all."""
    require_plugin()
    need("clang-22")
    flags = ["--alloc-fn=xmalloc,xrealloc:realloc", "-O2", f"-I{TRUTH_H}"]
    if wrapper_maps:
        objs = [str(SRC / "wrap_alloc.c")]
    else:
        lib = tmp_path / "wrap_alloc.o"
        subprocess.run(["clang-22", "-O2", "-c", "-o", str(lib), str(SRC / "wrap_alloc.c")], check=True, timeout=300)
        objs = [str(lib)]
    exe = tmp_path / "wrap"
    r = subprocess.run([MAPPEDTRACE, "cc", *flags, "-o", str(exe), str(SRC / "wrap.c"), *objs],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    err, rep = run(exe, tmp_path)
    truth, kept = truth_of(err)
    assert_exact(rep, truth, kept, err[-3000:])
    where = {int(a, 16): f":{line} in {fn}" for a, f, line, fn in SITE_LINE.findall(err)}
    text = (SRC / "wrap.c").read_text().splitlines()
    line_of = {k: next(i + 1 for i, t in enumerate(text) if k in t) for k in ("*it = xmalloc", "**arr = xrealloc")}
    for l in rep["leaks"]:
        a = addr(l["address"])
        assert l["site"] and l["site"].endswith(where[a]), (hex(a), l, where[a])
        # the caller's variable gives the type
        if l["site"].endswith(f":{line_of['*it = xmalloc']} in main"):
            assert (l["type"], l["type_source"]) == ("struct item", "site"), l
        if l["site"].endswith(f":{line_of['**arr = xrealloc']} in main"):    # 4 * sizeof *arr: an array
            assert (l["type"], l["type_source"]) == ("struct item*[4]", "site"), l
    assert rep["precision"]["objects_with_site"] == len(truth)


TYPED_WRAP_FNS = "--alloc-fn=obj_new:wrapper,vec_*:wrapper,hdr_*:wrapper"


def build_typed_wrap(tmp: Path, *extra: str, fns: str = TYPED_WRAP_FNS) -> Path:
    """typed_wrap.c and its allocators with the maps, linked with foreign.c built without."""
    require_plugin()
    need("clang-22")
    lib = tmp / "libforeign.so"
    if not lib.exists():
        subprocess.run(["clang-22", "-O2", "-shared", "-fPIC", *extra, "-o", str(lib), str(SRC / "foreign.c")],
                       check=True, capture_output=True, timeout=300)
    exe = tmp / f"typed_wrap{'-w' if fns else ''}{''.join(extra)}"
    r = subprocess.run([MAPPEDTRACE, "cc", "--alloc-sites", *([fns] if fns else []), "-O2", *extra,
                        f"-I{TRUTH_H}", "-o", str(exe), str(SRC / "typed_wrap.c"), str(SRC / "typed_wrap_alloc.c"),
                        f"-L{tmp}", "-lforeign", f"-Wl,-rpath,{tmp}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def test_typed_wrappers(tmp_path: Path) -> None:
    """``--alloc-fn=obj_new:wrapper,hdr_*:wrapper``: Lua's shape (an allocator
    called through a function pointer, objects freed with their size) and
    SQLite's (the object at chunk + 8): each object's site is the wrapper's
    caller and its type what the caller uses it as; a table is typed although
    the list reaches it as its common header (struct gcobj); the program's
    own byte count is unchanged (no request grew); objects freed and
    reallocated by code without the maps (foreign.c) are no trouble; a
    wrapper handing out slots of memory no site allocated gets no word."""
    exe = build_typed_wrap(tmp_path)
    err, rep = run(exe, tmp_path)
    truth, kept = truth_of(err)
    assert_exact(rep, truth, kept, err[-3000:])
    where = {int(a, 16): f":{line} in {fn}" for a, f, line, fn in SITE_LINE.findall(err)}
    text = (SRC / "typed_wrap.c").read_text().splitlines()
    line_of = {k: next(i + 1 for i, t in enumerate(text) if k in t)
               for k in ("*t = (struct table *)obj_new(&S", "*r = hdr_alloc(sizeof *r); SITE", "*lone = hdr_alloc",
                         "**lost = vec_new", "lost[i] = hdr_alloc")}
    nlost = int(re.search(r"^vec (\d+)$", err, re.M).group(1)) - 10
    types = {line_of["*t = (struct table *)obj_new(&S"]: "struct table",
             line_of["*r = hdr_alloc(sizeof *r); SITE"]: "struct rec [+8]",
             line_of["*lone = hdr_alloc"]: "struct rec [+8]",
             line_of["**lost = vec_new"]: f"struct rec*[{nlost}]",        # an array its site proved
             line_of["lost[i] = hdr_alloc"]: "struct rec [+8]"}
    assert len(rep["leaks"]) == len(where) == 7 + 1 + nlost
    for l in rep["leaks"]:
        a = addr(l["address"])
        assert l["site"] and l["site"].endswith(where[a]), (hex(a), l, where[a])
        line = int(where[a].split()[0][1:])
        assert (l["type"], l["type_source"]) == (types[line], "site"), l
    p = rep["precision"]
    nbag = int(re.search(r"^bag (\d+)$", err, re.M).group(1))
    # kept tables (through struct gcobj *next), strings and recs (through void *),
    # the kept vector and every rec it holds (the array's elements are typed slots)
    nvec = int(re.search(r"^vec (\d+)$", err, re.M).group(1))
    assert p["objects_typed_by_site"] >= 3 * nbag + 1 + nvec, p
    # a wrapper that hands out memory no site allocated: nothing written into it
    assert re.search(r"^pool intact$", err, re.M), err[-2000:]
    # the wrapper's own count of bytes is the program's (no request changed)
    plain = build_typed_wrap(tmp_path, fns="")
    err_p, rep_p = run(plain, tmp_path)
    count = re.compile(r"^bytes (\d+)$", re.M)
    assert count.search(err).group(1) == count.search(err_p).group(1)
    # without the wrappers named: l_alloc's site has no type, hdr_alloc's types
    # only the size word (long long) of each rec
    pp = rep_p["precision"]
    assert pp["objects_typed_by_site"] <= nbag + 4 and pp["heap_bytes_typed_by_site"] <= 8 * (nbag + 4), pp
    assert p["heap_bytes_typed_by_site"] > 4 * pp["heap_bytes_typed_by_site"], (p, pp)
    assert_exact(rep_p, *truth_of(err_p), err_p[-3000:])


def test_typed_wrappers_valgrind_clean(tmp_path: Path) -> None:
    """The callers' words go only into the padding of the block a site
    allocated: valgrind finds no error (objects freed with their size,
    by hdr_free and by code without the maps, and reallocated by it)."""
    need("valgrind")
    exe = build_typed_wrap(tmp_path, "-gdwarf-4")
    r = subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=no", str(exe)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Invalid" not in r.stderr and "uninitialised" not in r.stderr, r.stderr[-3000:]


def test_alloc_fn_bad_kind() -> None:
    r = subprocess.run([MAPPEDTRACE, "cc", "--alloc-fn=xmalloc:free", "-c", "-o", "/dev/null", "x.c"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--alloc-fn" in r.stderr and "xmalloc:free" in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_cxx_driver(tmp_path: Path) -> None:
    """``mappedtrace c++ --alloc-sites``: malloc in C++ is a site (namespaced
    type named), ``operator new`` is not."""
    require_plugin()
    exe = tmp_path / "sites_cxx"
    r = subprocess.run([MAPPEDTRACE, "c++", "--alloc-sites", "-O0", "-o", str(exe), str(SRC / "sites_cxx.cc")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    err, rep = run(exe, tmp_path)
    m = re.search(r"site (0x[0-9a-f]+) (\d+)", err)
    n = int(re.search(r"new (0x[0-9a-f]+)", err).group(1), 16)
    leaks = {addr(l["address"]): l for l in rep["leaks"]}
    site = leaks[int(m.group(1), 16)]
    assert site["site"].endswith(f"sites_cxx.cc:{m.group(2)} in main") and site["type"] == "shapes::Poly", site
    assert leaks[n]["site"] is None


def test_top_and_why_show_sites(tmp_path: Path) -> None:
    """On a live process: ``top`` lists the reachable objects by allocation
    site (the void*-held records: one site, NBAG objects), ``why`` says where
    the object asked about was allocated."""
    exe = build(tmp_path, "-O2")
    p = subprocess.Popen([str(exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        err = ""
        top_js, why_js = tmp_path / "top.json", tmp_path / "why.json"
        r = subprocess.run([MAPPEDTRACE, "top", str(p.pid), "--json", str(top_js)], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "by allocation site" in r.stdout and "in new_rec" in r.stdout, r.stdout
        r2 = subprocess.run([MAPPEDTRACE, "why", str(p.pid), "struct rec", "--json", str(why_js)],
                            capture_output=True, text=True, timeout=300)
        assert r2.returncode == 0, r2.stderr[-3000:]
        assert "allocated at" in r2.stdout and "in new_rec" in r2.stdout, r2.stdout
    finally:
        out, err = p.communicate("\n", timeout=60)
    assert p.returncode == 0                          # the traced process carried on, unharmed
    nbag = int(re.search(r"^bag (\d+)$", err, re.M).group(1))
    top = json.loads(top_js.read_text())
    rows = {r["site"].split(" in ")[1]: r for r in top["sites"] if r["site"]}
    assert rows["new_rec"]["objects"] == nbag and rows["new_rec"]["type"] == "struct rec"
    assert rows["make_leaf"]["objects"] >= nbag and rows["make_leaf"]["type"] == "struct leaf"
    why = json.loads(why_js.read_text())
    assert why["objects"] and all(o["site"].endswith(" in new_rec")
                                  for o in why["objects"])
    assert all(o["reachable"] and o["paths"] for o in why["objects"])


# --------------------------------------------------------------------------
# generated heaps
# --------------------------------------------------------------------------
def _site_word(p: int, rec: int) -> int:
    return ((p * fas.SITE_MIX) & (2**64 - 1)) ^ rec


def _with_sites(seed: int):
    """A generated heap (test_trace_kernels.gen_heap) where every third chunk
    has a site word (a site of one of the test types, or none) at its end."""
    from test_trace_kernels import gen_heap, NODE, PAIR, HOLD, CHAR
    import random
    t, chunks, roots = gen_heap(seed)
    rnd = random.Random(seed)
    tids = [NODE, PAIR, HOLD, CHAR, 0, 12345]           # 12345: not in the table
    sites = [fas.AllocSite(0x500000 + 24 * i, tid, "g.c", "f", 10 + i, 1, "malloc") for i, tid in enumerate(tids)]
    # a typed wrapper's object at chunk + 8, and arrays proved by their site
    sites += [fas.AllocSite(0x500000 + 24 * len(tids), NODE, "g.c", "w", 30, 1, "wrapper",
                            flags=fas.SITE_WRAPPER_CALL),
              fas.AllocSite(0x500000 + 24 * (len(tids) + 1), NODE, "g.c", "a", 31, 1, "malloc",
                            flags=fas.SITE_ARRAY),
              fas.AllocSite(0x500000 + 24 * (len(tids) + 2), PAIR, "g.c", "b", 32, 1, "wrapper",
                            flags=fas.SITE_WRAPPER_CALL | fas.SITE_ARRAY)]
    table = SiteTable(np.array([s.address for s in sites], np.uint64), sites)
    base = min(t.regions)
    mem = bytearray(t.regions[0x10000000])
    want = {}
    for c in chunks:
        if c.state != "in-use" or rnd.random() > 0.33:
            continue
        k = rnd.randrange(len(sites))
        key = c.address + (8 if sites[k].kind == "wrapper" else 0)
        struct.pack_into("<Q", mem, c.address - 0x10000000 + c.size - 8, _site_word(key, sites[k].address))
        want[c.address] = k
    t.regions[0x10000000] = bytes(mem)
    assert base <= 0x10000000
    return t, chunks, roots, table, want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c_and_numpy_agree_with_sites(seed: int) -> None:
    from test_trace_kernels import TYPES, c_mark
    from test_trace_structs import assert_same_graph
    t, chunks, roots, table, want = _with_sites(seed)
    a = c_mark(t, chunks, roots, TYPES, sites=table)
    b = mark(t, chunks, roots, TYPES, kernel="numpy", sites=table)
    assert_same_graph(a, b)
    assert np.array_equal(a.node_site, b.node_site)
    got = {int(a.addresses[i]): int(a.node_site[i]) for i in np.flatnonzero(a.node_site >= 0)}
    assert got == want
    assert a.precision.objects_with_site == len(want)
    assert a.precision.objects_typed_by_site > 0
    # a site never makes a chunk reachable: whatever is reached, the
    # conservative baseline (every word a pointer) reaches too
    cons = c_mark(t, chunks, roots, TYPES, mode="conservative", sites=table)
    assert not np.any((a.how != 0) & (cons.how == 0))
    assert cons.precision.objects_typed_by_site == 0 and cons.precision.objects_typed == 0
    # unreached chunks are named by their site's type (known ones), never typed
    un = (a.how == 0) & (a.node_site >= 0)
    # (a wrapper's object at +8, an array: the synthetic type T [+8], T[k])
    named = np.array([table.sites[k].type_id in TYPES for k in a.node_site[un]], bool)
    for tid, k in zip(a.type_ids[un][named].tolist(), a.node_site[un][named].tolist()):
        st = table.sites[k]
        assert tid == st.type_id or (tid >> 63 and a.types[tid].name.startswith(TYPES[st.type_id].name)), (tid, st)
    # the wrapper's and the array sites were found, and typed some chunks
    assert {table.sites[k].function for k in a.node_site[a.node_site >= 0]} >= {"w", "a", "b"}
    assert any(a.types[int(t)].name.endswith("[+8]") for t in a.type_ids if int(t) >> 63)


def test_site_word_rules() -> None:
    """The word is accepted only keyed to the chunk's own address, at the end
    of a request that fills the chunk."""
    site = fas.AllocSite(0x500018, 1, "a.c", "f", 3, 1, "malloc")
    aligned = fas.AllocSite(0x500030, 1, "a.c", "g", 4, 1, "aligned_alloc")
    table = SiteTable(np.array([site.address, aligned.address], np.uint64), [site, aligned])
    starts = np.array([0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000], np.uint64)
    sizes = np.array([40, 40, 120, 120, 168, 4096 * 3 - 16], np.uint64)
    words = {
        (0, 32): _site_word(0x1000, site.address),          # last word of a 32-byte request: found
        (1, 32): _site_word(0x1000, site.address),          # keyed to another address: rejected
        (2, 88): _site_word(0x3000, site.address),          # a smaller request (another size class): stale
        (3, 104): _site_word(0x4000, site.address) ^ 0x18,  # names no record (between two): rejected
        (4, 136): _site_word(0x5000, aligned.address),      # aligned_alloc, unsplit remainder: found
        (5, 4096 * 2 + 8): _site_word(0x6000, site.address),     # mmapped: in the last page: found
    }

    def rd(nodes, offs):
        return np.array([words.get((int(n), int(o)), 0) for n, o in zip(nodes, offs)], np.uint64)

    got = find_sites(table, starts, sizes, np.ones(6, bool), rd)
    assert got.tolist() == [0, -1, -1, -1, 1, 0]
    # the same word at 136 of a malloc site is one size class off: rejected
    words[(4, 136)] = _site_word(0x5000, site.address)
    assert find_sites(table, starts, sizes, np.ones(6, bool), rd)[4] == -1


def test_wrapper_word_rule() -> None:
    """A word right before a wrapper's own word (a RETURNED site) names the
    wrapper's caller when it is a WRAPPER_CALL site; before any other site's
    word, or naming another kind of site, it is ignored."""
    inner = fas.AllocSite(0x500018, 0, "w.c", "xmalloc", 3, 1, "malloc", flags=fas.SITE_RETURNED)
    plain = fas.AllocSite(0x500030, 0, "a.c", "f", 4, 1, "malloc")
    caller = fas.AllocSite(0x500048, 7, "a.c", "main", 9, 1, "malloc", flags=fas.SITE_WRAPPER_CALL)
    other = fas.AllocSite(0x500060, 7, "a.c", "g", 10, 1, "malloc")
    table = SiteTable(np.array([x.address for x in (inner, plain, caller, other)], np.uint64),
                      [inner, plain, caller, other])
    starts = np.array([0x1000, 0x2000, 0x3000], np.uint64)
    sizes = np.array([40, 40, 40], np.uint64)
    words = {(0, 32): _site_word(0x1000, inner.address), (0, 24): _site_word(0x1000, caller.address),
             (1, 32): _site_word(0x2000, plain.address), (1, 24): _site_word(0x2000, caller.address),
             (2, 32): _site_word(0x3000, inner.address), (2, 24): _site_word(0x3000, other.address)}

    def rd(nodes, offs):
        return np.array([words.get((int(n), int(o)), 0) for n, o in zip(nodes, offs)], np.uint64)

    assert find_sites(table, starts, sizes, np.ones(3, bool), rd).tolist() == [2, 1, 0]


def test_typed_wrapper_word_rule() -> None:
    """A typed wrapper's word (kind ``wrapper``) may be keyed to a pointer up
    to 56 bytes into the chunk, which gives the object's offset; a word of
    any other kind keyed so is rejected, and so is a key past 56 bytes."""
    caller = fas.AllocSite(0x500018, 7, "a.c", "main", 9, 1, "wrapper", flags=fas.SITE_WRAPPER_CALL)
    plain = fas.AllocSite(0x500030, 7, "a.c", "f", 4, 1, "malloc")
    table = SiteTable(np.array([caller.address, plain.address], np.uint64), [caller, plain])
    starts = np.array([0x1000, 0x2000, 0x3000, 0x4000, 0x5000], np.uint64)
    sizes = np.array([40, 40, 40, 120, 120], np.uint64)
    words = {(0, 32): _site_word(0x1008, caller.address),      # SQLite's chunk + 8: found, offset 8
             (1, 32): _site_word(0x2008, plain.address),       # a malloc site keyed so: rejected
             (2, 32): _site_word(0x3000, caller.address),      # keyed to the chunk: offset 0
             (3, 104): _site_word(0x4000 + 64, caller.address),  # 64 bytes in: rejected
             (4, 104): _site_word(0x5000 + 56, caller.address)}  # 56 bytes in: found

    def rd(nodes, offs):
        return np.array([words.get((int(n), int(o)), 0) for n, o in zip(nodes, offs)], np.uint64)

    got, obj, at = find_sites(table, starts, sizes, np.ones(5, bool), rd, with_offsets=True)
    assert got.tolist() == [0, -1, 0, -1, 0]
    assert obj.tolist() == [8, 0, 0, 0, 56] and at[[0, 2, 4]].tolist() == [32, 32, 104]


def test_site_types_at_offsets_and_arrays() -> None:
    """The synthetic type of a site's object at offset 8 of its chunk, and
    of an array its site proved: slots moved and repeated, header words
    conservative; a pointer to the element type is covered by the array."""
    from mappedtrace.formats.mtmap import Slot, TypeInfo
    from mappedtrace.trace import _compile_types, _site_type
    rec = TypeInfo(7, "struct rec", 24, "struct", 0, [Slot(0, 7), Slot(16, 0, flags=4)])
    at8 = _site_type(rec, 8, 1, 1 << 63 | 1)
    assert at8.name == "struct rec [+8]" and at8.size == 32
    assert [(x.offset, x.count, x.flags) for x in at8.slots] == [(0, 1, 4), (8, 1, 0), (24, 1, 4)]
    arr = _site_type(rec, 0, 5, 1 << 63 | 2)
    assert arr.name == "struct rec[5]" and arr.size == 120
    assert [(x.offset, x.count, x.stride) for x in arr.slots] == [(0, 5, 24), (16, 5, 24)]
    other = TypeInfo(9, "struct other", 24, "struct", 0, [Slot(8, 7)])
    tt = _compile_types({7: rec, arr.id: arr, 9: other})
    a, r, o = tt.idx(arr.id), tt.idx(7), tt.idx(9)
    assert tt.covers(a, r) and not tt.covers(a, o) and not tt.covers(r, a)


def _block(n: int = 1, version: int = 1, magic: int = fas.MAGIC, record_size: int = 24,
           writes: int | None = None) -> bytes:
    """A block; ``writes``: a 40-byte header counting that many untyped pointer writes."""
    strings = b"\0a.c\0f\0"
    hsize = 32 if writes is None else 40
    soff = hsize + record_size * n
    total = (soff + len(strings) + 7) & ~7
    out = struct.pack("<IHHIIIIII", magic, version, hsize, total, n, record_size, soff, len(strings), 0)
    if writes is not None:
        out += struct.pack("<II", fas.BLOCK_WRITES_COUNTED, writes)
    for i in range(n):
        out += struct.pack("<QIIIHBB", 7, 1, 5, 10 + i, 2, 1, 0).ljust(record_size, b"\0")
    return (out + strings).ljust(total, b"\0")


def test_decoder() -> None:
    data = _block(2) + b"\0" * 8 + _block(1)
    sites = fas.decode(data, "x: .mtsites", 0x400000)
    assert [(s.address, s.line, s.file, s.function, s.kind, s.type_id) for s in sites] == [
        (0x400020, 10, "a.c", "f", "malloc", 7), (0x400038, 11, "a.c", "f", "malloc", 7),
        (0x400000 + len(_block(2)) + 8 + 32, 10, "a.c", "f", "malloc", 7)]
    assert sites[0].where == "a.c:10 in f"
    # the 40-byte header: the module's untyped pointer writes (records after it)
    data = _block(1, writes=3) + _block(1)
    sites, blocks = fas.decode_blocks(data, "x: .mtsites", 0)
    assert [s.address for s in sites] == [40, len(_block(1, writes=3)) + 32]
    assert [(b.counted, b.untyped_writes) for b in blocks] == [(True, 3), (False, 0)]


class _Maps:
    def __init__(self, chunks: int, blocks: list) -> None:
        self.chunks, self.site_blocks, self.sites = [None] * chunks, blocks, []


class _Mod:
    def __init__(self, path: str) -> None:
        self.path, self.bias = path, 0


def test_byte_buffers_trusted_only_when_every_module_counted_none() -> None:
    """A byte-buffer site decides scanning only when every module with maps
    counted its untyped pointer writes and none has any."""
    ok = fas.SiteBlock("a.c", True, 0)
    cases = [({"x": _Maps(2, [ok, ok])}, 0, True),
             ({"x": _Maps(2, [ok, fas.SiteBlock("b.c", True, 2)])}, 2, False),
             ({"x": _Maps(2, [ok])}, -1, False),                              # a module without sites
             ({"x": _Maps(1, [ok]), "y": _Maps(1, [])}, -1, False),           # a library built without
             ({"x": _Maps(1, [ok]), "y": _Maps(0, [])}, 0, True),             # a library with no maps
             ({"x": _Maps(1, [fas.SiteBlock("a.c", False, 0)])}, -1, False)]  # an older pass
    for maps, writes, trusted in cases:
        t = SiteTable.of([_Mod(p) for p in maps], maps)
        assert (t.untyped_writes, t.bytes_trusted) == (writes, trusted), maps


@pytest.mark.parametrize("data,what", [
    (_block(magic=0x1234), "magic"),
    (_block(version=2), "version 2"),
    (_block()[:40], "runs past the end"),
    (_block(n=1)[:8] + struct.pack("<I", 4) + _block(n=1)[12:], "block sizes"),
    (_block(n=1)[:12] + struct.pack("<I", 10 ** 6) + _block(n=1)[16:], "site count"),
    (b"\0\0\0" + _block(), "aligned"),
])
def test_decoder_bad_input(data: bytes, what: str) -> None:
    with pytest.raises(BadData) as e:
        fas.decode(data, "x: .mtsites", 0)
    assert what in str(e.value) and "x: .mtsites" in str(e.value)
    if what.startswith("version"):
        assert isinstance(e.value, UnsupportedVersion)
