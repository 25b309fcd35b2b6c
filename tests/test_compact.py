"""Compaction (issue #17): ``mappedtrace compact PID`` against the program's own ``malloc_trim``.

The sample (samples/frag_heap.c) frees a random 85 % of its objects, keeps
linked structures among the survivors and checks them itself: "check" prints a
digest that depends only on its arguments, "churn K" frees and allocates more
and prints the next digest.  A process whose heap was compacted must print
the digests of a process left alone, and go on allocating and freeing.  What
the pass released is read from /proc by the test itself (RssAnon), not only
from the tool's report.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import SAMPLES, build_sample, run_mt
from test_relocate import _graph_signature, _state, _stopped

N, KEEP, SEED = 12000, 15, 7


def build_frag(tmp_path_factory, folder: str) -> Path:
    """samples/frag_heap.c built with the maps, in a fresh folder."""
    out = tmp_path_factory.mktemp(folder) / "frag_heap"
    build_sample(SAMPLES / "frag_heap.c", "-O2", out)
    return out


def frag_reference(frag: Path, n: int, keep: int, seed: int) -> list[str]:
    """The digests of a run left alone: after "check" and after "churn 2000"."""
    r = subprocess.run([str(frag), str(n), str(keep), str(seed)], input="check\nchurn 2000\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].endswith("mismatches 0") and lines[2].endswith("mismatches 0")
    return lines[1:3]


def assert_same_graph_after(pid: int, res) -> None:
    """The stopped process's heap graph now is the one the pass analysed, every moved object
    renamed to its new address: same objects, same edges."""
    from mappedtrace.session import analyse, preload_maps
    from mappedtrace.target import settle
    from mappedtrace.target.live import LiveTarget
    before = res.analysis.graph
    with LiveTarget(pid) as live:
        settle.settle_threads(live, None, max_steps=0)
        after = analyse(live, leaks=False, maps_cache=preload_maps(pid)).graph
    ob, eb = _graph_signature(before, {o: n for o, n, _ in res.moved})
    oa, ea = _graph_signature(after, {})
    assert len(before) == len(after)
    assert ob == oa and eb == ea


@pytest.fixture(scope="module")
def frag(tmp_path_factory, plugin) -> Path:
    return build_frag(tmp_path_factory, "compact")


@pytest.fixture(scope="module")
def reference(frag) -> list[str]:
    return frag_reference(frag, N, KEEP, SEED)


class Frag:
    def __init__(self, exe: Path, threads: int = 1):
        self.p = subprocess.Popen([str(exe), str(N), str(KEEP), str(SEED), str(threads)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready"), line
        self.pid = self.p.pid

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def finish(self) -> tuple[int, str]:
        out, err = self.p.communicate("", timeout=120)
        assert "unknown command" not in err
        return self.p.returncode, out

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.p.kill()
            self.p.wait()


def _rss_anon(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def _compact(pid: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_mt("compact", str(pid), "--json", *extra, env=env, timeout=600)


def _runs_on(w: Frag, reference: list[str]) -> None:
    """The process's data is intact, and it keeps allocating and freeing correctly."""
    assert w.ask("check") == reference[0]
    assert w.ask("churn 2000") == reference[1]
    rc, out = w.finish()
    assert rc == 0 and out.strip() == f"final {reference[1]}"


def test_compact_releases_more_than_malloc_trim(frag, reference):
    """Two processes with the same heap: malloc_trim(0) alone in one, a compaction in the other."""
    base, comp = Frag(frag), Frag(frag)
    try:
        rss0 = {w.pid: _rss_anon(w.pid) for w in (base, comp)}
        rb = _compact(base.pid, "--trim-only")
        assert rb.returncode == 0, rb.stderr
        rc = _compact(comp.pid)
        assert rc.returncode == 0, rc.stderr
        db, dc = json.loads(rb.stdout), json.loads(rc.stdout)
        trim_pages = db["compaction"]["released"]["heap_resident_pages"]
        comp_pages = dc["compaction"]["released"]["heap_resident_pages"]
        src = dc["compaction"]["source_pages"]
        print(f"malloc_trim released {trim_pages} heap pages, compact {comp_pages} "
              f"(of {src} sparse pages; {dc['summary']['moved_objects']} objects moved)")
        assert db["moved"] == [] and db["compaction"]["mode"] == "trim-only"
        assert dc["summary"]["moved_objects"] > 0.9 * dc["summary"]["movable_objects"]
        # the pages go back to the system: the kernel's own count says so too
        released_b = rss0[base.pid] - _rss_anon(base.pid)
        released_c = rss0[comp.pid] - _rss_anon(comp.pid)
        assert comp_pages > 0.5 * src and comp_pages > 10 * max(trim_pages, 1)
        assert released_c > 0.5 * src * 4096 and released_c > 10 * max(released_b, 4096)
        # the heap's own count agrees: its free whole pages are no longer resident
        after = dc["compaction"]["after"]
        assert after["free_whole_pages"] >= 0.5 * src and after["free_whole_pages_resident"] == 0
        assert _state(comp.pid) != "T"
        _runs_on(base, reference)
        _runs_on(comp, reference)
    finally:
        base.kill()
        comp.kill()


def test_compact_empties_a_thread_arena(frag, reference):
    """Objects allocated by threads (now gone) in their own arena: moved into the
    borrowed thread's arena, and the thread arena's pages given back."""
    w = Frag(frag, threads=3)
    try:
        r = _compact(w.pid)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        c = d["compaction"]
        assert c["plugs"]["arena"] == "main"
        assert d["summary"]["moved_objects"] > 0.9 * d["summary"]["movable_objects"]
        moved_from = {int(m["from"], 16) for m in d["moved"]}
        # the thread arena's objects are far from the brk heap (an mmapped 64 MiB segment)
        brk = [line for line in open(f"/proc/{w.pid}/maps") if "[heap]" in line]
        lo, hi = (int(x, 16) for x in brk[0].split()[0].split("-"))
        assert any(not lo <= a < hi for a in moved_from), "nothing came out of a thread arena"
        assert c["released"]["heap_resident_pages"] > 0.5 * c["source_pages"]
        _runs_on(w, reference)          # the same digests as the single-threaded reference
    finally:
        w.kill()


def _writable_bytes(pid: int) -> dict[tuple[int, int], bytes]:
    """Every private writable mapping's bytes (heap, stacks, libc's data: where mp_ and the arenas are)."""
    out = {}
    with open(f"/proc/{pid}/maps") as m, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in m:
            parts = line.split()
            if parts[1][:2] != "rw" or parts[1][3] != "p" or (len(parts) > 5 and parts[5] == "[vvar]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            mem.seek(lo)
            out[(lo, hi)] = mem.read(hi - lo)
    return out


def test_compact_dry_run_changes_nothing(frag, reference):
    w = Frag(frag)
    try:
        os.kill(w.pid, signal.SIGSTOP)      # nothing changes it but the tool
        assert _stopped(w.pid)
        before = _writable_bytes(w.pid)
        r = _compact(w.pid, "--dry-run")
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        c = d["compaction"]
        assert d["dry_run"] and d["moved"] == [] and "after" not in c
        assert c["plan"]["objects"] == d["summary"]["moved_objects"] > 0
        assert 0 < c["source_pages"] <= c["pages_in_use"]
        assert _stopped(w.pid), "a process stopped before must stay stopped"
        after = _writable_bytes(w.pid)
        assert before.keys() == after.keys()
        changed = [hex(k[0]) for k in before if before[k] != after[k]]
        assert not changed, f"mappings changed by a dry run: {changed}"
        # the text report says what would happen
        t = run_mt("compact", str(w.pid), "--dry-run", timeout=600)
        assert t.returncode == 0 and "would move" in t.stdout and "free whole pages" in t.stdout
        os.kill(w.pid, signal.SIGCONT)
        _runs_on(w, reference)
    finally:
        w.kill()


def test_compacted_heap_graph_is_isomorphic(frag, reference):
    """The graph after a compaction is the graph before with the moved objects renamed."""
    from mappedtrace.relocate.compact import compact

    w = Frag(frag)
    try:
        os.kill(w.pid, signal.SIGSTOP)
        assert _stopped(w.pid)
        res = compact(w.pid, keep_analysis=True)
        assert len(res.moved) > 1000 and _stopped(w.pid)
        assert_same_graph_after(w.pid, res)
        os.kill(w.pid, signal.SIGCONT)
        _runs_on(w, reference)
    finally:
        w.kill()


def _tcache_bins(pid: int) -> int:
    from mappedtrace.heap.glibc import GlibcHeap
    from mappedtrace.modules import ModuleMap
    from mappedtrace.target.live import LiveTarget
    with LiveTarget(pid) as live:
        return GlibcHeap(live, ModuleMap(live)).mp["tcache_bins"]


def _in_use(pid: int) -> int:
    from mappedtrace.heap.glibc import IN_USE, GlibcHeap
    from mappedtrace.modules import ModuleMap
    from mappedtrace.target.live import LiveTarget
    with LiveTarget(pid) as live:
        return int((GlibcHeap(live, ModuleMap(live)).state == IN_USE).sum())


def _kill_and_recover(w: Frag, k: str, env: dict, jdir: Path, tcache_bins: int, in_use: int,
                      reference: list[str]) -> str:
    r = _compact(w.pid, env={**env, "MAPPEDTRACE_RELOCATE_KILL_AFTER": k})
    assert r.returncode == -signal.SIGKILL, (k, r.stderr)
    assert _stopped(w.pid), f"not stopped after a kill at {k}"
    journal = jdir / f"{w.pid}.journal"
    assert journal.stat().st_mode & 0o777 == 0o600
    rec = run_mt("compact", str(w.pid), "--recover", "--json", env=env, timeout=300)
    assert rec.returncode == 0, rec.stderr
    out = json.loads(rec.stdout)["recovered"]
    assert out["leaked"] == 0 and not out.get("changed"), (k, out)
    assert not journal.exists() and _state(w.pid) != "T"
    assert _tcache_bins(w.pid) == tcache_bins, f"tcache not restored after a kill at {k}"
    # every chunk the pass held (plugs, destinations or old chunks) is free again
    assert _in_use(w.pid) == in_use, f"chunks in use changed after a kill at {k}"
    assert w.ask("check") == reference[0], f"data changed after a kill at {k}"
    return out["action"]


def test_killed_compaction_is_recovered(frag, reference, tmp_path):
    """SIGKILL at steps of every phase (the tcache switched off, the first malloc_trim,
    plugs, destinations, copies and pointers; then, in fresh processes, the frees of
    the old chunks and of the plugs): the process is left stopped; --recover rolls
    back or finishes, frees every chunk the pass held and switches the tcache back on;
    the program's data and allocator stay right."""
    rng = random.Random(int(os.environ.get("MT_SEED", "1717")))
    jdir = tmp_path / "journals"
    env = {"MAPPEDTRACE_RELOCATE_DIR": str(jdir)}
    w = Frag(frag)
    try:
        tcache_bins, in_use = _tcache_bins(w.pid), _in_use(w.pid)
        assert tcache_bins > 0
        # before the commit: each kill is rolled back, so the heap stays fragmented for the next
        for k in ["plug:1", "plug:2", f"plug:{rng.randint(3, 60)}", f"alloc:{rng.randint(1, 100)}",
                  f"write:{rng.randint(1, 300)}"]:
            assert _kill_and_recover(w, k, env, jdir, tcache_bins, in_use, reference) == "rolled back", k
        # a whole pass still works on the process recovered so many times
        r = _compact(w.pid, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["compaction"]["released"]["heap_resident_pages"] > 0
        _runs_on(w, reference)
    finally:
        w.kill()
    # after the commit (a pass finished leaves a compact heap: a fresh process each)
    for k in [f"free:{rng.randint(1, 100)}", f"pfree:{rng.randint(1, 100)}"]:
        w = Frag(frag)
        try:
            assert _kill_and_recover(w, k, env, jdir, tcache_bins, in_use, reference) == "finished", k
            _runs_on(w, reference)
        finally:
            w.kill()


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.mark.parametrize("args, message", [
    (["--max-occupancy", "0"], "--max-occupancy must be in (0, 1]"),
    (["--max-occupancy", "1.5"], "--max-occupancy must be in (0, 1]"),
])
def test_bad_options_are_one_line(args, message, sleeper):
    r = run_mt("compact", str(sleeper), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_gone_pid_is_one_line():
    r = run_mt("compact", "999999999", "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "999999999" in r.stderr
