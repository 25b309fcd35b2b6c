"""Batched relocation (issue #17): the allocator calls of a pass run in batches, one
stop-resume of the borrowed thread per batch (mappedtrace/relocate/inject.py).

On samples/frag_heap.c (thousands of survivors of a fragmented heap, linked to each
other, checked by the program itself): a pass over every movable object leaves a
heap graph isomorphic to the one before, runs in a handful of batches, leaves no
mapping of the tracer's behind, and the program's digests and later allocations
stay those of a process left alone.  A relocator SIGKILLed while a batch of
thousands of calls runs in the target leaves the process stopped, and
``--recover`` leaves it consistent (no chunk leaked or freed twice).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import SAMPLES, build_sample, run_mt
from test_compact import Frag, _in_use, assert_same_graph_after, build_frag, frag_reference
from test_relocate import _state, _stopped

N, KEEP, SEED = 30000, 20, 5


@pytest.fixture(scope="module")
def frag(tmp_path_factory, plugin) -> Path:
    return build_frag(tmp_path_factory, "batch")


@pytest.fixture(scope="module")
def reference(frag) -> list[str]:
    return frag_reference(frag, N, KEEP, SEED)


def _start(frag: Path) -> Frag:
    w = Frag.__new__(Frag)
    w.p = subprocess.Popen([str(frag), str(N), str(KEEP), str(SEED)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = w.p.stdout.readline()
    assert line.startswith("ready"), line
    w.pid = w.p.pid
    return w


def _runs_on(w: Frag, reference: list[str]) -> None:
    assert w.ask("check") == reference[0]
    assert w.ask("churn 2000") == reference[1]
    rc, out = w.finish()
    assert rc == 0 and out.strip() == f"final {reference[1]}"


def _exec_maps(pid: int) -> list[str]:
    """The executable mappings (the batch loop's page would be one)."""
    return [line.split()[0] + " " + (line.split()[5] if len(line.split()) > 5 else "")
            for line in open(f"/proc/{pid}/maps") if line.split()[1][2] == "x"]


def test_blob_is_the_listed_loop():
    """The loop's bytes are the listing in inject.py's comment (capstone's reading)."""
    import capstone         # a dependency of the project (settling threads)
    from mappedtrace.relocate import inject
    from mappedtrace.relocate.inject import BLOB
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    ins = [(i.mnemonic, i.op_str) for i in md.disasm(BLOB, 0)]
    assert sum(len(i.bytes) for i in md.disasm(BLOB, 0)) == len(BLOB)
    assert [m for m, _ in ins] == ["sub", "mov", "mov", "cmp", "jae", "imul", "lea", "mov", "mov", "mov",
                                   "call", "mov", "inc", "mov", "jmp", "add", "ret"]
    assert ins[10] == ("call", "qword ptr [r13]")
    assert ins[11] == ("mov", "qword ptr [r13 + 0x20], rax")        # ret, OP_RET
    assert ins[13] == ("mov", "qword ptr [rbx + 8], r12")           # done, after the call
    assert ins[5] == ("imul", "r13, r12, 0x30")                      # OP.size
    head = [i.address for i in md.disasm(BLOB, 0)][3]
    assert head == inject.BLOB_LOOP and ins[3] == ("cmp", "r12, qword ptr [rbx]")


def test_batched_pass_over_thousands_is_isomorphic(frag, reference, monkeypatch):
    """Every movable object of a 6 000-survivor heap moved in batches of at most 1 000
    calls: the graph after is the graph before renamed; no mapping left behind."""
    from mappedtrace.relocate import inject
    from mappedtrace.relocate.mover import relocate

    monkeypatch.setattr(inject, "BATCH_MAX", 1000)
    w = _start(frag)
    try:
        os.kill(w.pid, signal.SIGSTOP)      # stopped before and after: nothing changes but the move
        assert _stopped(w.pid)
        exe_before = _exec_maps(w.pid)
        res = relocate(w.pid, "all", keep_analysis=True)
        moved = len(res.moved)
        assert moved > 4000, moved
        assert moved >= 0.95 * res.plan.figures()["movable_objects"]
        # the destinations in batches: at most a few per 1 000 calls (refusals, retries,
        # frees of the old chunks), never one per object
        assert res.batches <= 3 * (moved // 1000 + 1) + 6, res.batches
        assert _stopped(w.pid)
        assert _exec_maps(w.pid) == exe_before, "a mapping of the tracer's was left"
        assert_same_graph_after(w.pid, res)
        os.kill(w.pid, signal.SIGCONT)
        _runs_on(w, reference)
    finally:
        w.kill()


@pytest.mark.parametrize("kill, action", [("alloc:300", "rolled back"), ("free:2000", "finished")])
def test_relocator_killed_inside_a_batch(frag, reference, tmp_path, kill, action):
    """SIGKILL with the borrowed thread inside a batch of thousands of posix_memalign
    (or free) calls: the process is left stopped; --recover lets the batch finish,
    reads from the table what it did, and rolls the pass back (or finishes it)."""
    jdir = tmp_path / "journals"
    env = {"MAPPEDTRACE_RELOCATE_DIR": str(jdir)}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"select": "all"}))
    w = _start(frag)
    try:
        in_use = _in_use(w.pid)
        exe_before = _exec_maps(w.pid)
        r = run_mt("relocate", str(w.pid), "--plan", str(plan), "--json", timeout=300,
                   env={**env, "MAPPEDTRACE_RELOCATE_KILL_AFTER": kill})
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert _stopped(w.pid), "not stopped after the kill"
        assert (jdir / f"{w.pid}.journal").exists()
        rec = run_mt("relocate", str(w.pid), "--recover", "--json", env=env, timeout=300)
        assert rec.returncode == 0, rec.stderr
        out = json.loads(rec.stdout)["recovered"]
        print(kill, out)
        assert out["action"] == action and out["leaked"] == 0 and not out.get("changed")
        b = out["batch"]
        assert b["calls"] > 2000
        # the relocator died with the thread inside the batch, between two calls
        assert b["in_flight"] and b["done_when_found"] == int(kill.split(":")[1]) - 1
        assert _state(w.pid) != "T" and not (jdir / f"{w.pid}.journal").exists()
        assert _exec_maps(w.pid) == exe_before, "the batch mapping was left"
        # every chunk the pass allocated is free again (rolled back), or every old one (finished)
        assert _in_use(w.pid) == in_use
        _runs_on(w, reference)
    finally:
        w.kill()


def test_process_under_seccomp_is_refused(tmp_path, plugin):
    """A seccomp filter may kill the process for the batch mapping's mmap or mprotect:
    the relocator refuses in one line before anything is written, and the program
    runs on untouched."""
    exe = tmp_path / "seccomp_list"
    build_sample(Path(__file__).resolve().parent / "relocate" / "seccomp_list.c", "-O1", exe)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        plan = tmp_path / "plan.json"
        plan.write_text('{"select": "all"}')
        exe_before = _exec_maps(p.pid)
        r = run_mt("relocate", str(p.pid), "--plan", str(plan), timeout=120)
        assert r.returncode == 2 and "seccomp" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2
        assert _state(p.pid) != "T"
        assert _exec_maps(p.pid) == exe_before
        out, _ = p.communicate("", timeout=60)
        assert out.split() == ["ok", str(sum(range(1000)))] and p.returncode == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
