"""Far memory end to end: a program that checksums its heap runs with part of it in a store.

Real parts only: the sample is built with the system C compiler, runs under
``mappedtrace farmem run`` with the runtime helper preloaded, its faults are
served through a real userfaultfd from a file store or a Redis server that the
test starts on 127.0.0.1 at a free port.  The program itself says whether
every byte it read was right (mismatches=0, checksum == expected).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, have_c_compiler, need, run_mt

MIB = 1 << 20
HEAP_MIB = 32                 # the sample's records; plus a 4 MiB mmapped buffer
SECONDS = 120               # an upper bound: the test ends the run with SIGUSR1


def _uffd_ok() -> bool:
    return os.geteuid() == 0 or Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"


def build_paged_sample(tmp_path_factory, name: str) -> str:
    """samples/NAME.c built plainly (no maps) for a test that pages it; skips,
    saying why, where this host cannot compile or cannot use userfaultfd."""
    if not have_c_compiler():
        pytest.skip("no C compiler")
    if not _uffd_ok():
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    out = tmp_path_factory.mktemp(name) / name
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(out), str(SAMPLES / f"{name}.c")], check=True)
    return str(out)


@pytest.fixture(scope="module")
def checksum_exe(tmp_path_factory) -> str:
    return build_paged_sample(tmp_path_factory, "farmem_checksum")


@pytest.fixture(scope="module")
def heap_bytes(checksum_exe) -> int:
    """The sample's heap as it reports it (a run of 0 seconds)."""
    r = subprocess.run([checksum_exe, str(HEAP_MIB), "2", "0"], capture_output=True, text=True, check=True)
    return int(re.search(r"heap=(\d+)", r.stdout).group(1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """(url, server process) of a Redis started here."""
    need("redis-server")
    port = _free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    return redis_server[0]


def _start(exe: str, store: str, budget: int) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([MAPPEDTRACE, "farmem", "run", "--local", str(budget), "--store", store, "--",
                          exe, str(HEAP_MIB), "2", str(SECONDS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FARMEM_CHECKSUM_VERBOSE="1"))
    line = p.stdout.readline()
    m = re.search(r"pid=(\d+)", line)
    assert m, f"no ready line: {line!r} {p.stderr.read() if p.poll() is not None else ''}"
    return p, int(m.group(1))


def _status(pid: int) -> dict:
    r = run_mt("farmem", "status", str(pid), "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait_paging(pid: int, heap: int, timeout: float = 40) -> dict:
    """Status once the whole heap is registered, pages went out and came back, and a few
    eviction rounds ran."""
    deadline = time.monotonic() + timeout
    while run_mt("farmem", "status", str(pid)).returncode:     # the pager is still connecting
        assert time.monotonic() < deadline, "no far-memory state for the program"
        time.sleep(0.2)
    first = None
    while True:
        st = _status(pid)
        if st["heap_bytes"] >= heap and first is None:
            first = st["evict_rounds"]
        if first is not None and st["evict_rounds"] > first + 5 and st["remote_bytes"] > 0 and \
                st["faults"] - st["zero_faults"] > 100:
            return st
        assert time.monotonic() < deadline, f"no paging after {timeout} s: {st}"
        time.sleep(0.5)


def _rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def _kill(p: subprocess.Popen, pid: int) -> None:
    """After a failure: the pager and the program (a pager killed first leaves it waiting)."""
    for q in (p.pid, pid):
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def _finish(p: subprocess.Popen, pid: int) -> str:
    time.sleep(1.0)                 # a second of running unpaged after the detach
    os.kill(pid, signal.SIGUSR1)
    out, err = p.communicate(timeout=120)
    m = re.search(r"mismatches=(\d+) checksum=(\w+) expected=(\w+)", out)
    assert m, f"no result line: {out!r} {err!r}"
    assert m.group(1) == "0", f"the program read wrong bytes: {out} {err}"
    assert m.group(2) == m.group(3), out
    return err


@pytest.mark.parametrize("share", [0.5, 0.25])
@pytest.mark.parametrize("store_kind", ["file", "redis"])
def test_paged_run_is_exact(checksum_exe, heap_bytes, redis_url, tmp_path, store_kind, share):
    # The file store on tmpfs, as in benchmarks/farmem: on a disk that other jobs keep busy,
    # creating a page's file took 3-8 ms (ext4 here, load 25-37), so the first eviction of a
    # 40 MiB heap took 20-50 s and a program held to its budget waited that long.  (The graph
    # test below keeps its file store on the disk.)
    pages = Path(tempfile.mkdtemp(prefix="mtfm-test-", dir="/dev/shm")) if os.path.isdir("/dev/shm") \
        else tmp_path / "pages"
    store = f"file:{pages}" if store_kind == "file" else redis_url
    budget = int(heap_bytes * share)
    p, pid = _start(checksum_exe, store, budget)
    try:
        st = _wait_paging(pid, heap_bytes)
        assert st["state"] == "running" and st["store_health"]["ok"]
        assert st["remote_bytes"] > 0 and st["pages_evicted"] > 0 and st["faults"] > 0
        assert st["fault_latency_median_us"] is not None
        # The budget holds (issue #15): the fault loop lets a fault in only against room under
        # the budget, the room is given back batch by batch as the evictor drops pages, and the
        # pager's own reads of the program (they fault too) are told apart by their thread.
        # So once paging holds (from the first round that evicted and ended under budget on),
        # no scan of the pager sees more resident in the heap ranges it had registered already
        # than the budget, give or take its own reads (1 MiB is 256 of them).  A fault of the
        # program that waited 10 s for room is let in over the budget (a valve against a stuck
        # evictor, counted): a few such pages are inside that 1 MiB; seen once at load 25 on 2
        # cores (1 fault), and why that fault waited so long is not known.  The kernel's
        # RssAnon, sampled for 3 s, holds all the program's anonymous memory: the paged heap,
        # plus what the budget does not
        # govern (thread stacks, libc's data, the helper, and pages of a mapping touched before
        # the pager registered it: the sample's 256-768 KiB realloc'd buffer): budget + 4 MiB.
        rss_max = 0
        for _ in range(6):
            rss_max = max(rss_max, _rss_anon(pid))
            time.sleep(0.5)
        st = _status(pid)
        print(f"budget {budget} B: worst scan {st['resident_scan_max_bytes']} B, worst round end "
              f"{st['resident_after_evict_max_bytes']} B, RssAnon up to {rss_max} B, "
              f"faults waited for room {st['faults_waited_for_room']}, over budget {st['faults_over_budget']}, "
              f"pager's own {st['faults_pager_own']}")
        # The kernel's RssAnon (below) is the judge of memory held.  The pager's own scan is
        # held to a looser bound: in a full CI run at load ~15 one scan saw 27.9 MB present on
        # a 19.9 MB budget while RssAnon never passed 20.1 MB (pagemap also counts zero-page
        # mappings and pages mid-drop; issue #15 says this gap).
        assert st["resident_scan_max_bytes"] <= budget * 3 // 2 + MIB, (budget, st)
        assert st["faults_over_budget"] <= 16, st
        assert rss_max <= budget + 4 * MIB, (rss_max, budget, st)
        assert rss_max < heap_bytes, (rss_max, heap_bytes)      # the heap really is not all resident
        assert st["pages_evicted"] > 0 and st["evict_batches"] > 0, st
        r = run_mt("farmem", "detach", str(pid), timeout=120)
        assert r.returncode == 0, r.stderr
        vm_flags = [ln for ln in Path(f"/proc/{pid}/smaps").read_text().splitlines() if ln.startswith("VmFlags")]
        assert not any(" um" in ln or " uw" in ln for ln in vm_flags), "ranges still registered"
        assert not any(ln.split()[-1] == "anon_inode:[userfaultfd]" for ln in
                       (os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd"))), \
            "the helper still holds its userfaultfd"
        err = _finish(p, pid)
        assert p.returncode == 0, err
        if store_kind == "file":
            assert not any(pages.iterdir()), "pages left in the store after detach"
    finally:
        _kill(p, pid)
        shutil.rmtree(pages, ignore_errors=True)


def test_pager_killed_then_taken_over(checksum_exe, heap_bytes, redis_url):
    """SIGKILL the pager mid-run: the program waits on its next fault.  'attach' pages it
    again; SIGKILL that pager too, and 'detach' takes the descriptor over and brings every
    page home from the store.  The program ends exact."""
    budget = heap_bytes // 3
    p, pid = _start(checksum_exe, redis_url, budget)
    attach = None
    try:
        _wait_paging(pid, heap_bytes)
        p.send_signal(signal.SIGKILL)
        p.wait()
        time.sleep(1.0)
        # the program is stuck in a fault (or a helper drop) with no pager: it makes no progress
        ticks = lambda: sum(int(Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[11])  # noqa
                            for t in os.listdir(f"/proc/{pid}/task"))
        before = ticks()
        time.sleep(1.0)
        assert ticks() - before <= 5, "the program ran on without its pager"
        attach = subprocess.Popen([MAPPEDTRACE, "farmem", "attach", str(pid), "--local", str(budget)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 40
        while True:
            st = _status(pid)
            if st["pager_pid"] == attach.pid and st["faults"] > 100 and st["pages_evicted"] > 0:
                break
            assert attach.poll() is None, attach.communicate()
            assert time.monotonic() < deadline, f"the new pager does not page: {st}"
            time.sleep(0.5)
        attach.send_signal(signal.SIGKILL)
        attach.wait()
        r = run_mt("farmem", "detach", str(pid), timeout=120)
        assert r.returncode == 0, r.stderr
        assert "pager had died" in r.stderr
        _finish(p, pid)        # the program's stdout is the pipe it inherited
    finally:
        for q in (p, attach):
            if q is not None and q.poll() is None:
                q.kill()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_store_stopped_program_waits(checksum_exe, heap_bytes, redis_server):
    """Redis stopped (SIGSTOP) mid-run: status says what the program waits on, no zero page
    is handed out, and the run resumes exact when the store answers again."""
    redis_url, server = redis_server[0], redis_server[1].pid
    budget = heap_bytes // 2
    p, pid = _start(checksum_exe, redis_url, budget)
    try:
        _wait_paging(pid, heap_bytes)
        os.kill(server, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while True:
                st = _status(pid)
                if st["blocked"] and not st["store_health"]["ok"]:
                    break
                assert time.monotonic() < deadline, f"status never said the store is down: {st}"
                time.sleep(0.5)
            assert "redis://127.0.0.1" in st["blocked"], st["blocked"]
        finally:
            os.kill(server, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while _status(pid)["blocked"]:
            assert time.monotonic() < deadline, "still blocked after the store came back"
            time.sleep(0.5)
        r = run_mt("farmem", "detach", str(pid), timeout=120)
        assert r.returncode == 0, r.stderr
        _finish(p, pid)
    finally:
        os.kill(server, signal.SIGCONT)
        _kill(p, pid)


def test_bad_input_one_line(checksum_exe, tmp_path):
    port = _free_port()
    r = run_mt("farmem", "run", "--local", "16M", "--store", f"redis://127.0.0.1:{port}", "--", checksum_exe)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert re.search(r"error: store redis://127\.0\.0\.1:\d+ does not answer", r.stderr), r.stderr
    r = run_mt("farmem", "run", "--local", "0", "--store", f"file:{tmp_path}", "--", checksum_exe)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "leaves no page resident" in r.stderr, r.stderr
    r = run_mt("farmem", "run", "--local", "64K", "--store", f"file:{tmp_path}", "--", checksum_exe)
    assert r.returncode != 0 and "is below the 1 MiB" in r.stderr, r.stderr
    r = run_mt("farmem", "run", "--local", "lots", "--store", f"file:{tmp_path}", "--", checksum_exe)
    assert r.returncode != 0 and "is not a size" in r.stderr, r.stderr
    r = run_mt("farmem", "run", "--local", "16M", "--store", "ftp://x", "--", checksum_exe)
    assert r.returncode != 0 and "unknown store" in r.stderr, r.stderr
    gone = subprocess.Popen(["true"])
    gone.wait()
    for cmd in ("status", "detach"):
        r = run_mt("farmem", cmd, str(gone.pid))
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"no process {gone.pid}" in r.stderr, r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("mappedtrace: error")]) == 1
    r = run_mt("farmem", "status", str(os.getpid()))
    assert r.returncode != 0 and "is not paged by mappedtrace farmem" in r.stderr, r.stderr


def _tasks(pid: int) -> dict[str, int]:
    """Thread name → CPU ticks (utime + stime) of process ``pid``."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
            f = Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0) + int(f[11]) + int(f[12])
    return out


def test_compiled_loop_serves_faults(checksum_exe, heap_bytes, redis_url):
    """The faults are served by the compiled loop: the pager has a thread named mtfm-serve (set by
    _serve.c itself) that burns CPU while faults are served, the status says so, prefetched pages
    are hit or put into the program ahead of its faults, the store's round trips are fewer than
    the faults, and the program reads exact data."""
    budget = heap_bytes // 2
    p, pid = _start(checksum_exe, redis_url, budget)
    try:
        st = _wait_paging(pid, heap_bytes)
        assert st["fault_loop"] == "compiled", st
        before = _tasks(p.pid)
        assert "mtfm-serve" in before, before
        time.sleep(2.0)
        st2 = _status(pid)
        after = _tasks(p.pid)
        served = st2["faults"] - st["faults"]
        assert served > 0, (st, st2)
        assert after["mtfm-serve"] > before["mtfm-serve"], (before, after)
        # prefetch works and is exact: pages fetched ahead were used, fewer round trips than faults
        assert st2["prefetched"] > 0 and st2["prefetch_hits"] > 0, st2
        assert 0 < st2["prefetch_accuracy"] <= 1
        assert st2["store_round_trips"] < st2["faults"] - st2["zero_faults"], st2
        # readahead (on by default): prefetched pages also went into the program while there was
        # room, each a fault the program did not take; the program's checksums say they were right
        assert st2["readahead"] > 0, st2
        assert st2["fault_latency_median_us"] is not None
        r = run_mt("farmem", "detach", str(pid), timeout=120)
        assert r.returncode == 0, r.stderr
        _finish(p, pid)
    finally:
        _kill(p, pid)


def _present(pid: int, lo: int, hi: int) -> int:
    """How many pages of [lo, hi) are resident in ``pid`` (/proc/PID/pagemap, bit 63)."""
    import numpy as np
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // 4096 * 8)
        pm = np.frombuffer(f.read((hi - lo) // 4096 * 8), dtype=np.uint64)
    return int(((pm >> np.uint64(63)) & np.uint64(1)).sum())


@pytest.fixture(scope="module")
def leaky_exe(tmp_path_factory, plugin) -> str:
    if not _uffd_ok():
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    from conftest import build_sample
    return build_sample(SAMPLES / "farmem_leaky.c", "-O1", tmp_path_factory.mktemp("leaky") / "farmem_leaky")


def _leaky_run(exe: str, store: str, graph: bool, seconds: float | None = None) -> dict:
    """Run farmem_leaky under the pager with room for its live lists A and B but not for its
    leaked list L too; grow the heap (SIGUSR2) once the pager has its graph (or at once with
    --no-graph); then wait ``seconds``, or (None) until no leaked page is resident (at most
    60 s).  Returns the status then, how long it waited, and what pagemap says of L's pages."""
    mib = 8
    rec = 272                                   # a 256-byte record's chunk
    n = (mib << 20) // 256
    # A and L fit under the high-water mark (95 % of the budget, no eviction before the graph);
    # with B, eviction down to the low-water mark (90 %) must free more than L holds
    budget = int(2 * n * rec * 1.085)
    cmd = [MAPPEDTRACE, "farmem", "run", "--local", str(budget), "--store", store,
           *([] if graph else ["--no-graph"]), "--", exe, str(mib), "300"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"pid=(\d+) leak_first_page=(0x[0-9a-f]+) leak_last_page=(0x[0-9a-f]+)", line)
    assert m, line
    pid, first, last = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
    inner_lo, inner_hi = (first + 1) * 4096, last * 4096      # pages only L touches (not the two ends)
    try:
        deadline = time.monotonic() + 90
        while graph:
            r = run_mt("farmem", "status", str(pid), "--json")
            if r.returncode == 0:
                g = json.loads(r.stdout)["graph"]
                if g.get("refreshes", 0) >= 1:
                    break
                assert not g.get("error"), g
            assert time.monotonic() < deadline, "no heap graph in 90 s"
            time.sleep(0.5)
        os.kill(pid, signal.SIGUSR2)
        assert p.stdout.readline().strip() == "grown"
        t0 = time.monotonic()
        while True:
            time.sleep(0.5)
            resident_leaked = _present(pid, inner_lo, inner_hi)
            waited = time.monotonic() - t0
            if (seconds is None and resident_leaked == 0 and waited >= 2) or \
                    waited >= (seconds if seconds is not None else 60):
                break
        time.sleep(1.0)             # the state file is written twice a second: let it catch up
        st = _status(pid)
        os.kill(pid, signal.SIGUSR1)
        out, err = p.communicate(timeout=120)
        m2 = re.search(r"mismatches=(\d+)", out)
        assert m2 and m2.group(1) == "0" and p.returncode == 0, (out, err)
        return {"status": st, "leaked_pages": (inner_hi - inner_lo) // 4096, "resident_leaked": resident_leaked,
                "waited": waited}
    finally:
        _kill(p, pid)


def test_graph_evicts_leaked_pages_first(leaky_exe, tmp_path):
    """A program with a known leaked list (it prints the list's pages): with the heap graph, the
    pager makes room for the program's growth by evicting the leaked pages first (every one of
    them ends up out of memory, evictions say 'leaked', and the graph names at least those
    pages); with --no-graph no eviction is guided."""
    g = _leaky_run(leaky_exe, f"file:{tmp_path / 'g'}", graph=True)
    ng = _leaky_run(leaky_exe, f"file:{tmp_path / 'ng'}", graph=False, seconds=2)
    st, nst = g["status"], ng["status"]
    assert g["resident_leaked"] == 0, g                                   # every leaked page offloaded
    assert st["evicted_by_reason"]["leaked"] >= 0.9 * g["leaked_pages"], (st["evicted_by_reason"], g)
    assert st["graph"]["leaked_pages"] >= g["leaked_pages"], (st["graph"], st["warnings"])
    # --no-graph turns guidance off: no eviction says "leaked", the status says why.  (Whether the
    # clock alone also finds L cold depends on timing here — L is never touched after it is built —
    # so the faults of the two runs are not compared; benchmarks/farmem measures that.)
    assert nst["evicted_by_reason"]["leaked"] == 0 and nst["graph"]["state"].startswith("off"), nst


@pytest.fixture(scope="module")
def leakserver_exe(tmp_path_factory, plugin) -> str:
    if not _uffd_ok():
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    from conftest import build_sample
    return build_sample(SAMPLES / "farmem_leakserver.c", "-O2",
                        tmp_path_factory.mktemp("leakserver") / "farmem_leakserver")


def test_leaking_server_leaks_stay_remote(leakserver_exe, tmp_path):
    """Issue #15 goal (c) on a small scale: a server that leaks steadily (one response buffer
    in 256) under a budget of its live sessions plus a tenth.  Once the heap graph knows at least
    1 MiB of leaked pages, the pager's own pagemap reading finds none of them resident, and not
    one leaked page is ever fetched back (the fault loop's pages checked against the leaked set
    every round); the program's checks stay exact.  (Which policy sent them out, "leaked" or
    the clock, depends on whether the graph knew them first: benchmarks/farmem measures that.)"""
    mib = 4
    heap = (mib << 20) // 280 * 280
    # with readahead (the default): the fault loop never prefetches a page the graph says is
    # leaked, so neither the program nor the pager's prefetch brings one back.
    p = subprocess.Popen([MAPPEDTRACE, "farmem", "run", "--local", str(int(heap * 1.1)), "--store",
                          f"file:{tmp_path / 'pages'}", "--", leakserver_exe, str(mib), "300", "256"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"pid=(\d+)", line)
    assert m, f"no ready line: {line!r}"
    pid = int(m.group(1))
    try:
        deadline = time.monotonic() + 120
        seen = None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            r = run_mt("farmem", "status", str(pid), "--json")
            if r.returncode:
                continue
            st = json.loads(r.stdout)
            assert not st["graph"].get("error"), st["graph"]
            assert st["leaked_faulted_back"] == 0, st["graph"]
            if st["graph"].get("leaked_pages", 0) >= 256 and st["leaked_pages_resident"] == 0:
                seen = st
                break
        assert seen, ("leaked pages not all remote in 120 s: "
                      f"{ {k: st.get(k) for k in ('leaked_pages_resident', 'evicted_by_reason', 'graph')} }")
        time.sleep(3)                               # a few more rounds: still none fetched back
        st = _status(pid)
        os.kill(pid, signal.SIGUSR1)
        out, err = p.communicate(timeout=120)
    finally:
        _kill(p, pid)
    fm = re.search(r"leaked_bytes=(\d+) mismatches=(\d+)", out)
    assert fm and fm.group(2) == "0" and p.returncode == 0, (out, err)
    assert st["leaked_faulted_back"] == 0, st["graph"]
    # the graph found leaks the program really made: no more leaked pages than its leaked bytes fill
    assert seen["graph"]["leaked_pages"] * 4096 <= int(fm.group(1)) + 4096 * seen["graph"]["leaked_pages"] // 8, \
        (seen["graph"], fm.group(0))


def test_path_prefetch_lists_follow_the_program_s_path(plugin, tmp_path):
    """The graph's prefetch list of a page (guide.path_edges) holds, nearest first, the pages
    the program will read next from any object on it: on farmem_chase (records linked in a
    random order), for records on a few pages the pages of the next 3 records along `next`
    (read from the captured copy) are in the page's list (budget 64 pages; 16-17 records a
    page, and a straddling one counts two pages: 3 steps), the k-th at depth k or less, and
    the list is sorted by depth."""
    import struct
    import numpy as np
    import mappedtrace
    from conftest import build_sample
    from mappedtrace.farmem.guide import path_edges
    from mappedtrace.graph import EDGE_EXACT
    from mappedtrace.session import analyse
    exe = build_sample(SAMPLES / "farmem_chase.c", "-O2", tmp_path / "farmem_chase")
    p = subprocess.Popen([exe, "2", "60"], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(re.search(r"pid=(\d+)", p.stdout.readline()).group(1))
        with mappedtrace.capture(pid) as t:
            g = analyse(t, leaks=False).graph
            src, dst, depth = path_edges(g, EDGE_EXACT, per_page=64)
            assert len(src) and np.all(np.diff(src.astype(np.int64)) >= 0)
            addrs = np.asarray(g.addresses, np.uint64)
            recs = np.flatnonzero((np.asarray(g.sizes) >= 256) & (np.asarray(g.sizes) < 272))
            checked = 0
            for i in recs[::max(1, len(recs) // 20)]:
                r = int(addrs[i])
                page = (r - 16) // 4096 * 4096
                if (r + 255) // 4096 * 4096 != page:
                    continue                        # a record that straddles two pages: skip
                mine = src == np.uint64(page)
                lst, dep = dst[mine].tolist(), depth[mine]
                assert 16 <= len(lst) <= 64, (hex(page), len(lst))
                assert np.all(np.diff(dep) >= 0)            # nearest first
                x = r
                for step in range(3):
                    x = struct.unpack("<Q", t.read(x, 8))[0]
                    for q in {(x - 16) // 4096 * 4096, (x + 255) // 4096 * 4096} - {page}:
                        assert q in lst, (step, hex(q))
                        assert dep[lst.index(q)] <= step + 1, (step, hex(q), dep[lst.index(q)])
                checked += 1
            assert checked >= 10
    finally:
        p.kill()
        p.wait()


def test_exposed_header_pages():
    """A leaked chunk whose neighbour below may still be freed, merged or split has its header
    written by glibc: its page is not dead.  A run of leaked chunks exposes its first only."""
    import numpy as np
    from mappedtrace.farmem.guide import exposed_header_pages
    chunks = np.array([0x5010, 0x1010, 0x1110, 0x2010, 0x2110, 0x3010], np.uint64)     # any order
    leaked = np.array([True, False, True, True, False, True])
    assert exposed_header_pages(chunks, leaked).tolist() == [0x1000, 0x3000]
    assert exposed_header_pages(chunks[:0], leaked[:0]).tolist() == []


_LATE_HANDSHAKE_C = r"""
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 1;
	printf("made\n");
	fflush(stdout);
	char c;
	if (read(0, &c, 1) != 1 || c != 'h')     /* anything else: never make the handshake */
		return pause(), 0;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE |
		UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
		UFFD_FEATURE_EVENT_FORK };
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return 2;
	printf("api\n");
	fflush(stdout);
	pause();
	return 0;
}
"""


def test_pager_waits_for_the_helpers_handshake(tmp_path):
    """A pager that finds the helper's userfaultfd before its UFFDIO_API handshake (features
    0 in fdinfo) waits for it rather than say the kernel lacks the features (a CI failure);
    a descriptor that never gets the handshake is that error once the wait is over."""
    import threading
    from mappedtrace.farmem.pager import FarMemError, wait_uffd
    if not have_c_compiler():
        pytest.skip("no C compiler")
    if not _uffd_ok():
        pytest.skip("userfaultfd needs root or vm.unprivileged_userfaultfd=1 here")
    src = tmp_path / "late.c"
    src.write_text(_LATE_HANDSHAKE_C)
    exe = tmp_path / "late"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    for handshake in (True, False):
        p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline() == "made\n"
            got: list = []
            t = threading.Thread(target=lambda: got.append(_try(wait_uffd, p.pid, timeout=2 if handshake else 0.5)))
            t.start()
            time.sleep(0.3)                 # the waiter has seen the descriptor without features
            assert t.is_alive()
            if handshake:
                p.stdin.write("h")
                p.stdin.flush()
                assert p.stdout.readline() == "api\n"
            t.join(10)
            if handshake:
                fdnum, features = got[0]
                assert fdnum >= 3 and features, got
            else:
                assert isinstance(got[0], FarMemError) and "lacks" in str(got[0]), got
        finally:
            p.kill()
            p.wait()


def _try(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception as e:                  # noqa: BLE001 - the test looks at what was raised
        return e
