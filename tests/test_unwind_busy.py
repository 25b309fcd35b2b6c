"""The unwinder at many arbitrary interruption points of CPU-busy programs.

Method: LLDB attaches to a running sample and, in a loop, lets it run for a
few milliseconds and stops it.  At each stop both unwinders see the very same
state: a :class:`mappedtrace.target.base.Target` backed by the stopped LLDB
process (registers of each thread's frame 0, memory through
``SBProcess.ReadMemory``, mappings from ``/proc/PID/maps``) feeds our
:class:`~mappedtrace.unwind.Unwinder`, and its frames are compared with
LLDB's own backtrace (PC and CFA per frame, callee-saved registers).
"""
from __future__ import annotations

import os
import random
import time

import pytest

from mappedtrace.errors import TargetFault
from mappedtrace.target.base import GPR_NAMES, Target, ThreadState
from mappedtrace.target.live import parse_maps
from mappedtrace.unwind import Unwinder

from conftest import lldb_or_skip
from test_unwind_support import SAMPLES, Parked, Tally, build_c, compare, lldb_frames

pytestmark = pytest.mark.timeout(180)


class _LldbTarget(Target):
    """A Target over a process stopped by LLDB (test-only backend)."""

    def __init__(self, lldb, proc):
        super().__init__(pid=proc.GetProcessID())
        self._lldb, self._proc = lldb, proc
        self.mappings = parse_maps(open(f"/proc/{self.pid}/maps").read())
        self.exe = os.readlink(f"/proc/{self.pid}/exe")
        for th in proc:
            regs = {}
            for rset in th.GetFrameAtIndex(0).GetRegisters():
                for r in rset:
                    if r.GetName() in GPR_NAMES and r.GetValue() is not None:
                        regs[r.GetName()] = r.GetValueAsUnsigned()
            self.threads.append(ThreadState(th.GetThreadID(), regs))

    def _read(self, addr: int, size: int) -> bytes:
        err = self._lldb.SBError()
        data = self._proc.ReadMemory(addr, size, err)
        if not err.Success() or data is None:
            raise TargetFault(addr, size)
        return bytes(data)


def _wait_state(lldb, listener, proc, want, bound: float = 5.0) -> None:
    """Consume process events until the process is in state ``want`` (bounded)."""
    t0 = time.monotonic()
    ev = lldb.SBEvent()
    while proc.GetState() != want:
        if time.monotonic() - t0 > bound:
            raise AssertionError(f"LLDB: process did not reach state {want} (is {proc.GetState()})")
        if listener.WaitForEvent(1, ev) and lldb.SBProcess.EventIsProcessEvent(ev):
            if lldb.SBProcess.GetStateFromEvent(ev) == want:
                return


def _build_instrumented(tmp_path, flags: list[str]) -> str:
    import subprocess
    import sys
    from conftest import require_plugin
    require_plugin()
    exe = str(tmp_path / "busy-mt")
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "cc", *flags, "-o", exe,
                        str(SAMPLES / "unwind_busy.c"), "-lpthread"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr.strip()[-300:]
    return exe


@pytest.mark.parametrize("opt", ["-O0", "-O2", "-O2 -fomit-frame-pointer", "-O2 vdso", "mappedtrace-cc -O2"])
def test_interruption_points_match_lldb(tmp_path, opt):
    lldb = lldb_or_skip()
    flags = [f for f in opt.split() if f.startswith("-")]
    if opt.startswith("mappedtrace-cc"):
        exe = _build_instrumented(tmp_path, flags)
    else:
        exe = build_c(tmp_path, "unwind_busy.c", "busy", *flags, "-g")
    argv = [exe, "1"] + (["vdso"] if "vdso" in opt else [])
    # more stops for a measurement: MAPPEDTRACE_UNWIND_STOPS=200
    stops = int(os.environ.get("MAPPEDTRACE_UNWIND_STOPS", "25"))
    rng = random.Random(1234)
    total = Tally()
    hows: dict[str, int] = {}
    tops: dict[str, int] = {}
    in_vdso = 0
    with _Running(argv) as p:
        dbg = lldb.SBDebugger.Create(False)
        try:
            dbg.SetAsync(False)
            tgt = dbg.CreateTarget("")
            err = lldb.SBError()
            proc = tgt.AttachToProcessWithID(dbg.GetListener(), p.pid, err)
            if not err.Success():
                pytest.skip(f"LLDB cannot attach: {err.GetCString()}")
            dbg.SetAsync(True)
            try:
                for i in range(stops):
                    proc.Continue()
                    _wait_state(lldb, dbg.GetListener(), proc, lldb.eStateRunning)
                    time.sleep(rng.uniform(0.002, 0.03))
                    proc.Stop()
                    _wait_state(lldb, dbg.GetListener(), proc, lldb.eStateStopped)
                    t = _LldbTarget(lldb, proc)
                    u = Unwinder(t)
                    for th in proc:
                        mine = u.unwind(t.thread(th.GetThreadID()))
                        for f in mine:
                            hows[f.how] = hows.get(f.how, 0) + 1
                        top = f"{mine[0].function}+{mine[0].symbol_offset or 0:#x}"
                        in_vdso += mine[0].module == "[vdso]"
                        tops[top] = tops.get(top, 0) + 1
                        total.add(compare(mine, lldb_frames(th), f"stop {i} tid {th.GetThreadID()} {mine[0]}"))
            finally:
                dbg.SetAsync(False)
                proc.Detach()
        finally:
            lldb.SBDebugger.Destroy(dbg)
    print(f"busy {opt}: {stops} stops: {total}; frames by method {hows}; "
          f"{len(tops)} distinct top PCs: {sorted(tops)}")
    assert not total.mismatches, "\n".join(total.mismatches[:20])
    assert total.frames >= stops * 2 * 4
    if "vdso" in opt:
        # most stops land in the vDSO, whose CFI is read from the target's memory
        assert in_vdso >= stops // 4, in_vdso


class _Running(Parked):
    """Like Parked, but the threads keep running (no wait for them to sleep)."""

    def __init__(self, argv):
        import select
        import subprocess
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline().decode() if ready else ""
            assert line.startswith("ready"), f"{argv}: no ready line ({line!r})"
        except BaseException:
            self.close()
            raise
