"""Shared fixtures: paths, building sample programs at test time, running targets."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
VENV_BIN = Path(sys.executable).parent
MAPPEDTRACE = str(VENV_BIN / "mappedtrace") if (VENV_BIN / "mappedtrace").exists() else "mappedtrace"


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


@pytest.fixture(scope="session")
def mt_cmd() -> list[str]:
    """The mappedtrace command line as installed in this environment."""
    return [MAPPEDTRACE]


def run_mt(*args: str, check: bool = False, env: dict | None = None, timeout: float = 300,
           input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``mappedtrace ARGS`` and capture its output."""
    e = dict(os.environ)
    e.setdefault("COLUMNS", "120")
    if env:
        e.update(env)
    return subprocess.run([MAPPEDTRACE, *args], capture_output=True, text=True, env=e,
                          timeout=timeout, check=check, input=input)


def real_map_warnings(bm) -> list[str]:
    """Decoder warnings except the expected ones: LLVM repeats spilled deopt
    values as GC pointer pairs (FORMAT.md §1), not a defect of the maps."""
    return [w for w in bm.warnings if "GC pointer locations" not in w]


@pytest.fixture(scope="session")
def plugin() -> str:
    """Path of the pass plugin (built on first use); skips where it cannot be built."""
    from mappedtrace import toolchain as tc
    try:
        return str(tc.plugin_path(quiet=True))
    except Exception as e:  # host without llvm-22-dev
        pytest.skip(f"pass plugin cannot be built here: {e}")
