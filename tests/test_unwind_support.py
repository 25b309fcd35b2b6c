"""Helpers for the unwinder tests: build samples, park them, ask LLDB for its backtraces.

Method of the cross-check: a sample program parks every thread in a blocking
system call at a known depth and prints ``ready <pid>``.  We wait until every
thread sleeps (``/proc/PID/task/*/stat`` state ``S``), stop it with ptrace
(``mappedtrace.attach``), unwind every thread, detach; then LLDB attaches to
the same, still parked, process and gives its backtraces (PC, CFA and the
registers it knows per frame).  A thread parked in a syscall does not move
between the two stops, so both unwinders see the same stack.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mappedtrace
from conftest import lldb_or_skip
from mappedtrace.target.base import CALLEE_SAVED
from mappedtrace.unwind import Frame, Unwinder

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: registers compared per frame
CHECKED = ("rsp",) + CALLEE_SAVED


def clang() -> str:
    p = shutil.which("clang-22")
    if not p:
        pytest.skip("clang-22 is not installed")
    return p


def build_c(tmp: Path, sample: str, out: str, *flags: str) -> str:
    exe = tmp / out
    cmd = [clang(), *flags, "-o", str(exe), str(SAMPLES / sample), "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return str(exe)


def _all_sleeping(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for t in tids:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "S":
                    return False
        return True
    except OSError:
        return False


class Parked:
    """A sample process started and parked; killed on exit."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline().decode() if ready else ""
            assert line.startswith("ready"), f"{argv}: no ready line ({line!r})"
            for _ in range(200):              # at most 2 s for every thread to sleep
                if _all_sleeping(self.proc.pid):
                    break
                time.sleep(0.01)
            time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self) -> "Parked":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ours(pid: int) -> tuple[dict[int, list[Frame]], list[str]]:
    """Our frames of every thread (ptrace stop, unwind, detach)."""
    with mappedtrace.attach(pid) as t:
        u = Unwinder(t)
        out = u.unwind_all()
        return out, list(u.warnings)


# --- LLDB ------------------------------------------------------------------------



@dataclass
class LFrame:
    pc: int
    cfa: int
    function: str
    regs: dict[str, int] = field(default_factory=dict)


def lldb_frames(sbthread, limit: int = 512) -> list[LFrame]:
    out = []
    group_pc = None
    for i, fr in enumerate(sbthread):
        if i >= limit:
            break
        # LLDB shows inlined calls as frames of their own, innermost first; a
        # stack has one frame for them all: its PC is the innermost's PC, its
        # CFA and registers those of the concrete (not inlined) frame.
        if fr.IsArtificial():
            continue                    # a tail call LLDB rebuilt from call-site info: not on the stack
        if group_pc is None:
            group_pc = fr.GetPC()
        if fr.IsInlined():
            continue
        regs = {}
        for n in CHECKED + ("rip",):
            v = fr.FindRegister(n)
            if v.IsValid() and v.GetError().Success() and v.GetValue() is not None:
                regs[n] = v.GetValueAsUnsigned()
        out.append(LFrame(group_pc, fr.GetCFA(), fr.GetFunctionName() or "", regs))
        group_pc = None
    return out


def theirs(pid: int) -> dict[int, list[LFrame]]:
    """LLDB's backtraces of every thread of ``pid`` (attach, read, detach)."""
    lldb = lldb_or_skip()
    dbg = lldb.SBDebugger.Create(False)
    try:
        dbg.SetAsync(False)
        tgt = dbg.CreateTarget("")
        err = lldb.SBError()
        proc = tgt.AttachToProcessWithID(dbg.GetListener(), pid, err)
        if not err.Success():
            pytest.skip(f"LLDB cannot attach: {err.GetCString()}")
        try:
            return {th.GetThreadID(): lldb_frames(th) for th in proc}
        finally:
            proc.Detach()
    finally:
        lldb.SBDebugger.Destroy(dbg)


@dataclass
class Tally:
    """How many frames and registers were cross-checked, and how many agreed."""

    frames: int = 0
    frames_ok: int = 0
    regs: int = 0
    regs_ok: int = 0
    regs_lldb_only: int = 0       # LLDB knows it, we left it absent (allowed, counted)
    regs_ours_only: int = 0       # we give a value LLDB does not know (suspicious, counted)
    mismatches: list[str] = field(default_factory=list)

    def add(self, o: "Tally") -> None:
        for k in ("frames", "frames_ok", "regs", "regs_ok", "regs_lldb_only", "regs_ours_only"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.mismatches += o.mismatches

    def __str__(self) -> str:
        return (f"frames {self.frames_ok}/{self.frames} agree; registers {self.regs_ok}/{self.regs} agree, "
                f"{self.regs_lldb_only} known only to LLDB, {self.regs_ours_only} only to us")


TOTAL = Tally()


def compare(mine: list[Frame], lf: list[LFrame], label: str, *, skip_top_regs: bool = False) -> Tally:
    """Compare our frames with LLDB's, frame by frame (PC, CFA, registers)."""
    t = Tally()
    if len(mine) != len(lf):
        t.mismatches.append(f"{label}: {len(mine)} frames, LLDB has {len(lf)}: "
                            f"ours {[hex(f.pc) for f in mine]} lldb {[hex(f.pc) for f in lf]}")
    for a, b in zip(mine, lf):
        t.frames += 1
        ok = a.pc == b.pc and (a.cfa is None or a.cfa == b.cfa)
        if ok:
            t.frames_ok += 1
        else:
            t.mismatches.append(f"{label} #{a.index}: pc {a.pc:#x}/{b.pc:#x} cfa "
                                f"{a.cfa if a.cfa is None else hex(a.cfa)}/{b.cfa:#x} ({a.function}/{b.function})")
            break                          # the rest would only repeat the error
        if skip_top_regs and a.index == 0:
            continue
        for r in CHECKED:
            if r in b.regs and r in a.regs:
                t.regs += 1
                if a.regs[r] == b.regs[r]:
                    t.regs_ok += 1
                else:
                    t.mismatches.append(f"{label} #{a.index} {a.function}: {r} {a.regs[r]:#x}, LLDB {b.regs[r]:#x}")
            elif r in b.regs:
                t.regs_lldb_only += 1
            elif r in a.regs:
                t.regs_ours_only += 1
    TOTAL.add(t)
    return t


def cross_check(pid: int, label: str) -> tuple[Tally, dict[int, list[Frame]], list[str]]:
    mine, warnings = ours(pid)
    lld = theirs(pid)
    assert set(mine) == set(lld), f"threads differ: {sorted(mine)} vs {sorted(lld)}"
    tally = Tally()
    for tid in sorted(mine):
        tally.add(compare(mine[tid], lld[tid], f"{label} tid {tid}"))
    return tally, mine, warnings
