"""Roots: where the marker starts (DESIGN step 6).

A :class:`Root` is either a pointer *value* (a register or stack word that
the maps say holds a pointer), or a *range* of memory to scan: typed when
its type is known (a global, a thread-local, a live alloca), conservatively
when it is not (an uninstrumented frame, an unsettled top frame, a binary
without maps).  Every root keeps its provenance.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Root:
    """One root.

    ``kind == "value"``: ``value`` is a pointer, ``type_id`` its pointee type
    (0 unknown).  ``kind == "range"``: ``value`` is the start address of
    ``size`` bytes holding an object of type ``type_id`` (0: scan every
    aligned word conservatively).  ``exact`` is True when the root comes from
    the maps (its pointer-ness is known), False when it was guessed.
    """

    kind: str          # "value" | "range"
    value: int
    size: int
    type_id: int
    exact: bool
    source: str        # e.g. "thread 4242 #2 main rbx", "global kept_list", "tls kept_tree [4242]"
    thread: int | None = None
