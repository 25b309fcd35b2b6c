"""Snapshot bundles: a core file and every binary it needs, in one file.

``mappedtrace snapshot --bundle -o FILE`` writes, so that a machine with no
access to the target (nor to its binaries) can run every analysis offline
(``mappedtrace leaks FILE``).  The format is a POSIX tar archive, uncompressed::

    bundle.json                  {"format": "mappedtrace-bundle", "version": 1,
                                  "core": "snapshot.core",
                                  "binaries": [{"path": str, "build_id": hex, "member": str}]}
    snapshot.core                the ELF core (see :mod:`.core`), paths as the tracer saw them
    root/<path>                  each mapped ELF file, under the path the core names

``bundle.json`` is the first member.  Opening extracts the archive into a
private temporary directory (0700, removed on ``close()``) and finds each
binary there by build-id (:mod:`.binaries`, the extracted ``root/`` as sysroot).
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile

from .base import Target
from .binaries import BinaryFinder, localize
from ..errors import BadData

BUNDLE_FORMAT = "mappedtrace-bundle"
BUNDLE_VERSION = 1
INDEX = "bundle.json"
CORE = "snapshot.core"
#: bounds on what an archive may hold
MAX_MEMBERS = 4096
MAX_INDEX = 1 << 20


def is_bundle(path: str) -> bool:
    """Whether ``path`` is a tar archive whose first member is ``bundle.json``
    (False for anything but a regular file: a FIFO's open would block)."""
    from ..fileio import not_regular
    if not_regular(path) is not None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return len(head) == 512 and head[:len(INDEX)] == INDEX.encode() and head[257:262] == b"ustar"


def write_bundle(target: Target, path: str) -> tuple[int, list[dict]]:
    """Write ``target`` (captured) as a core plus its binaries into the tar ``path`` (0600).

    :returns: (bytes written, the index's binaries)
    """
    from .core import build_id, write_core
    tmpdir = tempfile.mkdtemp(prefix="mappedtrace-bundle-")
    try:
        core = os.path.join(tmpdir, CORE)
        write_core(target, core)
        bins = []
        for p in sorted({m.path for m in target.mappings if m.path.startswith("/")}):
            bid = build_id(p)
            if bid and os.path.isfile(p):
                bins.append({"path": p, "build_id": bid, "member": "root" + p})
        index = json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "core": CORE,
                            "binaries": bins}, indent=1).encode()
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                ti = tarfile.TarInfo(INDEX)
                ti.size, ti.mode = len(index), 0o600
                import io
                tar.addfile(ti, io.BytesIO(index))
                tar.add(core, arcname=CORE)
                for b in bins:
                    tar.add(b["path"], arcname=b["member"])
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return os.path.getsize(path), bins
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def localize_snapshot(target, *, sysroot: str | None = None, build_ids: dict[str, str] | None = None) -> None:
    """Point a snapshot's binaries at local files of the same build (``--sysroot``,
    debuginfod), using the build-ids its note recorded."""
    if build_ids is None:
        build_ids = {b["path"]: b["build_id"] for b in target.meta.get("binaries", [])
                     if isinstance(b, dict) and isinstance(b.get("path"), str) and b.get("build_id")}
    out = localize(target, BinaryFinder(sysroot=sysroot), build_ids)
    if out and hasattr(target, "untrusted_files"):
        # the files are now the snapshot's own builds
        target.untrusted_files -= set(out)
        target.warnings = [w for w in target.warnings if not any(w.startswith(f"{p}: ") for p in out)]


def open_bundle(path: str, *, sysroot: str | None = None):
    """Open a bundle as a snapshot target (its binaries from the bundle).

    :raises BadData: not a bundle of a known version, or a member outside the archive's tree.
    """
    from .core import open_core
    tmpdir = tempfile.mkdtemp(prefix="mappedtrace-bundle-")
    try:
        try:
            tar = tarfile.open(path, "r:")
        except (tarfile.TarError, OSError) as e:
            raise BadData(path, None, f"not a bundle ({e})") from None
        with tar:
            members = []
            for i, m in enumerate(tar):
                if i >= MAX_MEMBERS:
                    raise BadData(path, None, f"more than {MAX_MEMBERS} members")
                members.append(m)
            names = {m.name: m for m in members}
            if INDEX not in names or names[INDEX].size > MAX_INDEX:
                raise BadData(path, None, f"no {INDEX} (or larger than {MAX_INDEX} bytes)")
            try:
                index = json.loads(tar.extractfile(names[INDEX]).read())
            except (ValueError, AttributeError) as e:
                raise BadData(path, None, f"{INDEX}: not JSON ({e})") from None
            if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
                raise BadData(path, None, f"{INDEX}: not a {BUNDLE_FORMAT} index")
            if index.get("version") != BUNDLE_VERSION:
                raise BadData(path, None, f"bundle version {index.get('version')!r} is not supported; "
                                          f"this build reads version {BUNDLE_VERSION}")
            for m in members:
                if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                    raise BadData(path, None, f"member {m.name!r} is not a plain file inside the archive")
            tar.extractall(tmpdir, members=members, filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(tmpdir, members=members)
        core = os.path.join(tmpdir, str(index.get("core", CORE)))
        target = open_core(core)
        ids = {b["path"]: b["build_id"] for b in index.get("binaries", [])
               if isinstance(b, dict) and isinstance(b.get("path"), str) and isinstance(b.get("build_id"), str)}
        localize_snapshot(target, sysroot=sysroot or os.path.join(tmpdir, "root"), build_ids=ids)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    target.meta["bundle"] = path
    _close = target.close

    def close() -> None:
        _close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    target.close = close
    return target
