"""Relocation (issue #17): objects moved in a running process, every exact pointer rewritten.

The workload (samples/relocate_workload.c) checks its own linked list, tree
and hash table every round and prints a digest per thread that depends only
on its PRNG: a run whose objects were moved must print the same digests as
a run without relocation, and no MISMATCH.  The relocator is also SIGKILLed
at random steps (``MAPPEDTRACE_RELOCATE_KILL_AFTER``): the process must be
left stopped, and ``relocate --recover`` must leave it consistent.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SAMPLES, build_sample, run_mt

THREADS, ROUNDS = 3, 300


@pytest.fixture(scope="module")
def workload(tmp_path_factory, plugin) -> Path:
    out = tmp_path_factory.mktemp("relocate") / "relocate_workload"
    build_sample(SAMPLES / "relocate_workload.c", "-O2", out)
    return out


def _digests(text: str) -> dict[str, str]:
    return dict(line.split()[1:3] for line in text.splitlines() if line.startswith("result "))


def _reference(exe: Path, rounds: int) -> dict[str, str]:
    """The digests of a run without relocation."""
    r = subprocess.run([str(exe), str(THREADS), str(rounds), "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "mismatches 0" in r.stdout, r.stdout + r.stderr
    d = _digests(r.stdout)
    assert len(d) == THREADS
    return d


@pytest.fixture(scope="module")
def reference(workload) -> dict[str, str]:
    return _reference(workload, ROUNDS)


class Workload:
    """A running workload that finishes (checks, digests) when told."""

    def __init__(self, exe: Path, rounds: int = ROUNDS, sleep_us: int = 1000):
        self.p = subprocess.Popen([str(exe), str(THREADS), str(rounds), str(sleep_us), "wait"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready"), line
        self.pid = self.p.pid

    def finish(self) -> tuple[int, str, str]:
        out, err = self.p.communicate(input="", timeout=120)
        return self.p.returncode, out, err

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.p.kill()
            self.p.wait()


def _state(pid: int) -> str:
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


def _stopped(pid: int, wait: float = 2.0) -> bool:
    """Whether ``pid`` is (or within ``wait`` s settles) in group-stop: threads
    detached while the group stop is in effect pass through R to T."""
    end = time.monotonic() + wait
    while True:
        if all(_state_t(pid, t) == "T" for t in os.listdir(f"/proc/{pid}/task")):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


def _state_t(pid: int, tid: str) -> str:
    try:
        stat = open(f"/proc/{pid}/task/{tid}/stat").read()
    except FileNotFoundError:
        return "T"
    return stat[stat.rindex(")") + 2]


def _plan(tmp_path: Path, doc: dict) -> str:
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(doc))
    return str(p)


def _relocate(pid: int, plan: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_mt("relocate", str(pid), "--plan", plan, "--json", *extra, env=env, timeout=300)


def test_dry_run_moves_nothing_and_explains_pins(workload, tmp_path, reference):
    w = Workload(workload)
    try:
        r = _relocate(w.pid, _plan(tmp_path, {"select": "all"}), "--dry-run")
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        s = d["summary"]
        assert d["dry_run"] and d["moved"] == []
        assert s["movable_objects"] + s["pinned_objects"] == s["objects"] > 0
        assert s["moved_objects"] == s["movable_objects"] > 0
        assert sum(c["objects"] for c in s["pinned_by_reason"].values()) == s["pinned_objects"]
        assert len(d["pinned"]) == s["pinned_objects"]
        # every rewrite is an exact word; conservative ones pinned their targets
        assert s["rewrites"] >= s["moved_objects"]
        assert _state(w.pid) != "T"
        rc, out, err = w.finish()
        assert rc == 0 and "MISMATCH" not in err and _digests(out) == reference
    finally:
        w.kill()


@pytest.mark.parametrize("rounds, sleep_us", [(ROUNDS, 2000), (5000, 0)], ids=["sleepy", "busy"])
def test_passes_while_running_give_identical_results(workload, tmp_path, rounds, sleep_us):
    """Passes while the threads work: mostly asleep between rounds, or computing
    (stopped anywhere: in instrumented code, in malloc, in libc)."""
    reference = _reference(workload, rounds)
    w = Workload(workload, rounds=rounds, sleep_us=sleep_us)
    try:
        plan = _plan(tmp_path, {"select": "all", "limit": 400})
        moved = 0
        for _ in range(3):
            r = _relocate(w.pid, plan)
            assert r.returncode == 0, r.stderr
            d = json.loads(r.stdout)
            assert len(d["moved"]) == d["summary"]["moved_objects"]
            olds = {int(m["from"], 16) for m in d["moved"]}
            news = {int(m["to"], 16) for m in d["moved"]}
            assert not olds & news
            moved += len(d["moved"])
            assert _state(w.pid) != "T"
        assert moved > 0
        rc, out, err = w.finish()
        assert "MISMATCH" not in err, err[:2000]
        assert rc == 0 and _digests(out) == reference
    finally:
        w.kill()


def _graph_signature(g, rename: dict[int, int]) -> tuple[set, set]:
    """Objects {address: (size, type)} and edges (src, src_off, dst, dst_off, exact) with
    moved addresses renamed to their new ones."""
    from mappedtrace.graph import EDGE_EXACT
    addrs = [rename.get(int(a), int(a)) for a in g.addresses]
    objs = {a: (int(s), int(t)) for a, s, t in zip(addrs, g.sizes, g.type_ids)}
    e = g.edges
    edges = {(addrs[int(x["src"])], int(x["src_off"]), addrs[int(x["dst"])], int(x["dst_off"]),
              bool(int(x["flags"]) & EDGE_EXACT)) for x in e}
    return objs, edges


def test_heap_graph_isomorphic_after_move(workload, tmp_path, reference):
    """Differential check on a stopped process: the graph after the pass is the
    graph before with the moved objects' addresses replaced."""
    from mappedtrace.relocate.mover import relocate
    from mappedtrace.session import analyse, preload_maps
    from mappedtrace.target.live import LiveTarget
    from mappedtrace.target import settle

    w = Workload(workload, rounds=50, sleep_us=0)
    try:
        time.sleep(0.3)                     # the rounds are done: the threads idle
        os.kill(w.pid, signal.SIGSTOP)      # stopped before and after: nothing changes but the move
        assert _stopped(w.pid)
        res = relocate(w.pid, "all", limit=300, keep_analysis=True)
        assert res.moved and _stopped(w.pid)
        before = res.analysis.graph
        cache = preload_maps(w.pid)
        with LiveTarget(w.pid) as live:
            settle.settle_threads(live, None, max_steps=0)
            after = analyse(live, leaks=False, maps_cache=cache).graph
        rename = {o: n for o, n, _ in res.moved}
        ob, eb = _graph_signature(before, rename)
        oa, ea = _graph_signature(after, {})
        assert len(before) == len(after)
        assert ob == oa             # same objects: usable sizes and types kept
        assert eb == ea
        os.kill(w.pid, signal.SIGCONT)
        rc, out, err = w.finish()
        assert rc == 0 and "MISMATCH" not in err and _digests(out) == _reference(workload, 50)
    finally:
        w.kill()


def test_killed_relocator_is_recovered(workload, tmp_path, reference):
    """SIGKILL at random steps (allocator calls, copies, words, frees): the process is
    left in group-stop; --recover rolls back or finishes; the results stay exact."""
    rng = random.Random(int(os.environ.get("MT_SEED", "1717")))
    limit = 30
    plan = _plan(tmp_path, {"select": "all", "limit": limit})
    w = Workload(workload, rounds=ROUNDS, sleep_us=2000)
    try:
        # steps of a pass: >= limit allocator calls, limit copies and >= limit words, limit frees
        points = [f"alloc:{rng.randint(1, limit)}", f"write:{rng.randint(1, limit)}",
                  f"write:{rng.randint(limit + 1, 2 * limit)}", f"free:{rng.randint(1, limit)}",
                  str(rng.randint(1, 3 * limit))]
        actions = set()
        jdir = tmp_path / "journals"
        env = {"MAPPEDTRACE_RELOCATE_DIR": str(jdir)}
        for k in points:
            r = _relocate(w.pid, plan, env={**env, "MAPPEDTRACE_RELOCATE_KILL_AFTER": str(k)})
            if r.returncode == 0:
                continue            # the pass had fewer steps than k
            assert r.returncode == -signal.SIGKILL, r.stderr
            assert _stopped(w.pid), f"not stopped after a kill at step {k}"
            journal = jdir / f"{w.pid}.journal"
            assert journal.stat().st_mode & 0o777 == 0o600
            rec = run_mt("relocate", str(w.pid), "--recover", "--json", timeout=120, env=env)
            assert rec.returncode == 0, rec.stderr
            out = json.loads(rec.stdout)["recovered"]
            actions.add(out["action"])
            assert _state(w.pid) != "T" and not journal.exists()
        assert actions == {"rolled back", "finished"}
        rc, out, err = w.finish()
        assert "MISMATCH" not in err, err[:2000]
        assert rc == 0 and _digests(out) == reference
    finally:
        w.kill()


@pytest.fixture
def sleeper():
    """A process to name as the target of commands that must refuse before touching it."""
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.mark.parametrize("doc, message", [
    ("not json", "not JSON"),
    ('{"select": "cold"}', "unknown selection"),
    ('{"objects": ["zz"]}', "is not an address"),
    ('{"select": "all", "limit": -1}', "limit must be"),
    ('{"types": []}', "types must be"),
])
def test_bad_plan_is_one_line(tmp_path, doc, message, sleeper):
    p = tmp_path / "plan.json"
    p.write_text(doc)
    r = run_mt("relocate", str(sleeper), "--plan", str(p), "--dry-run")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_fifo_plan_is_refused(tmp_path, sleeper):
    f = tmp_path / "plan.fifo"
    os.mkfifo(f)
    r = run_mt("relocate", str(sleeper), "--plan", str(f), "--dry-run", timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_select_by_type(workload, tmp_path, reference):
    w = Workload(workload)
    try:
        r = _relocate(w.pid, _plan(tmp_path, {"types": ["struct tnode"]}), "--dry-run")
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert 0 < d["summary"]["moved_objects"] <= d["summary"]["selected"]
        r = _relocate(w.pid, _plan(tmp_path, {"types": ["struct tnode"], "limit": 50}))
        d = json.loads(r.stdout)
        assert len(d["moved"]) == 50 and all(m["size"] == 40 for m in d["moved"])   # sizeof(struct tnode) + slack
        rc, out, err = w.finish()
        assert rc == 0 and "MISMATCH" not in err and _digests(out) == reference
    finally:
        w.kill()


def test_gone_pid_is_one_line(tmp_path):
    r = run_mt("relocate", "999999999", "--plan", _plan(tmp_path, {"select": "all"}))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "999999999" in r.stderr


CORPUS = Path(__file__).resolve().parent / "leak_corpus"
SYS_WRITE = 1


def _start_stopped_at_first_write(exe: Path) -> subprocess.Popen:
    """Start ``exe`` and leave it in group-stop at its first write(2) (PTRACE_TRACEME,
    syscall stops, then SIGSTOP and detach: the write completes, then the process stops)."""
    import ctypes
    from mappedtrace.target import _kernel as k
    from mappedtrace.target.base import ThreadState
    libc = ctypes.CDLL(None, use_errno=True)
    p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: libc.ptrace(0, 0, None, None))      # PTRACE_TRACEME
    os.waitpid(p.pid, 0)                    # the exec's SIGTRAP
    for _ in range(100000):
        k.ptrace(k.PTRACE_SYSCALL, p.pid, 0, 0)
        _, st = os.waitpid(p.pid, 0)
        assert os.WIFSTOPPED(st), f"{exe.name} ended before writing anything"
        if ThreadState.unpack_regs(k.get_regs(p.pid))["orig_rax"] == SYS_WRITE:
            break
    os.kill(p.pid, signal.SIGSTOP)
    k.ptrace(k.PTRACE_DETACH, p.pid, 0, 0)
    assert _stopped(p.pid, 5.0)
    return p


_HEX = __import__("re").compile(r"0x[0-9a-f]+")


@pytest.mark.parametrize("name", sorted(p.stem for p in CORPUS.glob("*.c")))
def test_corpus_runs_on_after_its_objects_moved(name, tmp_path, plugin):
    """Each C leak-corpus program, stopped at its first write, has every movable object
    moved once, then runs to completion with the output of an unrelocated run
    (addresses of kept objects, printed after the move, aside)."""
    exe = tmp_path / name
    r = subprocess.run([str(Path(os.sys.executable).parent / "mappedtrace"), "cc", "-O1", "-pthread",
                        f"-I{CORPUS}", "-o", str(exe), str(CORPUS / f"{name}.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ref = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    p = _start_stopped_at_first_write(exe)
    try:
        rr = _relocate(p.pid, _plan(tmp_path, {"select": "all"}))
        assert rr.returncode == 0, rr.stderr
        d = json.loads(rr.stdout)
        assert _stopped(p.pid), "a process stopped before the pass must stay stopped"
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == ref.returncode
    assert out == ref.stdout
    norm = lambda s: _HEX.sub("ADDR", s)
    assert norm(err) == norm(ref.stderr)
    print(name, "moved", len(d["moved"]), "of", d["summary"]["objects"])


def test_object_with_a_pointer_past_its_end_is_pinned(tmp_path, plugin):
    exe = tmp_path / "end_pointer"
    build_sample(Path(__file__).resolve().parent / "relocate" / "end_pointer.c", "-O1", exe)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _, begin, span = p.stdout.readline().split()
        r = _relocate(p.pid, _plan(tmp_path, {"select": "all"}))
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        pins = {int(x["address"], 16): x["reason"] for x in d["pinned"]}
        assert "end address" in pins.get(int(begin, 16), ""), pins
        assert int(span, 16) in {int(m["from"], 16) for m in d["moved"]}
        out, _ = p.communicate("", timeout=60)
        assert out.split() == ["24", "0"] and p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_object_the_kernel_points_to_is_pinned(tmp_path, plugin):
    """epoll keeps data.ptr in the kernel (/proc/PID/fdinfo shows it): never moved."""
    exe = tmp_path / "epoll_conn"
    build_sample(Path(__file__).resolve().parent / "relocate" / "epoll_conn.c", "-O1", exe)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        conn = int(p.stdout.readline().split()[1], 16)
        r = _relocate(p.pid, _plan(tmp_path, {"select": "all"}))
        assert r.returncode == 0, r.stderr
        pins = {int(x["address"], 16): x["reason"] for x in json.loads(r.stdout)["pinned"]}
        assert "kernel" in pins.get(conn, ""), pins
        out, _ = p.communicate("", timeout=60)
        assert out.split() == ["ok"] and p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_shared_journal_directory_is_refused(tmp_path, sleeper):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    r = run_mt("relocate", str(sleeper), "--plan", _plan(tmp_path, {"select": "all"}),
               env={"MAPPEDTRACE_RELOCATE_DIR": str(d)})
    assert r.returncode == 2 and "not private" in r.stderr and "Traceback" not in r.stderr
