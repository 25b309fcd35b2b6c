"""Heap walkers (DESIGN step 7): every malloc chunk of a target, in use or free.

:class:`~mappedtrace.heap.glibc.GlibcHeap` reads glibc's ptmalloc (2.36).
"""
from __future__ import annotations

from .glibc import Arena, Chunk, GlibcHeap, HeapCorrupted, HeapError

__all__ = ["Arena", "Chunk", "GlibcHeap", "HeapCorrupted", "HeapError"]
