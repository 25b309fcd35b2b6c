"""The LLDB backend as a second opinion on the ptrace backend.

A process blocked in a known state (snap_heap waiting on stdin) is captured by
both backends; registers and memory must agree.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import lldb_or_skip
from mappedtrace.target.capture import snapshot_process
from mappedtrace.target.core import open_core
from mappedtrace.target.live import process_state

ROOT = Path(__file__).resolve().parent.parent
MT = str(Path(sys.executable).parent / "mappedtrace")
CC = shutil.which("clang-22") or shutil.which("cc") or shutil.which("gcc")




@pytest.fixture
def blocked(tmp_path):
    if CC is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "snap_heap"
    subprocess.run([CC, "-O2", "-o", str(exe), str(ROOT / "samples" / "snap_heap.c")], check=True)
    p = subprocess.Popen([str(exe), "4", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("ready")
        p.stdin.write("c\n")        # now blocked in read(0) with its stdin buffer allocated
        p.stdin.flush()
        want = p.stdout.readline().strip()
        yield p, want
    finally:
        p.kill()
        p.wait()


def test_lldb_agrees_with_ptrace(blocked):
    lldb_or_skip()
    from mappedtrace.target.lldb_backend import snapshot_lldb
    p, want = blocked
    a = snapshot_lldb(p.pid)
    b = snapshot_process(p.pid, "stop-copy")
    try:
        assert a.meta["backend"] == "lldb" and b.meta["backend"] == "ptrace"
        assert [t.tid for t in a.threads] == [t.tid for t in b.threads] == [p.pid]
        ra, rb = a.threads[0].regs, b.threads[0].regs
        assert ra == rb, {k: (hex(ra[k]), hex(rb[k])) for k in ra if ra[k] != rb[k]}
        assert ra["orig_rax"] == 0          # blocked in read(2)
        # the FXSAVE image rebuilt from LLDB's FP registers (bytes 416+ are reserved)
        assert a.threads[0].fpregs[:416] == b.threads[0].fpregs[:416]
        for m in a.mappings:
            if m.path in ("[heap]", "[stack]"):
                assert a.read(m.start, m.size) == b.read(m.start, m.size), m.path
        # LLDB plants (and removes) a breakpoint in ld.so's code on attach: that page
        # becomes copy-on-write, so the later ptrace capture copies ld.so's text too
        assert 0 < a.captured_bytes <= b.captured_bytes
    finally:
        a.close()
        b.close()
    assert process_state(p.pid) in ("S", "R")
    p.stdin.write("c\nq\n")
    p.stdin.flush()
    out, _ = p.communicate(timeout=30)
    assert out.split()[0] == want


def test_cli_lldb_backend(blocked, tmp_path):
    lldb_or_skip()
    p, _ = blocked
    core = tmp_path / "l.core"
    r = subprocess.run([MT, "snapshot", str(p.pid), "-o", str(core), "--backend", "lldb", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["backend"] == "lldb" and d["threads"][0]["tid"] == p.pid
    c = open_core(str(core))
    try:
        assert c.meta["backend"] == "lldb"
        assert c.threads[0].regs["rip"] == d["threads"][0]["pc"]
    finally:
        c.close()
    r = subprocess.run([MT, "snapshot", str(p.pid), "-o", str(core), "--backend", "lldb", "--mode", "fork"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "ptrace backend" in r.stderr
