"""The whole analysis of one stopped target: modules → maps → unwind → roots → heap → graph → leaks.

:func:`analyse` is what ``mappedtrace run``, ``leaks`` and ``graph`` call; it
works on any :class:`~mappedtrace.target.base.Target` (a live process, a
process stopped at exit, a snapshot file).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .formats.maps import BinaryMaps
from .formats.maps_cache import load_cached
from .heap.allocsites import SiteTable
from .modules import ModuleMap, _elf_first_load
from .roots import Root, RootCollector, RootSet
from .target.base import Target


@dataclass
class Analysis:
    """Everything one analysis found; the CLI's reporters render it."""

    target: Target
    modules: ModuleMap
    maps: dict[str, BinaryMaps | None]
    roots: RootSet
    heap: object
    graph: object
    leaks: object | None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    roots_mode: str = "precise"
    #: modules analysed without maps that the user should know of (:func:`modules_without_maps`)
    without_maps: list[dict] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What a report says first: which binaries have no maps (:func:`maps_notes`)."""
        return maps_notes(self.without_maps)

    @property
    def precision(self) -> dict:
        """The precision figures of roots, heap and graph together."""
        return precision_figures(self.roots, self.graph, self.heap, self.roots_mode, self.without_maps)


#: where a distribution's libraries live: a library there without maps is
#: expected (glibc, libstdc++…) and not the user's to rebuild, so it gets no
#: note (it is still listed in ``modules_without_maps``)
SYSTEM_LIB_DIRS = ("/lib/", "/lib32/", "/lib64/", "/usr/lib/", "/usr/lib32/", "/usr/lib64/", "/usr/libexec/")


def modules_without_maps(target: Target, modules: ModuleMap, maps: dict[str, BinaryMaps | None],
                         rootset: RootSet) -> list[dict]:
    """The binaries analysed without maps that a report must name.

    The rule: the main executable whenever it has no maps; another module
    when it is not a system library (:data:`SYSTEM_LIB_DIRS`) and has
    writable data or frames on the stacks (its code can hold heap pointers
    there, which are then scanned conservatively).

    :returns: ``[{"module": path, "role": "executable"|"library", "frames": n,
        "writable_bytes": n}]``
    """
    main = modules.main
    frames: dict[str, int] = {}
    for fs in rootset.frames.values():
        for f in fs:
            m = modules.module_at(f.pc)
            if m is not None:
                frames[m.path] = frames.get(m.path, 0) + 1
    out = []
    for m in modules:
        if maps.get(m.path) is not None:
            continue
        wbytes = sum(x.size for x in target.mappings if x.path == m.path and x.writable)
        if m is not main and (os.path.realpath(m.path).startswith(SYSTEM_LIB_DIRS)
                              or not (wbytes or frames.get(m.path))):
            continue
        out.append({"module": m.path, "role": "executable" if m is main else "library",
                    "frames": frames.get(m.path, 0), "writable_bytes": wbytes})
    return out


def maps_notes(without: list[dict]) -> list[str]:
    """One sentence per entry of :func:`modules_without_maps`: what is
    conservative, and how to rebuild."""
    out = []
    for w in without:
        what = "the executable" if w["role"] == "executable" else "the library"
        out.append(f"{what} {w['module']} has no MappedTrace maps (built without the pass): its "
                   f"{w['frames']} stack frames and {w['writable_bytes']} bytes of writable data are scanned "
                   f"conservatively; rebuild it with 'mappedtrace cc' (C) or 'mappedtrace rustc' (Rust) "
                   f"for exact roots")
    return out


def precision_figures(rootset: RootSet, graph, heap, roots_mode: str,
                      without_maps: list[dict] | None = None) -> dict:
    """One dict of every precision figure: the graph's, then the roots' (the
    graph's frame counts are the roots', given to :func:`mark`).  ``leaks``
    and ``graph`` both report this dict."""
    out = dict(graph.precision.as_dict())
    for k, v in rootset.stats.as_dict().items():
        if k not in ("modules_with_maps", "modules_without_maps"):
            out.setdefault(k, v)
    out["modules_with_maps"] = [os.path.basename(p) for p in rootset.stats.modules_with_maps]
    out["modules_without_maps"] = [os.path.basename(p) for p in rootset.stats.modules_without_maps]
    out["roots_mode"] = roots_mode
    out["heap_walk_exact"] = bool(getattr(heap, "exact", False))
    corrupted = getattr(heap, "corrupted", [])
    out["heap_corrupted_regions"] = len(corrupted)
    out["heap_corrupted_bytes"] = sum(r.size for r in corrupted)
    out["without_maps"] = list(without_maps or [])
    return out


class MapsCache:
    """BinaryMaps per module path, loaded once; a binary without maps gives None."""

    def __init__(self) -> None:
        self.maps: dict[str, BinaryMaps | None] = {}
        self.warnings: list[str] = []

    def __call__(self, path: str) -> BinaryMaps | None:
        if path not in self.maps:
            try:
                bm = load_cached(path)          # BadData propagates: corrupt maps abort
            except OSError as e:
                self.warnings.append(f"{path}: cannot read ({e}); treated as without maps")
                bm = None
            if bm is not None and not bm.has_maps:
                bm = None
            if bm is not None:
                self.warnings.extend(f"{path}: {w}" for w in bm.warnings)
            self.maps[path] = bm
        return self.maps[path]


def merged_types(maps: dict[str, BinaryMaps | None]) -> dict[int, object]:
    types: dict[int, object] = {}
    for bm in maps.values():
        if bm is not None:
            for tid, ti in bm.types.items():
                types.setdefault(tid, ti)
    return types


def preload_maps(pid: int, cache: MapsCache | None = None) -> MapsCache:
    """Decode the maps of every file process ``pid`` maps, without stopping it.

    Everything keyed by file is read before the capture, so a malformed map
    section aborts before the process is ever stopped.  Files mapped later
    (a ``dlopen`` between this look and the stop) are loaded by
    :func:`analyse` itself.

    :raises NoSuchProcess: no process ``pid``.
    """
    from .target.live import parse_maps
    from .errors import NoSuchProcess, PermissionProblem
    cache = cache if cache is not None else MapsCache()
    try:
        with open(f"/proc/{pid}/maps") as f:
            mappings = parse_maps(f.read())
    except FileNotFoundError:
        raise NoSuchProcess(f"no process with PID {pid}", hint="check the PID (ps -e)") from None
    except PermissionError:
        raise PermissionProblem(f"cannot read /proc/{pid}/maps",
                                hint="run as root or with CAP_SYS_PTRACE") from None
    for path in dict.fromkeys(m.path for m in mappings):
        # ModuleMap's own test of a module: processes map data files too (glibc's
        # gconv cache, locale archives), which have no maps and must not stop us
        if path.startswith("/") and not path.endswith(" (deleted)") and _elf_first_load(path) is not None:
            cache(path)
    return cache


def capture_live(pid: int, mode: str = "fork", cache: MapsCache | None = None) -> Target:
    """Capture running process ``pid`` for an analysis that runs while it runs on.

    The maps are decoded first (:func:`preload_maps`); then the process is
    paused only for the capture (:func:`~mappedtrace.target.capture.snapshot_process`:
    ``fork``, a copy-on-write child, or ``stop-copy`` — fork falls back to
    stop-copy where it is impossible, with a warning saying why).

    :returns: a :class:`~mappedtrace.target.capture.CapturedTarget` (close it);
        its ``meta`` holds ``mode`` and ``pause_ns``.
    """
    from .target.capture import snapshot_process
    preload_maps(pid, cache)
    return snapshot_process(pid, mode)


def warm_caches(target: Target, cache: MapsCache) -> None:
    """Decode ahead what :func:`analyse` decodes per file of ``target``: the maps of
    every module and the glibc model of its libc (the symbol tables of libc's debug
    file: a second of work).  Reads local files only (the ones ``target.mappings``
    name), never the target's memory: a remote analysis calls it before it has the
    server attach (the process still runs), as a local capture decodes the maps
    before its stop.  An error is left for the analysis to meet and report."""
    from .glibc_model import model_for
    for m in ModuleMap(target):
        try:
            cache(m.path)
            if m.name.startswith("libc.so"):
                model_for(m.path)
        except Exception:       # noqa: BLE001 - the analysis decodes it again and says why
            continue


def capture_figures(target: Target) -> dict | None:
    """The capture of a live process as reported (``capture`` in the leak JSON):
    mode, pause and its parts in milliseconds, bytes copied; None for a target
    that is not a live capture (a snapshot file, a process stopped at exit)."""
    m = target.meta
    ms = lambda key: round(int(m.get(key, 0)) / 1e6, 3)
    if m.get("backend") == "remote" and "pause_ns" in m and m.get("mode") != "exit":
        out = {"mode": "remote", "remote": m.get("remote", ""), "capture": m.get("mode", "stop-copy"),
               "pause_ms": ms("pause_ns"), "bytes_read": int(m.get("bytes_in", 0)),
               "round_trips": int(m.get("round_trips", 0))}
        if m.get("mode") == "fork":
            out["fork_ms"] = ms("fork_ns")
        why = next((w for w in target.warnings if w.startswith("fork mode not used")), None)
        if why:
            out["fallback"] = why
        return out
    if m.get("backend") != "ptrace" or m.get("mode") not in ("fork", "stop-copy") or "pause_ns" not in m:
        return None
    out = {"mode": m["mode"], "pause_ms": ms("pause_ns"), "stop_ms": ms("stop_ns"),
           ("fork_ms" if m["mode"] == "fork" else "copy_ms"): ms("fork_ns" if m["mode"] == "fork" else "copy_ns"),
           "captured_bytes": int(m.get("captured_bytes", 0))}
    why = next((w for w in target.warnings if w.startswith(("fork mode not used", "the process was stopped"))), None)
    if why:
        out["fallback"] = why
    return out


def analyse(target: Target, *, roots_mode: str = "precise", leaks: bool = True,
            maps_cache: MapsCache | None = None, max_memory: int | None = None,
            glibc_model: bool = True) -> Analysis:
    """Run the full pipeline on a stopped or captured target.

    :param roots_mode: ``"precise"`` (use the maps) or ``"conservative"`` (scan
        every root range and object word by word, like LeakSanitizer)
    :param maps_cache: maps decoded already (:func:`preload_maps`)
    :param max_memory: bytes this analysis may use: checked after the heap walk,
        before the marking (:func:`mappedtrace.memory.check`)
    :param glibc_model: count the glibc frames :mod:`mappedtrace.glibc_model` proves
        rootless as exact, unscanned (leak finding); False scans them (the relocator)
    :raises MemoryLimit: the estimate exceeds ``max_memory``
    :returns: an :class:`Analysis` with the root set, heap, graph and leak report
    """
    from .heap.glibc import GlibcHeap
    from .trace import mark
    from .unwind import Unwinder

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    modules = ModuleMap(target)
    cache = maps_cache if maps_cache is not None else MapsCache()
    for m in modules:
        cache(m.path)
    timings["maps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    heap = GlibcHeap(target, modules)
    timings["heap"] = time.perf_counter() - t0
    if max_memory is not None:
        _check_memory(target, heap, max_memory)

    t0 = time.perf_counter()
    unwinder = Unwinder(target, modules)
    collector = RootCollector(target, modules, cache, unwinder,
                              heap_ranges=_heap_ranges(heap),
                              allocator_ranges=heap.state_ranges(), mode=roots_mode,
                              exit_frames_rootless=target.meta.get("mode") == "exit",
                              glibc_model=glibc_model)
    rootset = collector.collect()
    rootset.roots.extend(_allocator_roots(heap))
    timings["roots"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    types = merged_types(cache.maps)
    sites = SiteTable.of(modules, cache.maps)
    graph = mark(target, heap, rootset.roots, types,
                 mode="conservative" if roots_mode == "conservative" else "precise",
                 frames=(rootset.stats.frames_exact, rootset.stats.frames_conservative),
                 sites=sites if len(sites) else None)
    timings["mark"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from .analyses.containers import derive_types
    derive_types(graph, target, modules)         # names only: the marking above is final
    timings["containers"] = time.perf_counter() - t0

    without = modules_without_maps(target, modules, cache.maps, rootset)
    report = None
    if leaks:
        from .analyses.leaks import find_leaks
        t0 = time.perf_counter()
        report = find_leaks(graph, target)
        report.precision.update(precision_figures(rootset, graph, heap, roots_mode, without))
        report.notes = maps_notes(without)
        report.capture = capture_figures(target)
        timings["leaks"] = time.perf_counter() - t0
    graph.capture = capture_figures(target)

    warnings = list(target.warnings) + cache.warnings + rootset.warnings + \
        list(getattr(heap, "warnings", [])) + list(getattr(unwinder, "warnings", []))
    a = Analysis(target, modules, cache.maps, rootset, heap, graph, report, timings, warnings,
                 roots_mode=roots_mode, without_maps=without)
    return a


def _check_memory(target: Target, heap, limit: int) -> None:
    """After the walk, before the marking: the copy held (a capture's or a
    snapshot's memory, else the heap segments read) and the chunk count."""
    from .memory import check
    held = int(getattr(target, "captured_bytes", 0) or 0)
    if not held:
        held = sum(len(b) for _, b in getattr(heap, "memory_blocks", []))
    where = getattr(target, "path", "") or (f"process {target.pid}" if target.pid else "the target")
    check(limit, held, len(heap), str(where))


def _heap_ranges(heap) -> list[tuple[int, int]]:
    """Address ranges that belong to the malloc heap (excluded from anonymous-memory scans)."""
    return [(lo, hi) for lo, hi, *_ in heap.ranges()]


def _allocator_roots(heap) -> list[Root]:
    """Chunks the allocator itself holds (each thread's tcache struct): never leaks.
    And every corrupted heap region, scanned conservatively as a root: the
    objects there are unknown, so whatever they point at counts as reachable
    (no false leak behind a damaged chunk)."""
    roots = [Root("value", addr, 0, 0, True, f"allocator: tcache of {owner}")
             for owner, addr in getattr(heap, "tcaches", [])]
    roots += [Root("range", r.start, r.size, 0, False, f"heap: corrupted region at {r.chunk:#x} ({r.where})")
              for r in getattr(heap, "corrupted", []) if r.size > 0]
    return roots
