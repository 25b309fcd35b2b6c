"""The pager's access source (mappedtrace/farmem/access.py): DAMON where it can be had.

Real parts: the sample ``farmem_hotread`` (a hot set only read after start,
a cold set never touched again) built with the system C compiler, paged by
``mappedtrace farmem run`` to a file store, the kernel's DAMON sysfs read
(and written only where no other monitor holds it).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, damon_unavailable, have_c_compiler, run_mt

MIB = 1 << 20
HOT_MIB, COLD_MIB = 4, 28
BUDGET = 12 * MIB                  # the hot set and a third of the cold one
KDAMONDS = "/sys/kernel/mm/damon/admin/kdamonds"


@pytest.fixture(scope="module")
def hotread_exe(tmp_path_factory) -> str:
    if not have_c_compiler():
        pytest.skip("no C compiler")
    if os.geteuid() != 0 and Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() != "1":
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    out = tmp_path_factory.mktemp("hotread") / "farmem_hotread"
    subprocess.run(["cc", "-O2", "-o", str(out), str(SAMPLES / "farmem_hotread.c")], check=True)
    return str(out)


def _damon_tree() -> dict | None:
    """What DAMON's sysfs shows of every kdamond (read-only): the machine's own monitor must
    be exactly as it was after a pager ran."""
    if not os.path.isdir(KDAMONDS):
        return None
    tree = {"nr": Path(KDAMONDS, "nr_kdamonds").read_text()}
    for i in range(min(int(tree["nr"]), 8)):
        for f in ("state", "pid", "contexts/nr_contexts", "contexts/0/operations",
                  "contexts/0/targets/nr_targets", "contexts/0/schemes/nr_schemes",
                  "contexts/0/monitoring_attrs/intervals/sample_us"):
            try:
                tree[f"{i}/{f}"] = Path(KDAMONDS, str(i), f).read_text()
            except OSError as e:
                tree[f"{i}/{f}"] = f"({e.strerror})"
    return tree


def _start(exe: str, store: str, access: str, seconds: int = 120):
    p = subprocess.Popen([MAPPEDTRACE, "farmem", "run", "--local", str(BUDGET), "--store", store,
                          "--access", access, "--", exe, str(HOT_MIB), str(COLD_MIB), str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"pid=(\d+) hot=(0x[0-9a-f]+)-(0x[0-9a-f]+) cold=(0x[0-9a-f]+)-(0x[0-9a-f]+)", line)
    assert m, f"no ready line: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    pid = int(m.group(1))
    hot, cold = (int(m.group(2), 16), int(m.group(3), 16)), (int(m.group(4), 16), int(m.group(5), 16))
    return p, pid, hot, cold


def _status(pid: int, until, timeout: float = 40) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = run_mt("farmem", "status", str(pid), "--json", timeout=30)
        if r.returncode == 0:
            st = json.loads(r.stdout)
            if until(st):
                return st
        assert time.monotonic() < deadline, f"status never got there: {r.stdout[-2000:]} {r.stderr}"
        time.sleep(0.3)


def _state(pid: int, until, timeout: float) -> dict:
    """The pager's state file (what ``farmem status`` prints), read here: the DAMON test also
    runs in a TCG virtual machine (benchmarks/farmem/damon_vm) where each CLI start takes ~50 s."""
    from mappedtrace.farmem.pager import read_state
    deadline = time.monotonic() + timeout
    while True:
        st = read_state(pid) or {}
        if st and until(st):
            return st
        assert time.monotonic() < deadline, f"the pager's state never got there: {st}"
        time.sleep(0.25)


def _present(pid: int, lo: int, hi: int) -> int:
    import numpy as np
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // 4096 * 8)
        pm = np.frombuffer(f.read((hi - lo) // 4096 * 8), dtype=np.uint64)
    return int(((pm >> np.uint64(63)) & np.uint64(1)).sum())


def _end(p: subprocess.Popen, pid: int) -> str:
    try:
        os.kill(pid, signal.SIGUSR1)
        out, err = p.communicate(timeout=60)
    finally:
        for q in (p.pid, pid):
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
    m = re.search(r"passes=(\d+) cold_reads=(\d+) mismatches=(\d+)", out)
    assert m and m.group(3) == "0", (out, err)
    return err


def test_access_source_reported_and_machine_damon_untouched(hotread_exe, tmp_path):
    """``--access auto`` pages with DAMON where it can be had and says so; where it cannot, the
    status says faults and why, ``--access damon`` is a one-line error before the program
    starts, and the machine's own DAMON monitor is exactly as it was."""
    why = damon_unavailable()
    before = _damon_tree()
    p, pid, hot, cold = _start(hotread_exe, f"file:{tmp_path / 's'}", "auto")
    try:
        st = _status(pid, lambda s: s.get("access", {}).get("source") in ("damon", "faults") and
                     s["pages_evicted"] > 0)
    except BaseException:
        _end(p, pid)
        raise
    err = _end(p, pid)
    acc = st["access"]
    if why is None:
        assert acc["source"] == "damon", (acc, err)
    else:
        assert acc["source"] == "faults" and why in acc["why"], acc
        r = run_mt("farmem", "run", "--local", "4M", "--store", f"file:{tmp_path / 'd'}", "--access", "damon",
                   "--", hotread_exe, "1", "1", "5", timeout=60)
        assert r.returncode != 0 and "ready" not in r.stdout, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert "--access damon:" in lines[0] and len(lines) <= 2 and "Traceback" not in r.stderr, r.stderr
    if why is not None:
        assert _damon_tree() == before, "the machine's DAMON monitor changed"


def test_damon_keeps_a_read_only_hot_set_and_a_killed_pager_s_context_goes(hotread_exe, tmp_path):
    """Under DAMON, a hot set the program only reads (never writes, never faults after the
    start) stays resident while the cold set goes out; the pager SIGKILLed leaves its DAMON
    context, which the next pager start stops."""
    why = damon_unavailable()
    if why:
        pytest.skip(f"no DAMON context can be run here: {why}")
    from mappedtrace.farmem.access import RECORD, _own_record
    from mappedtrace.farmem.pager import state_dir
    p, pid, hot, cold = _start(hotread_exe, f"file:{tmp_path / 's'}", "damon", seconds=300)
    attach = None
    try:
        # (timeouts for a slow virtual machine; a host gets there in seconds)
        _state(pid, lambda s: s["access"].get("source") == "damon" and s["access"].get("updates", 0) >= 20
               and s["evict_rounds"] >= 30 and s["pages_evicted"] > 0, timeout=300)
        # rounds with the hot set read only while the cold stream faults and takes room
        hot_pages, cold_pages = (hot[1] - hot[0]) // 4096, (cold[1] - cold[0]) // 4096
        samples = []
        for _ in range(20):
            time.sleep(0.25)
            samples.append((_present(pid, *hot), _present(pid, *cold)))
        hot_mean = sum(h for h, _ in samples) / len(samples)
        assert hot_mean >= 0.9 * hot_pages, (samples, hot_pages)                  # the read set kept
        assert max(c for _, c in samples) <= 0.5 * cold_pages, (samples, cold_pages)  # the cold set out
        rec = _own_record(state_dir())
        assert rec and rec["target_pid"] == pid, rec
        # the pager killed: its context outlives it (the program lives on) until the next start
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert Path(KDAMONDS, "0", "state").read_text().strip() == "on"
        attach = subprocess.Popen([MAPPEDTRACE, "farmem", "attach", str(pid), "--local", str(BUDGET),
                                   "--access", "faults"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        st = _state(pid, lambda s: s.get("pager_pid") == attach.pid and s["state"] == "running",
                    timeout=300)
        assert not os.path.exists(os.path.join(state_dir(), RECORD)), st.get("access")
        assert Path(KDAMONDS, "nr_kdamonds").read_text().strip() == "0"
    finally:
        os.kill(pid, signal.SIGUSR1) if os.path.exists(f"/proc/{pid}") else None
        for q in ([attach.pid] if attach else []) + [p.pid, pid]:
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
        if attach:
            attach.wait()
