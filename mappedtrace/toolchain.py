"""Finding the LLVM 22 toolchain and building the pass plugin on first use.

The plugin is built from ``llvm_pass/`` with CMake into a cache directory
keyed by a hash of its sources (``$MAPPEDTRACE_CACHE`` or
``~/.cache/mappedtrace``), so a user never runs cmake by hand and an edited
pass is rebuilt automatically.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ToolchainError

LLVM_VERSION = 22
LLVM_PACKAGES = "clang-22 llvm-22-dev lld-22 lldb-22 python3-lldb-22"
APT_HINT = f"apt-get install -y {LLVM_PACKAGES} (Debian 12: bookworm-security serves LLVM 22)"

REPO_ROOT = Path(__file__).resolve().parent.parent


def _pass_src() -> Path:
    """The pass sources: ``llvm_pass/`` of a checkout (also an editable
    install), else the copy an installed wheel carries (``mappedtrace/_pass``,
    put there by setup.py)."""
    for p in (REPO_ROOT / "llvm_pass", Path(__file__).resolve().with_name("_pass")):
        if (p / "CMakeLists.txt").is_file():
            return p
    return REPO_ROOT / "llvm_pass"


PASS_SRC = _pass_src()
PLUGIN_NAME = "MappedTracePass.so"


def find_tool(name: str) -> str | None:
    """Path of an LLVM 22 tool (``clang-22``, ``ld.lld-22``, ``llvm-readobj-22``…) or None."""
    # Debian's packages put the versioned names (clang-22, ld.lld-22…) on PATH;
    # looking only there lets a user (and our tests) choose or hide a toolchain.
    return shutil.which(name)


def require_tool(name: str) -> str:
    p = find_tool(name)
    if not p:
        raise ToolchainError(f"{name} not found", hint=APT_HINT)
    return p


def cache_dir() -> Path:
    d = os.environ.get("MAPPEDTRACE_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "mappedtrace"


def _sources_hash() -> str:
    h = hashlib.sha256()
    if not PASS_SRC.is_dir():
        raise ToolchainError(f"pass sources not found at {PASS_SRC}",
                             hint="reinstall MappedTrace (pip install mappedtrace, or pip install -e . in a checkout)")
    for p in sorted(PASS_SRC.rglob("*")):
        if p.is_file() and "build" not in p.relative_to(PASS_SRC).parts and p.suffix in {".cpp", ".h", ".txt", ".cmake"}:
            h.update(str(p.relative_to(PASS_SRC)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def plugin_path(build: bool = True, quiet: bool = False) -> Path:
    """Path of the built pass plugin; builds it (once) when missing.

    :raises ToolchainError: when it is missing and cannot be built.
    """
    env = os.environ.get("MAPPEDTRACE_PLUGIN")
    if env:
        p = Path(env)
        if not p.exists():
            raise ToolchainError(f"MAPPEDTRACE_PLUGIN={env} does not exist")
        return p
    out = cache_dir() / f"plugin-{_sources_hash()}"
    so = out / PLUGIN_NAME
    if so.exists():
        return so
    if not build:
        raise ToolchainError("the pass plugin is not built yet", hint="run: mappedtrace doctor --build")
    import fcntl
    out.parent.mkdir(parents=True, exist_ok=True)
    # one build at a time (parallel tests and make -j all ask at once)
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not so.exists():
            _build_plugin(out, quiet)
    return so


def _build_plugin(out: Path, quiet: bool) -> None:
    cmake = shutil.which("cmake")
    if not cmake:
        raise ToolchainError("cmake not found (needed once, to build the pass plugin)",
                             hint="apt-get install -y cmake")
    cxx = require_tool("clang++-22")
    llvm_dir = f"/usr/lib/llvm-{LLVM_VERSION}/lib/cmake/llvm"
    if not Path(llvm_dir).is_dir():
        raise ToolchainError(f"LLVM {LLVM_VERSION} CMake files not found at {llvm_dir}",
                             hint="apt-get install -y llvm-22-dev")
    if not quiet:
        print(f"mappedtrace: building the pass plugin into {out} (once; about a minute)…",
              file=sys.stderr)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = [cmake, "-S", str(PASS_SRC), "-B", str(tmp), *gen, f"-DLLVM_DIR={llvm_dir}",
           f"-DCMAKE_CXX_COMPILER={cxx}", "-DCMAKE_BUILD_TYPE=Release"]
    for cmd in (cfg, [cmake, "--build", str(tmp), "-j", str(os.cpu_count() or 2)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log = tmp / "build-error.log"
            log.write_text(r.stdout + r.stderr)
            raise ToolchainError(f"building the pass plugin failed ({' '.join(cmd[:2])}); log: {log}",
                                 hint=(r.stderr.strip().splitlines() or ["?"])[-1][:300])
    built = next(tmp.rglob(PLUGIN_NAME), None)
    if built is None:
        raise ToolchainError(f"the plugin build produced no {PLUGIN_NAME} in {tmp}")
    built.rename(tmp / PLUGIN_NAME)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    _prune_old_builds(out)


def _prune_old_builds(keep: Path, max_kept: int = 8) -> None:
    """Remove all but the newest few plugin builds (each is rebuilt on demand)."""
    builds = sorted((p for p in keep.parent.glob("plugin-*") if p.is_dir() and ".tmp" not in p.name),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[max_kept:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def lldb_python_path() -> str | None:
    """The directory ``lldb-22 -P`` names (where the ``lldb`` module lives)."""
    exe = find_tool("lldb-22")
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "-P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    p = r.stdout.strip()
    return p if r.returncode == 0 and p and Path(p).is_dir() else None


def lldb_server() -> str | None:
    """The lldb-server LLDB should start: LLDB looks for
    ``lldb-server-<full version>`` on PATH, which Debian does not install."""
    srv = find_tool(f"lldb-server-{LLVM_VERSION}") or f"/usr/lib/llvm-{LLVM_VERSION}/bin/lldb-server"
    return os.path.realpath(srv) if os.path.exists(srv) else None


def import_lldb():
    """Import the LLDB Python module found through ``lldb-22 -P``, and point
    ``LLDB_DEBUGSERVER_PATH`` at Debian's lldb-server (this process only)."""
    server = lldb_server()
    if server:
        os.environ.setdefault("LLDB_DEBUGSERVER_PATH", server)
    try:
        import lldb  # type: ignore
        return lldb
    except ImportError:
        pass
    p = lldb_python_path()
    if not p:
        raise ToolchainError("the LLDB Python module was not found (lldb-22 -P)",
                             hint="apt-get install -y lldb-22 python3-lldb-22")
    sys.path.insert(0, p)
    try:
        import lldb  # type: ignore
    except ImportError as e:
        raise ToolchainError(f"cannot import lldb from {p}: {e}",
                             hint="apt-get install -y python3-lldb-22") from e
    return lldb
