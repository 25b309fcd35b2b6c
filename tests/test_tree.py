"""``--tree PID``: a pre-fork server's master and workers, each checked.

samples/prefork_server.c prints, per process, the leaks it made (a worker's
include the two it inherited from the master's heap) and its role; every
worker grows its heap after fork.  ``leaks --tree`` must give each process's
report exactly, and a summary; a worker that exits while the master is being
checked is reported gone, not as an error for the others.
"""
from __future__ import annotations

import json
import subprocess
import signal
import os
import stat
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, build_sample, require_plugin, run_mt
from test_heap_glibc import Program, _need_trace

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server_exe(tmp_path_factory) -> Path:
    _need_trace()
    require_plugin()
    d = tmp_path_factory.mktemp("prefork")
    return Path(build_sample(SAMPLES / "prefork_server.c", "-O1", d / "prefork_server"))


class Server:
    """The server, started and read: ``truth`` pid → {addr: usable}, ``roles`` pid → role."""

    def __init__(self, exe: Path, *args: str):
        self.prog = Program(exe, *args)
        self.truth: dict[int, dict[int, int]] = defaultdict(dict)
        self.roles: dict[int, str] = {}
        for line in self.prog.lines:
            pid, what, *rest = line.split()
            if what == "leak":
                self.truth[int(pid)][int(rest[0], 16)] = int(rest[1])
            elif what == "role":
                self.roles[int(pid)] = rest[0]
        self.master = next(p for p, r in self.roles.items() if r == "master")
        assert self.master == self.prog.pid

    def pids(self, role: str) -> set[int]:
        return {p for p, r in self.roles.items() if r == role}

    def close(self) -> None:
        self.prog.close()


def _leaks(report: dict) -> dict[int, int]:
    return {(l["address"] if isinstance(l["address"], int) else int(l["address"], 16)): l["size"]
            for l in report["leaks"]}


def test_tree_reports_every_process_exactly(server_exe, tmp_path):
    srv = Server(server_exe, "3")
    try:
        workers = srv.pids("worker")
        assert len(workers) == 3
        js = tmp_path / "tree.json"
        r = run_mt("leaks", "--tree", str(srv.master), "--json", str(js))
        assert r.returncode == 23, r.stderr[-3000:]
        assert stat.S_IMODE(os.stat(js).st_mode) == 0o600
        doc = json.loads(js.read_text())
        procs = {p["pid"]: p for p in doc["processes"]}
        assert set(procs) == {srv.master} | workers
        assert doc["processes"][0]["pid"] == srv.master             # parents first
        for pid, p in procs.items():
            assert "error" not in p, p
            assert p["ppid"] == (srv.master if pid in workers else os.getpid())
            assert os.path.basename(p["exe"]) == server_exe.name
            assert _leaks(p["report"]) == srv.truth[pid], pid      # every report exact
        # each worker: its own leaks (1, 2, 3 of them) plus the two inherited from the master
        assert sorted(len(srv.truth[w]) for w in workers) == [3, 4, 5] and len(srv.truth[srv.master]) == 3
        s = doc["summary"]
        assert (s["processes"], s["analysed"], s["gone"], s["failed"]) == (4, 4, 0, 0)
        assert s["leaked_objects"] == sum(len(t) for t in srv.truth.values()) == 15
        assert s["leaked_bytes"] == sum(sum(t.values()) for t in srv.truth.values())
        assert s["processes_with_leaks"] == 4
        # the rich report: a header per process and the summary table
        for pid in procs:
            assert f"process {pid} (" in r.stdout
        assert f"process tree of {srv.master}: 4 processes, 15 leaked objects" in r.stdout
        # --json - : only the JSON document on stdout
        r2 = run_mt("leaks", "--tree", str(srv.master), "--json", "-")
        assert r2.returncode == 23 and json.loads(r2.stdout)["summary"]["leaked_objects"] == 15
        assert srv.prog.p.poll() is None and all(os.path.exists(f"/proc/{w}") for w in workers)
    finally:
        srv.close()


def test_tree_child_gone_during_the_check(server_exe, tmp_path):
    """A worker exits while the master (checked first) is stopped: reported gone, the rest exact."""
    srv = Server(server_exe, "2", "vanish")
    try:
        gone = srv.pids("vanish")
        assert len(gone) == 1
        js = tmp_path / "tree.json"
        (g,) = gone
        # The vanishing worker exits when it sees the master stopped; a fork
        # capture stops it for milliseconds, which a loaded machine may not
        # schedule the worker in.  So the test also kills it once the master's
        # report is out (the workers come after the master, the vanisher last).
        err = open(tmp_path / "err", "w+")
        p = subprocess.Popen([MAPPEDTRACE, "leaks", "--tree", str(srv.master), "--json", str(js)],
                             stdout=subprocess.PIPE, stderr=err, text=True,
                             env=dict(os.environ, COLUMNS="120"))
        for line in p.stdout:
            if f"process {srv.master} (" in line:
                try:
                    os.kill(g, signal.SIGKILL)
                except ProcessLookupError:
                    pass                    # it saw the stop and went by itself
                break
        p.stdout.read()
        rc = p.wait(timeout=300)
        err.seek(0)
        r = subprocess.CompletedProcess(p.args, rc, "", err.read())
        assert r.returncode == 23, r.stderr[-3000:]
        doc = json.loads(js.read_text())
        procs = {p["pid"]: p for p in doc["processes"]}
        assert procs[g]["gone"] is True and "exited" in procs[g]["error"] and "report" not in procs[g]
        for pid in srv.pids("worker") | {srv.master}:
            assert _leaks(procs[pid]["report"]) == srv.truth[pid]
        s = doc["summary"]
        assert (s["processes"], s["analysed"], s["gone"], s["failed"]) == (4, 3, 1, 0)
        assert "internal error" not in r.stderr and f"process {g}:" not in r.stderr   # not an error
    finally:
        srv.close()


def test_snapshot_and_graph_tree(server_exe, tmp_path):
    """One file per process: '{pid}' in -o, or '.PID' before the suffix."""
    srv = Server(server_exe, "2")
    try:
        everyone = srv.pids("worker") | {srv.master}
        r = run_mt("snapshot", str(srv.master), "--tree", "-o", str(tmp_path / "snap.core"), "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        assert {p["pid"] for p in doc["processes"]} == everyone and doc["summary"]["analysed"] == 3
        for pid in everyone:
            f = tmp_path / f"snap.{pid}.core"
            assert f.exists() and stat.S_IMODE(os.stat(f).st_mode) == 0o600
        # a worker's snapshot gives that worker's leaks
        w = min(srv.pids("worker"))
        js = tmp_path / "w.json"
        r = run_mt("leaks", str(tmp_path / f"snap.{w}.core"), "--json", str(js))
        assert r.returncode == 23 and _leaks(json.loads(js.read_text())) == srv.truth[w]
        # a directory: DIR/PID.core
        (tmp_path / "d").mkdir()
        r = run_mt("snapshot", str(srv.master), "--tree", "-o", str(tmp_path / "d"))
        assert r.returncode == 0, r.stderr[-3000:]
        assert sorted(os.listdir(tmp_path / "d")) == sorted(f"{pid}.core" for pid in everyone)
        assert f"process tree of {srv.master}: 3 processes" in r.stdout
        r = run_mt("graph", str(srv.master), "--tree", "-o", str(tmp_path / "g-{pid}.json"))
        assert r.returncode == 0, r.stderr[-3000:]
        for pid in everyone:
            g = json.loads((tmp_path / f"g-{pid}.json").read_text())
            assert g
        assert f"process tree of {srv.master}: 3 processes" in r.stdout
    finally:
        srv.close()


def test_tree_needs_a_pid(tmp_path):
    f = tmp_path / "x.core"
    f.write_bytes(b"\x7fELF")
    for args in (["leaks", "--tree", str(f)], ["graph", "--tree", str(f), "-o", str(tmp_path / "g.json")]):
        r = run_mt(*args)
        assert r.returncode == 2 and r.stderr.startswith("mappedtrace: error: --tree needs the PID"), r.stderr
    r = run_mt("leaks", "--tree", "999999999")
    assert r.returncode == 2 and "no process with PID 999999999" in r.stderr and "\n" not in r.stderr.split("\n")[0]
