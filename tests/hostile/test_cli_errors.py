"""Bad command lines and bad PIDs (issue #12 item 4, and the cases that held).

Click's usage errors are one line and a hint like every other error; bad
PIDs, a target whose maps are corrupted and bad output paths against a live
target each give one line, exit 2, and leave the target running exactly as
before; nothing is written that was not asked for.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import mapgen as mg
from _hostile import Server, mt, one_line_error, server, server_exe  # noqa: F401 (fixture)
from conftest import need
from mappedtrace.formats import elf

USAGE_ERRORS = {
    "negative-pid": (["leaks", "-1"], "invalid PID -1"),
    "pid-not-a-number": (["snapshot", "abc", "-o", "F"], "'abc' is not a valid integer"),
    "missing-argument": (["leaks"], "Missing argument"),
    "missing-output": (["snapshot", "1"], "Missing option '-o'"),
    "graph-missing-output": (["graph", "1"], "Missing option '-o'"),
    "unknown-command": (["frobnicate"], "No such command"),
    "bad-choice": (["leaks", "--roots", "x", "1"], "'x' is not one of"),
    "bad-mode": (["snapshot", "1", "-o", "F", "--mode", "x"], "'x' is not one of"),
    "run-nothing": (["run"], "Missing argument"),
    "bad-width": (["leaks", "--width", "wide", "1"], "'wide' is not a valid integer"),
    "max-steps-range": (["snapshot", "1", "-o", "F", "--max-steps", "-5"], "-5"),
    "unknown-option": (["graph", "--frobnicate", "1", "-o", "F.json"], "No such option"),
    "option-needs-value": (["leaks", "--json"], "requires an argument"),
    "output-needs-value": (["snapshot", "5", "-o"], "requires an argument"),
}


@pytest.mark.parametrize("name", list(USAGE_ERRORS))
def test_usage_error_is_one_line_with_a_hint(name: str, tmp_path: Path) -> None:
    args, says = USAGE_ERRORS[name]
    r = mt(*args, cwd=str(tmp_path))
    one_line_error(r, 2, says=says)
    assert "Usage:" not in r.stderr and "Try '" not in r.stderr
    hints = [l for l in r.stderr.splitlines() if l.startswith("mappedtrace: hint:")]
    assert len(hints) == 1 and "--help" in hints[0], r.stderr
    if args[0] != "frobnicate":
        assert f"'mappedtrace {args[0]} --help'" in hints[0], hints[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--help"], ["leaks", "--help"], ["snapshot", "-h"], []])
def test_help_keeps_its_usage_block(args: list[str]) -> None:
    r = mt(*args)
    if not args:        # bare 'mappedtrace': click shows the help (on stderr, exit 2 with click 8.2)
        assert "Usage: mappedtrace" in r.stdout + r.stderr and "Commands:" in r.stdout + r.stderr
        return
    assert r.returncode == 0 and r.stdout.startswith("Usage: mappedtrace") and r.stderr == ""


def _kernel_thread() -> int | None:
    for d in sorted(os.listdir("/proc"), key=lambda x: (len(x), x)):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/exe"):
                    continue
            except FileNotFoundError:
                return int(d)        # no executable: a kernel thread
            except OSError:
                continue
    return None


@pytest.mark.parametrize("pid", ["0", "999999999", "4194304", "99999999999999999999999", "kthread"])
@pytest.mark.parametrize("cmd", ["leaks", "snapshot", "graph"])
def test_bad_pid(pid: str, cmd: str, tmp_path: Path) -> None:
    if pid == "kthread":
        kt = _kernel_thread()
        if kt is None:
            pytest.skip("no kernel thread visible in /proc here")
        pid = str(kt)
    out = {"leaks": [], "snapshot": ["-o", str(tmp_path / "x.core")], "graph": ["-o", str(tmp_path / "g.json")]}[cmd]
    one_line_error(mt(cmd, pid, *out), 2)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["snapshot", "{pid}", "-o", "{tmp}/no/such/dir/x.core"],
    ["snapshot", "{pid}", "-o", "{tmp}"],
    ["leaks", "{pid}", "--json", "{tmp}/missing/l.json"],
    ["graph", "{pid}", "-o", "{tmp}/g.txt"],
    ["snapshot", "{pid}", "-o", "{tmp}/x.core", "--backend", "lldb", "--mode", "fork"],
])
def test_bad_output_leaves_the_target_running(args: list[str], server, tmp_path: Path) -> None:  # noqa: F811
    r = mt(*(a.format(pid=server.pid, tmp=tmp_path) for a in args))
    one_line_error(r, 2)
    assert server.running()
    assert not any(tmp_path.iterdir())
    # the `server` fixture checks the target then computes what it computes untraced


def test_corrupted_maps_of_a_live_target(tmp_path: Path) -> None:
    """A running program whose .mtmap is corrupted (it does not read it): the
    tracer refuses it in one line naming section and offset; the program runs on."""
    need("llvm-objcopy-22")
    good = str(server_exe())
    b = bytearray(elf.section_bytes(good, ".mtmap"))
    struct.pack_into("<H", b, 4, 7)                     # .mtmap version 7
    bad = mg.replace_section(good, ".mtmap", bytes(b), tmp_path / "bad_server")
    os.chmod(bad, 0o755)
    s = Server(bad)
    try:
        for args in (["leaks", str(s.pid)], ["graph", str(s.pid), "-o", str(tmp_path / "g.json")],
                     ["maps", str(bad)]):
            line = one_line_error(mt(*args), 2, says=".mtmap version 7 is not supported")
            assert f"{bad}: .mtmap+0x4" in line, line
            assert s.running()
        assert not (tmp_path / "g.json").exists()
        assert s.finish()
    finally:
        s.kill()
