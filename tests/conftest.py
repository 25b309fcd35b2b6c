"""Shared fixtures: paths, building sample programs at test time, running targets."""
from __future__ import annotations

import json
import os
import re
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


def need(*tools: str) -> None:
    """Skip the test unless this host has every tool: a name on PATH (an LLVM
    ``x-22`` also in /usr/lib/llvm-22/bin), or ``"cc"`` for any C compiler."""
    def ok(t: str) -> bool:
        if t == "cc":
            return have_c_compiler()
        return have(t) or (t.endswith("-22") and os.access(f"/usr/lib/llvm-22/bin/{t[:-3]}", os.X_OK))
    missing = [t for t in tools if not ok(t)]
    if missing:
        pytest.skip(f"not installed on this host: {', '.join('a C compiler' if t == 'cc' else t for t in missing)}")


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


def missing_llvm() -> str | None:
    """Why this host cannot build the pass plugin (None when it can)."""
    for tool in ("clang-22", "clang++-22", "cmake"):
        if not have(tool):
            return f"{tool} is not installed"
    if not Path("/usr/lib/llvm-22/lib/cmake/llvm").is_dir():
        return "llvm-22-dev is not installed"
    return None


def damon_unavailable() -> str | None:
    """Why the far-memory pager cannot run a DAMON context here (None when it can): a kernel
    without DAMON's sysfs or virtual-address monitoring, or DAMON held by another monitor of
    the machine (read-only probe, :func:`mappedtrace.farmem.access.probe`)."""
    from mappedtrace.farmem.access import probe
    from mappedtrace.farmem.pager import state_dir
    return probe(state_dir())


def have_c_compiler() -> bool:
    return any(have(c) for c in ("cc", "gcc", "clang"))


def build_sample(src: Path, opt: str, out: Path, env: dict | None = None) -> str:
    """Build a C or Rust sample with ``mappedtrace cc``/``rustc`` at ``opt``
    (``-O0``, ``-O2``…) and ``-g``, ``env`` added to the environment; a failed
    build fails the test."""
    if src.suffix == ".rs":
        need("rustc")
        cmd = [sys.executable, "-m", "mappedtrace", "rustc", "-C", f"opt-level={opt.lstrip('-O')}", "-g",
               "-o", str(out), str(src)]
    else:
        cmd = [sys.executable, "-m", "mappedtrace", "cc", opt, "-g", "-o", str(out), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=out.parent,
                       env=dict(os.environ, **env) if env else None)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[3:])} failed ({r.returncode}):\n{r.stderr.strip()}")
    return str(out)


def lldb_or_skip():
    """LLDB's Python module (and its lldb-server), or a skip naming what this
    host lacks."""
    from mappedtrace.errors import ToolchainError
    from mappedtrace.toolchain import import_lldb
    try:
        lldb = import_lldb()
    except ToolchainError as e:
        pytest.skip(f"LLDB Python module unavailable: {e.message}")
    if not os.environ.get("LLDB_DEBUGSERVER_PATH"):
        pytest.skip("lldb-server-22 is not installed")
    return lldb


def require_plugin() -> str:
    """Path of the pass plugin, built on first use.  Skips only on a host
    without the LLVM 22 toolchain; a build failure there fails the test."""
    why = missing_llvm()
    if why:
        pytest.skip(f"the pass plugin cannot be built here: {why}")
    from mappedtrace import toolchain as tc
    return str(tc.plugin_path(quiet=True))


@pytest.fixture(scope="session")
def plugin() -> str:
    """Path of the pass plugin (see :func:`require_plugin`)."""
    return require_plugin()


#: where scripts/fetch_sources.sh (run by setup) puts the Debian sources of sqlite3 and lua5.4
SRC = Path(os.environ.get("MAPPEDTRACE_SRC", Path.home() / ".cache" / "mappedtrace" / "src"))


def source_tree(prefix: str) -> Path:
    """The unpacked Debian source tree ``prefix-*`` from :data:`SRC`; skips when
    this host could not fetch it (no deb-src line, no network)."""
    found = sorted(SRC.glob(f"{prefix}-*/")) if SRC.is_dir() else []
    found = [d for d in found if (d / "debian").is_dir()]
    if not found:
        pytest.skip(f"{prefix} sources not in {SRC}: run scripts/fetch_sources.sh "
                    "(copies /work/srcpkgs or uses apt-get source when deb-src is enabled)")
    return found[-1]


#: what a corpus program says about itself on stderr (tests/leak_corpus/truth.h)
TRUTH = re.compile(r"truth (leak|kept) (0x[0-9a-f]+)(?: (\d+) (\w+))?")


def addr(x) -> int:
    """An address from the leak JSON (an int, or a hex string)."""
    return x if isinstance(x, int) else int(x, 16)


def truth_of(stderr: str) -> tuple[dict, set]:
    """What a program printed about itself (tests/leak_corpus/truth.h): truth
    {addr: (size, kind)} of its leaks, and the addresses it keeps."""
    truth, kept = {}, set()
    for kind, a, size, how in TRUTH.findall(stderr):
        if kind == "leak":
            truth[int(a, 16)] = (int(size), how)
        else:
            kept.add(int(a, 16))
    return truth, kept


def run_traced(exe: Path, tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict, dict, set]:
    """``mappedtrace run --json`` on a corpus program: (process, report, truth
    {addr: (size, kind)}, kept addresses), the truth read from its stderr."""
    js = tmp / f"{exe.name}{'-'.join(extra)}.json"
    r = subprocess.run([MAPPEDTRACE, "run", "--json", str(js), *extra, "--", str(exe)],
                       capture_output=True, text=True, timeout=300)
    truth, kept = truth_of(r.stderr)
    assert js.exists(), r.stderr[-3000:]
    return r, json.loads(js.read_text()), truth, kept



def assert_exact(report: dict, truth: dict, kept: set, context: str = "") -> None:
    """The leak report names exactly the leaked objects the program printed
    (:func:`run_traced`'s truth), with their sizes and kinds, and none it kept."""
    reported = {addr(l["address"]): l for l in report["leaks"]}
    missed = sorted(set(truth) - set(reported))
    false = sorted(set(reported) - set(truth))
    assert not missed and not false, (
        f"missed {[hex(a) for a in missed]}, false reports "
        f"{[(hex(a), reported[a]['size'], reported[a]['type']) for a in false]}\n{context}")
    for a, (size, how) in truth.items():
        assert reported[a]["kind"] == how, (hex(a), reported[a], how)
        assert reported[a]["size"] == size
    assert not kept & set(reported)
