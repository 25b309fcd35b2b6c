"""Field names from the type table: which member of a typed object a byte offset is in.

The type table (``.mtmap`` version 2, FORMAT.md §2 "Fields") lists every
struct/union/class's members and base classes with their offsets, and the
type arguments of templates.  :func:`field_path` walks them down to the
innermost member holding an offset (``kids._M_impl._M_start``, ``next.value[2]``);
:func:`find_member` finds a member by name anywhere inside a type (a
container's ``len``, ``_M_finish``).  Both are bounded by :data:`MAX_DEPTH`.

Known imprecision: an offset inside a union names the largest member that
holds it (a union's members overlap; which one is live is unknown); Rust enum
variants are not listed as members, so a path stops at the enum.
"""
from __future__ import annotations

from typing import Any

from ..formats.mtmap import FIELD_BASE, Field

#: nesting levels walked (members of members …)
MAX_DEPTH = 24
#: libstdc++'s raw storage of one T (map and hash nodes, make_shared's block):
#: read as holding its template argument ``_Tp`` at offset 0
_RAW_STORAGE = ("__gnu_cxx::__aligned_buffer<", "__gnu_cxx::__aligned_membuf<")


def _size(types: dict[int, Any], tid: int) -> int:
    t = types.get(int(tid))
    return int(getattr(t, "size", 0) or 0) if t is not None else 0


def _template_arg(t: Any, name: str | None = None) -> int:
    for f in getattr(t, "template_args", ()):
        if name is None or f.name == name:
            return int(f.type_id)
    return 0


def template_arg(types: dict[int, Any], tid: int, name: str | None = None) -> int:
    """The type id of template argument ``name`` (the first one when None) of type ``tid``, or 0."""
    t = types.get(int(tid))
    return _template_arg(t, name) if t is not None else 0


def members_at(types: dict[int, Any], tid: int, off: int) -> tuple[Any, int] | None:
    """(the member of type ``tid`` holding byte ``off``, the offset inside it) or None.

    Among overlapping members (empty base classes, union members, enum
    variants) the largest wins, then one with members of its own; libstdc++'s raw storage (``__aligned_membuf<T>``) is read as a ``T``.
    """
    t = types.get(int(tid))
    if t is None:
        return None
    name = getattr(t, "name", "")
    if name.startswith(_RAW_STORAGE):
        arg = _template_arg(t, "_Tp")
        if arg and off < max(_size(types, arg), 1):
            return Field(0, arg, "", FIELD_BASE), off
    best = None
    best_key = (-1, False)
    for f in getattr(t, "members", ()):
        sz = _size(types, f.type_id)
        # among members of one size, one with members of its own (Rust's Some(x) over None)
        key = (sz, bool(getattr(types.get(int(f.type_id)), "members", ())))
        if f.offset <= off < f.offset + max(sz, 1) and key > best_key:
            best, best_key = f, key
    return (best, off - best.offset) if best is not None else None


def field_path(types: dict[int, Any], tid: int, off: int) -> str:
    """The member path of byte ``off`` in an object of type ``tid``:
    ``"kids._M_impl._M_start"``, ``"[3].next"`` for an array; base classes
    are walked through without a name.  ``""`` when the type says nothing
    (unknown, a pointer, a scalar), ``"+0x18"`` for bytes past its last member."""
    parts: list[str] = []
    t = types.get(int(tid))
    for _ in range(MAX_DEPTH):
        if t is None:
            break
        kind = getattr(t, "kind", "")
        size = int(getattr(t, "size", 0) or 0)
        if kind == "array" and getattr(t, "elem_type", 0):
            esz = _size(types, t.elem_type)
            if esz <= 0:
                break
            parts.append(f"[{off // esz}]")
            off %= esz
            t = types.get(int(t.elem_type))
            continue
        if kind in ("pointer", "scalar", "unknown", "function"):
            break
        if size and off >= size:
            parts.append(f"[{off // size}]")        # an array of the type (the rest of the chunk)
            off %= size
            continue
        m = members_at(types, t.id, off)
        if m is None:
            if off:
                parts.append(f"+{off:#x}")
            break
        f, off = m
        if f.name and not f.flags & FIELD_BASE:
            parts.append(f.name)
        t = types.get(int(f.type_id))
    out = ""
    for p in parts:
        out += p if p[0] in "[+" or not out else "." + p
    return out


def find_member(types: dict[int, Any], tid: int, name: str, depth: int = 8) -> tuple[int, int] | None:
    """(offset, type id) of the first member called ``name`` inside type
    ``tid``, breadth first through members and base classes (``depth``
    levels), or None."""
    level = [(int(tid), 0)]
    seen: set[int] = set()
    for _ in range(min(depth, MAX_DEPTH)):
        nxt = []
        for t_id, base in level:
            t = types.get(t_id)
            if t is None or t_id in seen:
                continue
            seen.add(t_id)
            for f in getattr(t, "members", ()):
                if f.name == name:
                    return base + f.offset, int(f.type_id)
                nxt.append((int(f.type_id), base + f.offset))
        if not nxt:
            break
        level = nxt
    return None
