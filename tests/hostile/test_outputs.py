"""Every file the tool writes is private and put in place atomically (issue #12 item 1).

Each writer (``leaks --json``, ``run --json``, ``graph -o`` as JSON and dot,
``snapshot -o``) is run against a planted symlink (its old target must stay
untouched), a pre-existing 0644 file and a file owned by another user (both
must end as a new file of ours, mode 0600), and pointed at a directory or into
a directory that does not exist (one-line error, exit 2, nothing written).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from _hostile import files_in, mt, one_line_error, server, server_core  # noqa: F401 (fixture)

WRITERS = ["leaks-json", "graph-json", "graph-dot", "run-json", "snapshot"]


def _write(writer: str, out: Path | str, pid: int | None) -> subprocess.CompletedProcess:
    if writer == "leaks-json":
        return mt("leaks", str(server_core()), "--json", str(out))
    if writer == "graph-json" or writer == "graph-dot":
        return mt("graph", str(server_core()), "-o", str(out))
    if writer == "run-json":
        return mt("run", "--json", str(out), "--", "true")
    assert pid is not None
    return mt("snapshot", str(pid), "-o", str(out))


def _name(writer: str) -> str:
    return {"graph-dot": "out.dot", "snapshot": "out.core"}.get(writer, "out.json")


def _check_written(writer: str, out: Path) -> None:
    st = os.lstat(out)
    assert stat.S_ISREG(st.st_mode), "the output is not a regular file (a symlink was followed?)"
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == os.geteuid()
    data = out.read_bytes()
    if writer.endswith("json"):
        json.loads(data)
    elif writer == "graph-dot":
        assert data.startswith(b"digraph")
    else:
        assert data.startswith(b"\x7fELF")


def _needs_pid(writer: str, request) -> int | None:
    if writer != "snapshot":
        return None
    return request.getfixturevalue("server").pid


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("plant", ["symlink", "file-0644", "other-owner"])
def test_writer_replaces_what_was_planted(writer: str, plant: str, tmp_path: Path, request) -> None:
    out = tmp_path / _name(writer)
    victim = tmp_path / "victim"
    victim.write_text("not yours\n")
    os.chmod(victim, 0o644)
    if plant == "symlink":
        out.symlink_to(victim)
    else:
        out.write_text("old\n")
        os.chmod(out, 0o644)
        if plant == "other-owner":
            if os.geteuid() != 0:
                pytest.skip("needs root to make a file owned by another user")
            os.chown(out, 65534, 65534)
    pid = _needs_pid(writer, request)
    r = _write(writer, out, pid)
    assert r.returncode in (0, 23), r.stderr[-3000:]
    _check_written(writer, out)
    assert victim.read_text() == "not yours\n" and stat.S_IMODE(os.stat(victim).st_mode) == 0o644
    # no temporary file left behind, nothing else written
    assert files_in(tmp_path) == {out.name, "victim"}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("where", ["directory", "missing-directory", "trailing-slash"])
def test_writer_into_a_directory_is_a_one_line_error(writer: str, where: str, tmp_path: Path, request) -> None:
    d = tmp_path / ("d.dot" if writer == "graph-dot" else "d.json")   # graph checks the suffix too
    d.mkdir()
    out = {"directory": str(d), "missing-directory": str(tmp_path / "no" / "such" / _name(writer)),
           "trailing-slash": str(tmp_path / _name(writer)) + "/"}[where]
    pid = _needs_pid(writer, request)
    before = files_in(tmp_path)
    r = _write(writer, out, pid)
    one_line_error(r, 2)
    assert files_in(tmp_path) == before
    assert not any(d.iterdir())


def test_write_private_unit(tmp_path: Path) -> None:
    """The one function every writer uses: symlink replaced, mode 0600, an
    exception in the writer leaves the old file and no temporary."""
    from mappedtrace.errors import MappedTraceError
    from mappedtrace.fileio import write_private
    victim = tmp_path / "victim"
    victim.write_text("v")
    out = tmp_path / "o"
    out.symlink_to(victim)
    with write_private(str(out)) as f:
        f.write("new")
    assert not out.is_symlink() and out.read_text() == "new" and victim.read_text() == "v"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError):
        with write_private(str(out)) as f:
            f.write("half")
            raise RuntimeError("writer failed")
    assert out.read_text() == "new" and files_in(tmp_path) == {"o", "victim"}
    with pytest.raises(MappedTraceError):
        with write_private(str(tmp_path)):
            pass
