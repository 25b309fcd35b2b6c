"""`mappedtrace leaks PID`, `mappedtrace graph`, and their bad inputs, on a live process."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, run_mt

TRUTH = re.compile(r"truth leak (0x[0-9a-f]+) (\d+) (\w+)")


@pytest.fixture(scope="module")
def server_exe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("server") / "leaky_server"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-o", str(out), str(SAMPLES / "leaky_server.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def start(exe: Path, errfile: Path) -> subprocess.Popen:
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(errfile, "w"), text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def finish(p: subprocess.Popen, feed: int = 3) -> str:
    p.stdin.write("x" * feed)
    p.stdin.close()
    out = p.stdout.read()
    assert p.wait(timeout=60) == 0
    return out


def test_leaks_of_a_live_process_exact_and_target_unharmed(server_exe: Path, tmp_path: Path) -> None:
    # untraced reference run
    ref = start(server_exe, tmp_path / "ref.err")
    expected = finish(ref)
    p = start(server_exe, tmp_path / "err")
    try:
        js = tmp_path / "leaks.json"
        r = run_mt("leaks", str(p.pid), "--json", str(js))
        assert r.returncode == 23, r.stderr
        assert "Traceback" not in r.stderr
        truth = {int(a, 16): (int(s), k) for a, s, k in TRUTH.findall((tmp_path / "err").read_text())}
        rep = json.loads(js.read_text())
        got = {int(l["address"], 16) if isinstance(l["address"], str) else l["address"]: l for l in rep["leaks"]}
        assert set(got) == set(truth)
        for a, (size, kind) in truth.items():
            assert got[a]["kind"] == kind and got[a]["size"] == size
        assert {got[a]["type"] for a in truth if truth[a][0] < 64} == {"struct session"}
        assert oct(os.stat(js).st_mode & 0o777) == "0o600"
        # the process runs on, exactly as before
        state = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
        assert state in ("S", "R")
        assert finish(p) == expected
    finally:
        p.kill()


def _without_timings(rep: dict) -> dict:
    rep = dict(rep, precision={k: v for k, v in rep["precision"].items() if not k.endswith("_s")})
    rep.pop("capture", None)
    return rep


def test_fork_capture_gives_the_stop_copy_answer(server_exe: Path, tmp_path: Path) -> None:
    """A live process is paused only to capture it (fork by default), and the
    analysis of the copy is the analysis of the stopped process: the leak
    JSON of both modes is the same but for timings (the server is blocked in
    a read, so nothing changes between the two captures)."""
    ref = start(server_exe, tmp_path / "ref.err")
    expected = finish(ref)
    p = start(server_exe, tmp_path / "err")
    try:
        reps = {}
        for mode in (None, "stop-copy", "fork"):
            js = tmp_path / f"{mode}.json"
            r = run_mt("leaks", str(p.pid), *(["--mode", mode] if mode else []), "--json", str(js))
            assert r.returncode == 23, r.stderr
            assert re.search(r"process paused [0-9.]+ ms to capture it \((fork|stop-copy)", r.stdout), r.stdout
            rep = json.loads(js.read_text())
            c = rep["capture"]
            assert c["mode"] == (mode or "fork") and "fallback" not in c, c
            assert 0 < c["pause_ms"] < 60_000 and c["captured_bytes"] > 0, c
            reps[mode] = _without_timings(rep)
        assert reps["stop-copy"]["summary"]["leaked_objects"] > 0
        assert reps[None] == reps["stop-copy"] == reps["fork"]
        assert finish(p) == expected
    finally:
        p.kill()


def test_graph_export_json_and_dot(server_exe: Path, tmp_path: Path) -> None:
    p = start(server_exe, tmp_path / "err")
    try:
        for ext in ("json", "dot"):
            out = tmp_path / f"g.{ext}"
            r = run_mt("graph", str(p.pid), "-o", str(out))
            assert r.returncode == 0, r.stderr
            text = out.read_text()
            if ext == "json":
                g = json.loads(text)
                assert g["nodes"] and "edges" in g and "precision" in g
                assert g["capture"]["mode"] == "fork" and g["capture"]["pause_ms"] > 0
                assert "process paused" in r.stderr
            else:
                assert text.startswith("digraph")
        finish(p)
    finally:
        p.kill()


def test_bad_pid_and_bad_file_are_one_line_errors(tmp_path: Path) -> None:
    r = run_mt("leaks", "999999999")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "999999999" in r.stderr
    bogus = tmp_path / "bogus.core"
    bogus.write_bytes(b"\x7fELF" + os.urandom(200))
    r = run_mt("leaks", str(bogus))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len([l for l in r.stderr.splitlines() if l.startswith("mappedtrace: error")]) == 1
    r = run_mt("leaks", str(tmp_path / "missing"))
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_run_reports_program_exit_code_when_no_leaks(tmp_path: Path) -> None:
    r = run_mt("run", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    r = run_mt("run", "--", str(tmp_path / "nonexistent"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "cannot run" in r.stderr


def test_leaks_says_when_fork_is_impossible(tmp_path: Path) -> None:
    """A process under seccomp is never forked: captured with stop-copy, and the
    report says so (stderr warning, the capture line, ``capture.fallback``)."""
    exe = tmp_path / "snap_seccomp"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O1", "-o", str(exe), str(SAMPLES / "snap_seccomp.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("ready")
        js = tmp_path / "l.json"
        r = run_mt("leaks", str(p.pid), "--json", str(js))
        assert r.returncode in (0, 23), r.stderr
        c = json.loads(js.read_text())["capture"]
        assert c["mode"] == "stop-copy" and "seccomp" in c["fallback"], c
        assert "seccomp" in r.stderr and "captured with stop-copy" in r.stdout.replace("\n", " ")
        p.stdin.write("x\n")
        p.stdin.close()
        assert p.stdout.read().strip() == "bye" and p.wait(timeout=30) == 0
    finally:
        p.kill()


def test_python_api_capture(server_exe: Path, tmp_path: Path) -> None:
    """``mappedtrace.capture(pid)``: the copy is analysed while the process runs."""
    import mappedtrace
    from mappedtrace.session import analyse
    p = start(server_exe, tmp_path / "err")
    try:
        with mappedtrace.capture(p.pid) as t:
            assert t.meta["mode"] == "fork" and t.meta["pause_ns"] > 0
            state = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
            assert state in ("S", "R")          # not held while its copy is read
            a = analyse(t)
        truth = {int(a_, 16) for a_, _s, _k in TRUTH.findall((tmp_path / "err").read_text())}
        assert {l.address for l in a.leaks.leaks} == truth
        assert a.leaks.capture["mode"] == "fork" and a.graph.capture == a.leaks.capture
        finish(p)
    finally:
        p.kill()
