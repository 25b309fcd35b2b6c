"""Shared parts of the hostile-input suite (issue #12).

Every case runs the real ``mappedtrace`` command in a subprocess with a
timeout (a hang fails the test instead of stalling the suite) and checks the
same things: a non-zero exit code that is not 70 (an internal error), one
``mappedtrace: error:`` line and no traceback, a target that still runs and
computes what it computed untraced, and no file written that was not asked for.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import atexit
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, need, run_mt

#: seconds any single bad-input command may take
TIMEOUT = 60
#: exit code of an internal error (a bug): never expected here
INTERNAL = 70


def mt(*args: str, timeout: float = TIMEOUT, cwd: str | None = None) -> subprocess.CompletedProcess:
    """``mappedtrace ARGS`` with a timeout (a hang raises TimeoutExpired)."""
    if cwd is None:
        return run_mt(*args, timeout=timeout)
    e = dict(os.environ, COLUMNS="120")
    return subprocess.run([MAPPEDTRACE, *args], capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess, code: int | None = 2, *, says: str | None = None) -> str:
    """Check ``r`` failed with exactly one error line (and at most a hint); return it."""
    assert r.returncode != 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert r.returncode != INTERNAL, r.stderr[-2000:]
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errs = [l for l in r.stderr.splitlines() if l.startswith("mappedtrace: error:")]
    assert len(errs) == 1, r.stderr[-3000:]
    others = [l for l in r.stderr.splitlines()
              if not l.startswith(("mappedtrace: error:", "mappedtrace: hint:", "mappedtrace: warning:"))]
    assert not others, r.stderr[-3000:]
    if says is not None:
        assert says.lower() in errs[0].lower(), errs[0]
    return errs[0]


_TMP = Path(tempfile.mkdtemp(prefix="mt-hostile-"))
atexit.register(shutil.rmtree, _TMP, True)


@functools.cache
def server_exe() -> Path:
    """samples/leaky_server.c built with ``mappedtrace cc`` (maps), once per session."""
    need("clang-22")
    out = _TMP / "leaky_server"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-o", str(out), str(SAMPLES / "leaky_server.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@functools.cache
def plain_server_exe() -> Path:
    """The same program built with plain clang-22: no maps."""
    need("clang-22")
    out = _TMP / "leaky_server_plain"
    subprocess.run(["clang-22", "-O2", "-g", "-o", str(out), str(SAMPLES / "leaky_server.c")],
                   check=True, timeout=300)
    return out


class Server:
    """A running leaky_server: prints its leaks' truth on stderr, "ready" on
    stdout, then computes a checksum until stdin closes."""

    def __init__(self, exe: Path):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True)
        assert self.p.stdout.readline().strip() == "ready"
        self.pid = self.p.pid

    def running(self) -> bool:
        from mappedtrace.target.live import process_state
        return self.p.poll() is None and process_state(self.pid) in ("R", "S")

    def finish(self, feed: int = 3) -> str:
        """Let it end; its output (a checksum over its data)."""
        self.p.stdin.write("x" * feed)
        self.p.stdin.close()
        out = self.p.stdout.read()
        assert self.p.wait(timeout=60) == 0
        return out

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.err.close()


@functools.cache
def reference_output() -> str:
    """The server's output when nothing traces it."""
    s = Server(server_exe())
    try:
        return s.finish()
    finally:
        s.kill()


@functools.cache
def server_core() -> Path:
    """A snapshot of a running leaky_server (taken by the CLI), once per session."""
    s = Server(server_exe())
    try:
        path = _TMP / "server.core"
        r = mt("snapshot", str(s.pid), "-o", str(path))
        assert r.returncode == 0, r.stderr
        assert s.running()
        s.finish()
    finally:
        s.kill()
    return path


@pytest.fixture
def server():
    """A running leaky_server, checked to run on unharmed and killed at the end."""
    s = Server(server_exe())
    try:
        yield s
        assert s.running(), "the target stopped running"
        assert s.finish() == reference_output(), "the target computed something else"
    finally:
        s.kill()


def files_in(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}
