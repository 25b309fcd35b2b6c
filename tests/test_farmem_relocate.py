"""Far memory with hot/cold segregation (``farmem run --relocate``, issue 17).

The Zipf key-value workload (samples/farmem_kv.c, built with the maps) runs under the
pager at half its heap with relocation passes every second.  The program checks every
record it reads and every chain at the end (``mismatches=0``, exit 0); the pager checks
each pass (``$MTFARMEM_RELOCATE_VERIFY``): the program is stopped around it and the heap
graph after it must be the graph before with the moved objects renamed; its last line
says how many passes moved objects and how many were checked.  A run whose relocation
was skipped, or moved nothing, or whose graph changed, fails here.

Real parts: a real userfaultfd, the program's own allocator called by ptrace, a file
store in /dev/shm.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, have_c_compiler

MIB = 1 << 20


def _uffd_ok() -> bool:
    return os.geteuid() == 0 or Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"


@pytest.fixture(scope="module")
def kv_exe(tmp_path_factory, plugin) -> str:
    if not have_c_compiler():
        pytest.skip("no C compiler")
    if not _uffd_ok():
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    out = tmp_path_factory.mktemp("farmem-relocate") / "farmem_kv"
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-g", "-o", str(out),
                        str(SAMPLES / "farmem_kv.c"), "-lm"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return str(out)


def test_kv_at_half_its_heap_with_relocation(kv_exe, tmp_path):
    mib, seconds = 8, 10
    pages = Path(tempfile.mkdtemp(prefix="mtfm-reloc-", dir="/dev/shm")) if os.path.isdir("/dev/shm") \
        else tmp_path / "pages"
    try:
        r = subprocess.run([MAPPEDTRACE, "farmem", "run", "--local", f"{mib * MIB // 2}", "--store", f"file:{pages}",
                            "--relocate", "--relocate-every", "1", "--relocate-passes", "3", "--",
                            kv_exe, str(mib), str(seconds)],
                           capture_output=True, text=True, timeout=240,
                           env=dict(os.environ, MTFARMEM_RELOCATE_VERIFY="1"))
    finally:
        shutil.rmtree(pages, ignore_errors=True)
    # every record read was right, and every chain at the end
    assert r.returncode == 0 and re.search(r"mismatches=0\b", r.stdout), r.stdout + r.stderr
    m = re.search(r"relocation: (\d+) passes \((\d+) failed\), (\d+) objects moved, (\d+) pinned, (\d+) hot pages, "
                  r"pause max \d+ ms, (\d+) passes checked, (\d+) differed", r.stderr)
    assert m, r.stderr
    passes, failed, moved, pinned, hot, checked, differed = map(int, m.groups())
    assert passes >= 1 and moved > 0 and hot > 0, r.stderr
    # each pass that moved objects was checked, and the graph was the same but for the addresses
    assert checked >= 1 and differed == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("phase", ["alloc:3", "write:1", "free:1"])
def test_pager_killed_in_a_pass_is_recovered_by_attach(kv_exe, tmp_path, phase):
    """The pager SIGKILLed inside a relocation pass (``MAPPEDTRACE_RELOCATE_KILL_AFTER``,
    the mover's test hook: after the 3rd allocator call, the 1st word written, the 1st
    chunk freed) leaves the program stopped; ``farmem attach`` rolls the pass back or
    finishes it from its journal while its fault loop serves the pages the recovery
    touches, then pages on, and the program ends with every record right."""
    mib, seconds = 8, 8
    pages = Path(tempfile.mkdtemp(prefix="mtfm-reloc-", dir="/dev/shm")) if os.path.isdir("/dev/shm") \
        else tmp_path / "pages"
    run = subprocess.Popen([MAPPEDTRACE, "farmem", "run", "--local", f"{mib * MIB // 2}", "--store", f"file:{pages}",
                            "--relocate", "--relocate-every", "1", "--", kv_exe, str(mib), str(seconds)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, MAPPEDTRACE_RELOCATE_KILL_AFTER=phase))
    pid = None
    try:
        pid = int(re.search(r"pid=(\d+)", run.stdout.readline()).group(1))
        assert run.wait(timeout=120) == -9          # the hook's SIGKILL, inside the first pass
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "T"     # left stopped, not running half-moved
        r = subprocess.run([MAPPEDTRACE, "farmem", "attach", str(pid), "--local", f"{mib * MIB // 2}"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        assert re.search(r"relocation pass was (rolled back|finished)", r.stderr), r.stderr
        out = run.stdout.read()
        assert re.search(r"mismatches=0\b", out), out + r.stderr
    finally:
        if pid and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)
        shutil.rmtree(pages, ignore_errors=True)


def test_object_heat_from_page_evidence():
    """The scoring rule of mappedtrace/farmem/segregate.py on evidence given by hand: a
    faulted page's faults are shared by the objects starting on it, an evicted page that
    did not fault cools its objects, a page resident all window leaves them as they were;
    scores follow the objects by address from one window to the next."""
    from types import SimpleNamespace

    import numpy as np

    from mappedtrace.farmem.segregate import DECAY, PAGE, Segregator

    seg = Segregator(SimpleNamespace(pid=1, local=1 << 20))
    base = 0x555555600000
    # page 0: three objects; page 1: one; page 2: two (evicted, no fault); page 3: one (resident)
    addr = np.array([base + 16, base + 1040, base + 2064, base + PAGE + 16, base + 2 * PAGE + 16,
                     base + 2 * PAGE + 2064, base + 3 * PAGE + 16], np.int64)
    size = np.full(len(addr), 256, np.int64)
    p0, p1 = addr // PAGE, (addr + size - 1) // PAGE
    seg.note_faults([int(base)] * 6 + [int(base + PAGE)] * 2)
    seg.note_evicted(np.array([base + 2 * PAGE], np.uint64))
    s1 = seg.scores_for(addr, p0, p1)
    assert s1.tolist() == [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]
    # the next window: the scores as the pass leaves them; page 0 evicted and silent, page 1 faults once
    seg.s_addr, seg.s_val = addr.copy(), s1.copy()
    seg._faults.clear()
    seg._evicted.clear()
    seg.note_faults([int(base + PAGE)])
    seg.note_evicted(np.array([base], np.uint64))
    s2 = seg.scores_for(addr, p0, p1)
    assert s2.tolist() == [2.0 * DECAY] * 3 + [2.0 * DECAY + 1.0, 0.0, 0.0, 0.0]
