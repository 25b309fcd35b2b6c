"""The command line: help, one-line errors, doctor (issue #2)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from conftest import run_mt

DESIGN_COMMANDS = ["cc", "rustc", "run", "snapshot", "leaks", "maps", "graph", "doctor"]


def test_help_lists_every_design_command():
    r = run_mt("--help")
    assert r.returncode == 0
    for c in DESIGN_COMMANDS:
        assert f"\n  {c} " in r.stdout, c


def test_unknown_command_is_a_clear_error():
    r = run_mt("frobnicate")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "frobnicate" in r.stderr


def test_doctor_ready_on_this_machine():
    r = run_mt("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ready" in r.stdout
    assert "clang-22" in r.stdout and "pass plugin" in r.stdout


def test_doctor_names_missing_clang_with_a_fix():
    # A PATH with every tool of the machine except the LLVM 22 ones.
    with tempfile.TemporaryDirectory() as d:
        for name in ("python3", "cmake", "lldb-22", "rustc", "sh"):
            p = shutil.which(name)
            if p and "22" not in name:
                os.symlink(p, Path(d) / name)
        r = run_mt("doctor", env={"PATH": d})
    assert r.returncode == 1
    line = next(l for l in r.stdout.splitlines() if "clang-22:" in l)
    assert "MISSING" in line and "apt-get install" in line and "clang-22" in line
    assert "not ready" in r.stderr
    assert "Traceback" not in r.stderr
