"""The benchmark umbrella's plumbing (benchmarks/run.py, issue #6) on a tiny subset:
the accuracy section on one corpus program, real builds and real tools, outputs
written into tmp_path (never into benchmarks/)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need

RUN = ROOT / "benchmarks" / "run.py"


def _lsan_works(tmp: Path) -> bool:
    src = tmp / "t.c"
    src.write_text("int main(void){return 0;}\n")
    r = subprocess.run(["clang-22", "-fsanitize=leak", "-o", str(tmp / "t"), str(src)], capture_output=True)
    return r.returncode == 0


@pytest.mark.timeout(200)
def test_umbrella_accuracy_on_one_program(tmp_path: Path) -> None:
    need("clang-22")
    tools = ["mappedtrace"]
    if _lsan_works(tmp_path):
        tools.append("lsan")
    # (Valgrind is left out to keep the test short; the full benchmark runs it)
    out = tmp_path / "out"
    env = dict(os.environ, MT_BENCH_BUILD=str(tmp_path / "build"))
    r = subprocess.run([sys.executable, str(RUN), "--only", "accuracy", "--programs", "dropped_list@-O2",
                        "--tools", ",".join(tools), "--runs", "1", "--out-dir", str(out)],
                       capture_output=True, text=True, timeout=190, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["errors"] == {} and res["quick"] is False
    assert set(res["sections"]) == {"accuracy"}
    cases = res["sections"]["accuracy"]["cases"]
    assert [(c["program"], c["opt"]) for c in cases] == [("dropped_list", "-O2")]
    for c in cases:
        assert set(c["tools"]) == set(tools)
        mt = c["tools"]["mappedtrace"]
        # dropped_list leaks 10 nodes (1 direct + 9 indirect); MappedTrace finds exactly those
        assert (mt["truth"], mt["found"], mt["missed"], mt["false"]) == (10, 10, 0, 0), mt
        for tool in tools:
            s = c["tools"][tool]
            assert s["found"] + s["missed"] == s["truth"] == 10, (tool, s)
    md = (out / "RESULTS.md").read_text()
    assert "| Leak corpus (C, -O0/-O2): true leaks found, false reports | 10/10 found, 0 false |" in md
    assert "| dropped_list | -O2 | 10 | 10/0/0 |" in md
    assert f"* {os.cpu_count()} CPUs (" in md
    # the builds went into the test's own cache (MT_BENCH_BUILD), not into benchmarks/work
    assert list((tmp_path / "build").glob("maps-plugin-*/corpus/dropped_list-O2"))
    png = out / "bench.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_umbrella_rejects_unknown_section(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(RUN), "--only", "bogus", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unknown section 'bogus'" in r.stderr
    assert not (tmp_path / "results.json").exists()


def test_plot_from_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    res = {"date": "d", "quick": True, "machine": {"nproc": 2}, "sections": {
        "snapshot": {"sizes": [{"heap_mib": m, "methods": {"fork": {"pause_ms_median": m / 10},
                                                           "gcore": {"pause_ms_median": m * 10}}}
                               for m in (64, 256)]},
        "trace": {"sizes": [{"heap_mib": 16, "e2e": {"leaks_s_median": 3.0}}]}}}
    src = tmp_path / "results.json"
    src.write_text(json.dumps(res))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot.py"), str(src), str(tmp_path / "p.png")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.timeout(200)
def test_overhead_benchmark_on_one_workload(tmp_path: Path) -> None:
    """benchmarks/overhead/run.py builds the three variants, runs them and writes
    the figures (one round of list_walk; instruction counts left out)."""
    need("clang-22")
    js = tmp_path / "overhead.json"
    env = dict(os.environ, MT_BENCH_BUILD=str(tmp_path / "build"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "overhead" / "run.py"), "--runs", "1",
                        "--only", "list_walk", "--json", str(js)],
                       capture_output=True, text=True, timeout=190, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {row["variant"]: row for row in json.loads(js.read_text())["rows"]}
    assert set(rows) == {"plain", "nopie", "maps"}
    assert rows["maps"]["map_bytes"] > 0 and rows["plain"]["map_bytes"] == rows["nopie"]["map_bytes"] == 0
    assert all(len(row["cpu_s"]) == 1 and row["cpu_s"][0] > 0 for row in rows.values())
    assert "| list_walk `200` | maps |" in r.stdout


def test_overhead_median_interval() -> None:
    """The overhead script's confidence interval of a median: the order
    statistics that a binomial count gives (n=21 -> ranks 6 and 16; n=11 -> 2
    and 10), and a coverage of at least 95 % by simulation."""
    import importlib.util
    import random
    spec = importlib.util.spec_from_file_location("overhead_run", ROOT / "benchmarks" / "overhead" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.median_ci([float(i) for i in range(1, 22)]) == (6.0, 16.0)
    assert mod.median_ci([float(i) for i in range(1, 12)]) == (2.0, 10.0)
    assert mod.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
    rng = random.Random(7)
    hits = 0
    for _ in range(2000):
        lo, hi = mod.median_ci([rng.expovariate(1.0) for _ in range(15)])
        hits += lo <= 0.6931471805599453 <= hi      # the median of Exp(1) is ln 2
    assert hits / 2000 >= 0.94


def test_soundness_verdicts_explained_only_by_the_documented_count() -> None:
    """benchmarks/soundness: a documented disagreement (``Known``) is "explained"
    only when valgrind and LSan agree and MappedTrace differs by exactly the
    documented count; ncompress carries one for every scenario."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "soundness"))
    import debian
    import soundness
    known = debian.PROGRAMS["ncompress"].known
    assert set(known) == {"compress", "decompress", "live-decompress"}
    T = soundness.ToolCount

    def verdict(mt: int, vg: int | None, ls: int | None, k=known["compress"]) -> str:
        c = soundness.Case("ncompress", "compress", known=k)
        c.mt, c.valgrind = T(mt, 0, mt), None if vg is None else T(vg, 0, vg)
        c.lsan = None if ls is None else T(ls, 0, ls)
        return c.verdict()
    assert verdict(1, 0, 0) == "explained"
    assert verdict(1, 0, None) == "explained"           # live: valgrind only
    assert verdict(0, 0, 0) == "agree"
    assert verdict(2, 0, 0) == "DISAGREE"               # one more than documented
    assert verdict(1, 1, 0) == "DISAGREE"               # valgrind and LSan differ
    assert verdict(1, 0, 0, k=None) == "DISAGREE"       # nothing documented
    assert not debian.PROGRAMS["bzip2"].known


def _overhead_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("overhead_run", ROOT / "benchmarks" / "overhead" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(200)
def test_code_growth_accounts_for_every_function(tmp_path: Path) -> None:
    """run.py --sizes-only's per-function code diff (issue #18 item 3): sizes agree
    with ``nm -S``, the pass's varargs thunks are counted apart (samples/leaky.c
    calls printf, a varargs function, with pointers live), and the functions it
    name add up to the maps build's function bytes, within its ``.text``."""
    need("clang-22", "nm")
    from conftest import build_sample, require_plugin
    require_plugin()
    mod = _overhead_module()
    src = ROOT / "samples" / "leaky.c"
    plain, maps = tmp_path / "plain", tmp_path / "maps"
    subprocess.run(["clang-22", "-O2", "-g", "-o", str(plain), str(src)], check=True, timeout=120)
    build_sample(src, "-O2", maps)
    nm = subprocess.run(["nm", "-S", "--defined-only", str(maps)], capture_output=True, text=True, check=True).stdout
    want: dict[str, int] = {}
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tT":
            want[f[3]] = want.get(f[3], 0) + int(f[1], 16)
    got = mod.function_sizes(maps)
    assert got and all(got[name] == want[name] for name in got), (got, want)
    g = mod.code_growth(plain, maps)
    thunks = [n for n in want if n.startswith(mod.THUNK_PREFIX)]
    assert g["thunks"] == len(thunks) > 0
    assert g["thunk_bytes"] == sum(want[n] for n in thunks)
    text = mod.sizes(maps)["text"]
    named = g["common_maps"] + g["only_maps"] + g["thunk_bytes"]
    assert named == sum(got.values()) <= text
    assert any(r["function"] == "main" for r in g["grew"]) or len(g["grew"]) == 8


def test_sizes_only_names_the_extra_programs() -> None:
    """--sizes-only measures Redis, SQLite, Lua and jq beside the Debian suite; an
    unknown name is a one-line usage error listing them."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "overhead" / "run.py"), "--sizes-only",
                        "--only", "nosuch"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert all(n in r.stderr for n in ("redis", "sqlite", "lua", "jq", "gawk")) and "nosuch" in r.stderr
