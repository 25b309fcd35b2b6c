"""Decoded maps kept on disk across runs, keyed by build-id (issue #13 item 1).

Decoding the maps of a big binary takes seconds (Redis: 12.9 s decoded, 3.4 s
unpickled, on a loaded 2-vCPU machine), and a live analysis decodes them
every time.  :func:`load_cached` keeps each decoded
:class:`~mappedtrace.formats.maps.BinaryMaps` as a pickle under
``$MAPPEDTRACE_CACHE/maps`` (``~/.cache/mappedtrace/maps``), named by the
binary's build-id, size and mtime and by a hash of this decoder's own
sources (a changed decoder never reads an old entry).  Files are mode 0600
in a 0700 directory (at most 64 entries and 512 MiB, the least recently used
dropped), written whole under a temporary name and renamed; an
entry that does not load (truncated, corrupted, another version) is ignored,
removed and rebuilt.  A binary without a build-id or without maps is not
cached.

The pickles are the user's own cache, trusted as the user's own files are:
a cache directory someone else can write to is not used.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

from . import elf
from .maps import BinaryMaps

#: bumped by hand when BinaryMaps changes shape in a way the source hash would miss
CACHE_FORMAT = 1
_DECODER_SOURCES = ("maps.py", "allocsites.py", "mtmap.py", "mtstack.py", "stackmap.py", "elf.py", "maps_cache.py")


def cache_root() -> Path:
    d = os.environ.get("MAPPEDTRACE_CACHE")
    return (Path(d) if d else Path.home() / ".cache" / "mappedtrace") / "maps"


@functools.lru_cache(maxsize=1)
def _decoder_hash() -> str:
    h = hashlib.sha256(str(CACHE_FORMAT).encode())
    here = Path(__file__).resolve().parent
    for name in _DECODER_SOURCES:
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()[:12]


def cache_path(path: str) -> Path | None:
    """Where the decoded maps of ``path`` are kept (None: not cacheable)."""
    try:
        st = os.stat(path)
        bid = elf.build_id(path)
    except (OSError, ValueError):
        return None
    if not bid or not all(c in "0123456789abcdef" for c in bid):
        return None
    return cache_root() / f"{bid}-{st.st_size}-{st.st_mtime_ns}-{_decoder_hash()}.pickle"


def _private_dir(d: Path) -> bool:
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


#: decoded maps of this process, by (path, inode, size, mtime): settling and the
#: analysis of one run share them
_MEMO: dict[tuple, BinaryMaps] = {}
_MEMO_MAX = 32


def load_cached(path: str) -> BinaryMaps:
    """:meth:`BinaryMaps.load` through this process's memo and the on-disk cache.

    :raises: what :meth:`BinaryMaps.load` raises (a cache problem never does).
    """
    try:
        st = os.stat(path)
        key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return BinaryMaps.load(path)        # raises the error that says why
    bm = _MEMO.get(key)
    if bm is None:
        bm = _load_cached(path)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = bm
    return bm


def _load_cached(path: str) -> BinaryMaps:
    where = cache_path(path)
    if where is None or not _private_dir(where.parent):
        return BinaryMaps.load(path)
    try:
        with open(where, "rb") as f:
            bm = pickle.load(f)
        if isinstance(bm, BinaryMaps) and bm.has_maps:
            bm.path = path
            try:
                os.utime(where)         # recently used (see _trim)
            except OSError:
                pass
            return bm
    except FileNotFoundError:
        pass
    except Exception:           # noqa: BLE001 — any broken entry: drop it, decode again
        pass
    try:
        os.unlink(where)
    except OSError:
        pass
    bm = BinaryMaps.load(path)
    if bm.has_maps:
        _store(where, bm)
    return bm


#: the cache keeps at most this many entries and bytes (the least recently used go)
MAX_ENTRIES = 64
MAX_BYTES = 512 << 20


def _store(where: Path, bm: BinaryMaps) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=where.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(bm, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, where)
    except Exception:           # noqa: BLE001 — a cache that cannot be written is no error
        try:
            os.unlink(tmp)
        except OSError:
            pass
    _trim(where.parent)


def _trim(d: Path) -> None:
    """Drop the least recently used entries beyond :data:`MAX_ENTRIES` / :data:`MAX_BYTES`."""
    try:
        entries = sorted(((e.stat().st_mtime, e.stat().st_size, e) for e in d.glob("*.pickle")),
                         key=lambda x: x[0], reverse=True)
    except OSError:
        return
    total = 0
    for i, (_t, size, e) in enumerate(entries):
        total += size
        if i >= MAX_ENTRIES or (i > 0 and total > MAX_BYTES):
            try:
                e.unlink()
            except OSError:
                pass
