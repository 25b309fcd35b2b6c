"""Heap walkers (DESIGN step 7): every malloc chunk of a target, in use or free.

:class:`~mappedtrace.heap.glibc.GlibcHeap` reads glibc's ptmalloc (2.35–2.37,
Debian 12's 2.36)::

    with mappedtrace.attach(pid) as t:
        heap = mappedtrace.heap.walk(t)
        for c in heap.in_use(): ...
        heap.find(ptr)            # the chunk holding an interior pointer
"""
from __future__ import annotations

from .glibc import Arena, Chunk, ChunkList, CorruptRegion, GlibcHeap, HeapCorrupted, HeapError

__all__ = ["Arena", "Chunk", "ChunkList", "CorruptRegion", "GlibcHeap", "HeapCorrupted", "HeapError", "walk"]


def walk(target, modules=None, *, use_debug_symbols: bool = True) -> GlibcHeap:
    """Walk the glibc heap of ``target`` (a stopped process or a snapshot).

    :param modules: the target's :class:`~mappedtrace.modules.ModuleMap` (made if omitted)
    :param use_debug_symbols: False forces the heuristics even when libc6-dbg is installed
    :returns: a :class:`GlibcHeap`
    :raises HeapError: no glibc heap in the target
    :raises HeapCorrupted: arena state is inconsistent (damaged chunks become ``heap.corrupted``)
    """
    if modules is None:
        from ..modules import ModuleMap
        modules = ModuleMap(target)
    return GlibcHeap(target, modules, use_debug_symbols=use_debug_symbols)
