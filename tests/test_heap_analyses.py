"""Heap analyses: dominators and retained sizes against a brute-force reference
(random graphs, marked by the real marker), and ``top``/``why`` on a live
process whose answers it prints about itself (samples/heap_hold.c)."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SAMPLES, build_sample, run_mt
from mappedtrace.analyses.dominators import by_type, dominator_tree, preorder, subtree_sums
from mappedtrace.analyses.paths import PathFinder
from mappedtrace.roots import Root
from mappedtrace.trace import mark
from test_leaks_unit import B, heap


# --- the algorithms, against brute force ----------------------------------------

def _reach(n: int, adj: dict[int, list[int]], starts: list[int], removed: int | None) -> set[int]:
    seen, todo = set(), [s for s in starts if s != removed]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        todo.extend(w for w in adj.get(v, []) if w != removed and w not in seen)
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 9).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n),
    st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))))
def test_retained_sizes_match_brute_force(case):
    """Retained size of x = bytes of the objects that become unreachable
    when x is removed (x included), for every object, on random heaps."""
    n, links, root_nodes = case
    adj = {i: list(dict.fromkeys(links[i])) for i in range(n)}
    t, chunks = heap(adj)
    roots = [Root("value", B + 0x40 * r, 8, 0, True, f"global g{k}") for k, r in enumerate(root_nodes)]
    g = mark(t, chunks, roots, {})
    size = int(g.sizes[0])
    d = dominator_tree(g)
    full = _reach(n, adj, root_nodes, None)
    for x in range(n):
        want = 0 if x not in full else size * len(full - _reach(n, adj, root_nodes, x))
        assert int(d.retained[x]) == want, (adj, root_nodes, x)
    # the types table's retained figure: every reached object is one type here,
    # so the topmost objects' retained sizes sum to the bytes reached
    rows = by_type(g, d)
    assert sum(r.retained_bytes for r in rows) == size * len(full)


@given(st.lists(st.integers(-1, 30), min_size=1, max_size=30))
def test_subtree_sums_match_a_walk(parents):
    n = len(parents)
    par = np.array([p if p < n and p != i else -1 for i, p in enumerate(parents)], np.int64)
    # break cycles: keep only edges to smaller indices (a forest)
    par = np.where(par < np.arange(n), par, -1)
    w = np.arange(1, n + 1, dtype=np.uint64)
    want = w.astype(np.int64).copy()
    for v in range(n - 1, -1, -1):
        if par[v] >= 0:
            want[par[v]] += want[v]
    assert subtree_sums(par, w).tolist() == want.tolist()              # the C kernel where it builds
    assert subtree_sums(par, w, kernel="numpy").tolist() == want.tolist()


@given(st.lists(st.integers(-1, 30), min_size=1, max_size=30))
def test_preorder_matches_a_walk(parents):
    n = len(parents)
    par = np.array([p if p < n and p != i else -1 for i, p in enumerate(parents)], np.int64)
    par = np.where(par < np.arange(n), par, -1)
    par[0] = -1
    kids = {v: [c for c in range(n) if par[c] == v] for v in range(n)}
    want, stack = {}, [0]
    while stack:                                    # children in index order
        v = stack.pop()
        want[v] = len(want)
        stack.extend(reversed(kids[v]))
    for kernel in ("auto", "numpy"):                # the C kernel where it builds, and the oracle
        got = preorder(par, 0, subtree_sums(par, np.ones(n, np.uint64), kernel=kernel), kernel=kernel)
        assert {v: int(p) for v, p in enumerate(got) if p >= 0} == want
        assert all(got[v] == -1 for v in range(n) if v not in want)


def test_subtree_sums_of_a_long_chain():
    n = 200_000
    par = np.arange(-1, n - 1, dtype=np.int64)
    s = subtree_sums(par, np.ones(n, np.uint64))
    assert int(s[0]) == n and int(s[-1]) == 1


def test_paths_prefer_exact_and_name_the_words():
    # g0 → 0 → 1 → 2 ; conservative root r → 2 directly
    t, chunks = heap({0: [1], 1: [0, 2], 2: []})
    roots = [Root("value", B, 8, 0, True, "global head"),
             Root("value", B + 0x80, 8, 0, False, "thread 1 #0 read rbx", 1)]
    g = mark(t, chunks, roots, {})
    p = PathFinder(g).paths(2, 3)
    assert [x.holder for x in p] == ["thread 1 #0 read", "global head"] or \
        [x.holder for x in p] == ["global head", "thread 1 #0 read"]
    ex = [x for x in p if x.holder == "global head"][0]
    assert [h.node for h in ex.hops] == [0, 1, 2]
    assert ex.hops[2].via_offset == 8           # the second word of object 1
    assert PathFinder(g).paths(2, 1)[0].hops[-1].node == 2


# --- top and why on a live process ------------------------------------------------

def _start(exe: str, n: int):
    p = subprocess.Popen([exe, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    truth = {}
    for line in p.stdout:
        if line.startswith("ready"):
            break
        _, what, addr, num = line.split()
        truth[what] = (int(addr, 16), int(num))
    return p, truth


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    d = tmp_path_factory.mktemp("hold")
    exe = d / "heap_hold"
    build_sample(SAMPLES / "heap_hold.c", "-O2", exe)
    p, truth = _start(str(exe), 120)
    core = d / "hold.core"
    r = run_mt("snapshot", str(p.pid), "-o", str(core))
    assert r.returncode == 0, r.stderr
    yield p, truth, core
    p.stdin.close()
    assert p.wait(timeout=60) == 0


def _json(*args) -> dict:
    r = run_mt(*args, "--json", "-")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("source", ["core", "pid"])
def test_top_retained_by_the_global(held, source):
    p, truth, core = held
    doc = _json("top", str(core) if source == "core" else str(p.pid), "--limit", "50")
    holders = {h["holder"]: h for h in doc["holders"]}
    assert holders["global cache"]["retained_bytes"] == truth["cache"][1]
    assert holders["global cache"]["exact"]
    types = {t["type"]: t for t in doc["types"]}
    assert types["struct entry"]["objects"] == 120
    assert types["struct cache"]["retained_bytes"] == truth["cache"][1]
    assert types["struct tnode"]["objects"] == 31 and types["struct tnode"]["shallow_bytes"] == truth["tree"][1]
    s = doc["summary"]
    assert s["objects_unreached"] == 2 and s["edges_exact"] > 0


def test_why_an_entry_goes_through_the_list(held):
    _, truth, core = held
    addr, depth = truth["entry"]
    doc = _json("why", str(core), hex(addr + 8))          # an interior address is accepted
    (obj,) = doc["objects"]
    assert obj["address"] == addr and obj["reachable"] and obj["type"] == "struct entry"
    best = obj["paths"][0]
    assert best["holder"] == "global cache" and best["exact"]
    hops = best["hops"]
    assert len(hops) == depth + 1 and hops[0]["address"] == truth["cache"][0]
    assert all(h["type"] == "struct entry" and h["via_offset"] == 0 for h in hops[2:])


def test_why_a_shared_object_has_two_holders(held):
    _, truth, core = held
    doc = _json("why", str(core), hex(truth["shared"][0]), "--paths", "5")
    holders = {p["holder"] for p in doc["objects"][0]["paths"] if p["exact"]}
    assert "global cache" in holders
    assert any(re.fullmatch(r"thread \d+ #\d+ main", h) for h in holders), holders


def test_why_a_leak_and_a_type(held):
    _, truth, core = held
    doc = _json("why", str(core), hex(truth["leaked"][0]))
    assert doc["objects"][0]["reachable"] is False and doc["objects"][0]["paths"] == []
    doc = _json("why", str(core), "struct cache")
    assert doc["objects"][0]["address"] == truth["cache"][0]


@pytest.mark.parametrize("query", ["0x10", "struct no_such_type"])
def test_why_bad_query_is_one_line(held, query):
    _, _, core = held
    r = run_mt("why", str(core), query)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("mappedtrace: error: ")


# --- diff and watch on a process that grows a cache -------------------------------

def _grow(p, k: int) -> int:
    p.stdin.write(f"grow {k}\n")
    p.stdin.flush()
    line = p.stdout.readline().split()
    assert line[0] == "grew", line
    return int(line[1])


def _grown(exe: str, n: int, k: int, tmp_path) -> tuple[dict, object, object, int]:
    """Start heap_hold with ``n`` entries, snapshot it (stop-copy), grow it by
    ``k`` entries, snapshot it again (fork): (truth, before, after, bytes grown)."""
    p, truth = _start(exe, n)
    try:
        a, b = tmp_path / "a.core", tmp_path / "b.core"
        assert run_mt("snapshot", str(p.pid), "-o", str(a)).returncode == 0
        grew = _grow(p, k)
        assert run_mt("snapshot", str(p.pid), "-o", str(b), "--mode", "fork").returncode == 0
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    return truth, a, b, grew


def test_diff_names_the_growing_cache(held, tmp_path):
    truth, a, b, grew = _grown(str(held[2].parent / "heap_hold"), 40, 75, tmp_path)
    doc = _json("diff", str(a), str(b))
    s = doc["suspects"][0]
    assert s["holder"] == "global cache" and s["growth_bytes"] == grew
    assert s["path"][0]["type"] == "struct cache" and s["path"][0]["address"] == truth["cache"][0]
    types = {t["type"]: t for t in doc["types"]}
    # 75 new entries: the newest is named `struct entry*` by main's `tail` (a `struct
    # entry **` to its first member), the others `struct entry`; their 75 strings
    # are untyped (a guessed array of `struct entry*` no longer types them: first_member.c)
    assert types["struct entry"]["new_objects"] + types["struct entry*"]["new_objects"] == 75
    assert types["struct entry"]["gone_objects"] == 0 and types["unk200"]["new_objects"] == 75
    assert doc["totals"]["new_objects"] == 150
    holders = {h["holder"]: h for h in doc["holders"]}
    assert holders["global cache"]["growth_bytes"] == grew
    # a diff of two different processes is refused
    r = run_mt("diff", str(a), str(held[2]))
    assert r.returncode != 0 and "different processes" in r.stderr and "Traceback" not in r.stderr


def test_watch_reports_growth_as_it_happens(held):
    exe = str(held[2].parent / "heap_hold")
    p, truth = _start(exe, 10)
    try:
        w = subprocess.Popen([*__import__("conftest").MAPPEDTRACE.split(), "watch", str(p.pid), "--every", "1s",
                              "--count", "2", "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        first = w.stderr.readline()                      # snapshot 0 is taken: now grow
        assert first.startswith("snapshot 0:"), first
        grew = _grow(p, 30)
        out, err = w.communicate(timeout=240)
        err = first + err
        assert w.returncode == 0, err
        docs = [json.loads(x) for x in re.split(r"(?m)^(?=\{$)", out) if x.strip()]
        last = docs[-1]
        assert last["suspects"][0]["holder"] == "global cache"
        assert last["suspects"][0]["growth_bytes"] == grew
        assert "pause" in err and "fork" in err
    finally:
        p.stdin.close()
        p.wait(timeout=60)


# --- SQL and table exports -------------------------------------------------------

def test_query_counts_by_type_as_top_does(held):
    _, truth, core = held
    top = {t["type"]: t for t in _json("top", str(core), "--limit", "100")["types"]}
    q = _json("query", str(core), "SELECT type, count(*) AS n, sum(size) AS bytes, sum(retained) FILTER "
              "(WHERE dominator_object = -1 OR type <> (SELECT type FROM objects o2 WHERE o2.id = "
              "objects.dominator_object)) AS ret FROM objects WHERE reachable GROUP BY type")
    assert q["columns"] == ["type", "n", "bytes", "ret"]
    got = {r[0]: r for r in q["rows"]}
    assert set(got) == set(top)
    for t, row in top.items():
        assert got[t][1] == row["objects"] and got[t][2] == row["shallow_bytes"], t
    q = _json("query", str(core), "SELECT retained FROM roots WHERE holder = 'global cache'")
    assert q["rows"] == [[truth["cache"][1]]]


def test_query_errors_are_the_engines(held):
    _, _, core = held
    r = run_mt("query", str(core), "SELEKT * FROM objects")
    assert r.returncode == 2 and r.stderr.startswith("mappedtrace: error: query: ") and "Traceback" not in r.stderr
    r = run_mt("query", str(core), "SELECT * FROM no_such_table")
    assert r.returncode == 2 and "no_such_table" in r.stderr


@pytest.mark.parametrize("suffix", [".parquet", ".duckdb", ".db"])
def test_graph_exports_tables(held, tmp_path, suffix):
    import os
    import stat

    import duckdb
    _, truth, core = held
    out = tmp_path / f"heap{suffix}"
    r = run_mt("graph", str(core), "-o", str(out))
    assert r.returncode == 0, r.stderr
    n = _json("query", str(core), "SELECT count(*) FROM objects")["rows"][0][0]
    if suffix == ".parquet":
        assert sorted(os.listdir(out)) == sorted(f"{t}.parquet" for t in
                                                 ("objects", "edges", "roots", "root_edges", "types", "fields",
                                                  "members"))
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
        f = out / "objects.parquet"
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        got = duckdb.connect().execute(f"SELECT count(*), max(retained) FROM '{f}'").fetchone()
    elif suffix == ".duckdb":
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        con = duckdb.connect(str(out), read_only=True)
        got = con.execute("SELECT count(*), max(retained) FROM objects").fetchone()
    else:
        import sqlite3
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        got = sqlite3.connect(str(out)).execute("SELECT count(*), max(retained) FROM objects").fetchone()
    assert got[0] == n and got[1] >= truth["cache"][1]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".mt-")]


# --- the heap viewer, in a real browser ------------------------------------------

def _chromium(url: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    from conftest import need
    need("chromium")
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                           "--window-size=1200,900", *extra, url],
                          capture_output=True, text=True, timeout=120)


def test_view_page_in_chromium(held, tmp_path):
    import os
    import stat
    _, truth, core = held
    page = tmp_path / "heap.html"
    r = run_mt("view", str(core), "-o", str(page))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(page).st_mode) == 0o600
    url = f"file://{page}#select={truth['cache'][0]:#x}"
    dom = _chromium(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-ready="1"' in html                          # the script ran to its end
    # the icicle has the global and the cache struct; the selected panel shows its exact path
    assert re.search(r'class="cell root"[^>]*>global cache ', html)
    assert re.search(r'class="cell object sel"[^>]*>struct cache ', html)
    sel = html[html.index('id="selected"'):]
    assert "path 1 (exact): global cache" in sel and f"struct cache at {truth['cache'][0]:#x}" in sel
    assert "<td>struct entry</td><td>120</td>" in html        # the type histogram
    shot = tmp_path / "shot.png"
    r = _chromium(f"file://{page}", tmp_path, f"--screenshot={shot}")
    assert r.returncode == 0 and shot.stat().st_size > 20_000    # a rendered page, not a blank one


def test_view_of_two_snapshots_shows_growth(held, tmp_path):
    _, a, b, _ = _grown(str(held[2].parent / "heap_hold"), 20, 40, tmp_path)
    page = tmp_path / "diff.html"
    r = run_mt("view", str(a), str(b), "-o", str(page))
    assert r.returncode == 0, r.stderr
    html = _chromium(f"file://{page}", tmp_path, "--dump-dom").stdout
    assert "suspect 1: global cache retains +" in html
    # 20 → 60 entries; the newest may be named `struct entry*` by `tail` (test above)
    def row(t: str) -> tuple[int, int]:
        m = re.search(rf"<td>{re.escape(t)}</td><td>(\d+) → (\d+)</td>", html)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    e, ep = row("struct entry"), row("struct entry*")
    assert (e[0] + ep[0], e[1] + ep[1]) == (20, 60) and e[1] >= 59, (e, ep)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4 * n),
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_c_dominators_match_igraph(case):
    """The compiled SNCA kernel against igraph's Lengauer-Tarjan (the oracle),
    deferred edges included, on random graphs with exact and conservative roots."""
    from mappedtrace.analyses import dominators as D
    from mappedtrace._markkernel import load
    if load() is None:
        pytest.skip("no C compiler: the C kernel is not built here")
    n, edges, exact = case
    nr = max(1, n // 4)
    dg = D.HeapDigraph(n, nr,
                       np.array([n + nr] * nr + [n + (a % nr) for a, _ in edges[:nr]] + [a for a, _ in edges[nr:]], np.int64),
                       np.array(list(range(n, n + nr)) + [b for _, b in edges[:nr]] + [b for _, b in edges[nr:]], np.int64),
                       np.ones(nr + len(edges), bool), len(edges), 0)
    er = np.flatnonzero(exact[:nr]).astype(np.int64) + n
    a = D._idom_c(load(), dg, er)
    da = dg.deferred_edges
    b = D._idom_igraph(dg, er)
    assert a.tolist() == b.tolist() and dg.deferred_edges == da
