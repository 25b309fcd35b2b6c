"""Build the far-memory C parts with the system C compiler.

* ``libmtfarmem.so`` from ``runtime/mtfarmem.c``: the helper preloaded into the program;
* ``libmtfmserve.so`` from ``mappedtrace/farmem/_serve.c``: the pager's fault-serving loop.

Each is built into the cache directory, keyed by a hash of its source, the
first time it is needed (``scripts/setup.sh`` does it once at set-up); no
binary is checked in.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import ToolchainError
from ..toolchain import cache_dir


def source_path() -> Path:
    """``runtime/mtfarmem.c`` of this checkout (or of an install that ships it)."""
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "runtime" / "mtfarmem.c", here.parent / "mtfarmem.c"):
        if cand.is_file():
            return cand
    raise ToolchainError("the far-memory helper's source runtime/mtfarmem.c is not in this installation",
                         hint="run from a checkout of MappedTrace")


def library_path() -> str:
    """Path of the built helper; builds it when the source changed.

    :raises ToolchainError: no C compiler, or the build failed
    """
    return _build(source_path(), "libmtfarmem.so")


def serve_library_path() -> str:
    """Path of the built fault-serving loop (``_serve.c``); builds it when the source changed.

    :raises ToolchainError: no C compiler, or the build failed
    """
    return _build(Path(__file__).resolve().with_name("_serve.c"), "libmtfmserve.so")


def _build(src: Path, name: str) -> str:
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"farmem-{digest}" / name
    if out.is_file():
        return str(out)
    cc = os.environ.get("CC_FOR_MTFARMEM") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    if not cc:
        raise ToolchainError(f"no C compiler to build {name}", hint="apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-pthread", "-o", str(tmp), str(src)],
                       capture_output=True, text=True)
    if r.returncode:
        raise ToolchainError(f"building {src.name} failed: {' '.join(r.stderr.split())[:300]}")
    os.replace(tmp, out)
    return str(out)
