"""Build the far-memory C parts with the system C compiler.

* ``libmtfarmem.so`` from ``runtime/mtfarmem.c``: the helper preloaded into the program;
* ``libmtfmserve.so`` from ``mappedtrace/farmem/_serve.c``, ``_store.c`` and ``_evict.c`` (with
  ``_mtfs.h``): the pager's fault-serving loop, its store clients and its eviction batch; the
  xxHash header (Debian ``libxxhash-dev``) is compiled in, nothing to link.

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
    """Path of the built fault-serving loop and evictor (``_serve.c``, ``_store.c``, ``_evict.c``);
    builds it when a source changed.

    :raises ToolchainError: no C compiler, or the build failed
    """
    here = Path(__file__).resolve().parent
    return _build([here / "_serve.c", here / "_store.c", here / "_evict.c"], "libmtfmserve.so",
                  headers=[here / "_mtfs.h"])


def _build(src: Path | list[Path], name: str, headers: list[Path] = ()) -> str:
    srcs = [src] if isinstance(src, Path) else list(src)
    h = hashlib.sha256()
    for p in [*srcs, *headers]:
        h.update(p.read_bytes())
    digest = h.hexdigest()[:16]
    out = cache_dir() / f"farmem-{digest}" / name
    if out.is_file():
        return str(out)
    cc = os.environ.get("CC_FOR_MTFARMEM") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    if not cc:
        raise ToolchainError(f"no C compiler to build {name}", hint="apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-pthread", "-o", str(tmp), *map(str, srcs)],
                       capture_output=True, text=True)
    if r.returncode:
        hint = "apt-get install libxxhash-dev" if "xxhash.h" in r.stderr else None
        raise ToolchainError(f"building {name} from {', '.join(p.name for p in srcs)} failed: "
                             f"{' '.join(r.stderr.split())[:300]}", hint=hint)
    os.replace(tmp, out)
    return str(out)
