"""Render the heap analyses (``top``, ``why``): rich text or JSON.

User-controlled strings (type names, root sources) go into
:class:`rich.text.Text` cells, never through markup; the width is fixed when
the stream is not a terminal (see :mod:`.leaks_report`).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import IO

from rich.table import Table
from rich.text import Text

from ..analyses.dominators import HolderRow, TypeRow
from ..analyses.paths import RootPath
from .leaks_report import _bytes, _console, _pct


def top_dict(types: list[TypeRow], holders: list[HolderRow], summary: dict, limit: int) -> dict:
    """The JSON document of ``mappedtrace top``."""
    return {"summary": summary,
            "types": [asdict(r) for r in types[:limit]],
            "holders": [asdict(r) for r in holders[:limit]]}


def render_top(types: list[TypeRow], holders: list[HolderRow], summary: dict, stream: IO[str], *,
               limit: int = 20, width: int | None = None) -> None:
    """The histogram by type with retained bytes, then the biggest holders."""
    con = _console(stream, width)
    s = summary
    con.print(Text(f"{s['objects_reached']} reachable objects, {_bytes(s['bytes_reached'])}; "
                   f"{s['objects_unreached']} unreachable ({_bytes(s['bytes_unreached'])}, see 'mappedtrace leaks')"))
    t = Table(title="by type (retained: what freeing the type's topmost objects would free)",
              title_justify="left")
    for c, j in (("type", "left"), ("objects", "right"), ("shallow", "right"), ("retained", "right"),
                 ("typed", "right")):
        t.add_column(c, justify=j, overflow="fold")
    for r in types[:limit]:
        t.add_row(Text(r.type), str(r.objects), _bytes(r.shallow_bytes), _bytes(r.retained_bytes),
                  _pct(r.exact_typed, r.objects))
    con.print(t)
    h = Table(title="by holder (a global, thread-local or frame: what it alone keeps alive)",
              title_justify="left")
    for c, j in (("holder", "left"), ("kind", "left"), ("roots", "right"), ("retained", "right"),
                 ("root", "left")):
        h.add_column(c, justify=j, overflow="fold")
    for r in holders[:limit]:
        h.add_row(Text(r.holder), r.kind, str(r.roots), _bytes(r.retained_bytes),
                  "exact" if r.exact else "conservative")
    con.print(h)
    con.print(Text(f"precision: {s['edges_exact']} exact / {s['edges_conservative']} conservative edges "
                   f"(a conservative edge may keep alive what it points to: retained sizes of their "
                   f"targets' holders are upper bounds, of the targets themselves lower bounds); "
                   f"objects typed {_pct(s['objects_typed'], s['objects_reached'])}"))


def why_dict(query: str, found: list[tuple[int, int, str, bool, list[RootPath]]]) -> dict:
    """The JSON document of ``mappedtrace why``."""
    out = []
    for node, addr, typ, reached, paths in found:
        out.append({"node": node, "address": addr, "type": typ, "reachable": reached,
                    "paths": [{"root": p.source, "holder": p.holder, "root_exact": p.root_exact,
                               "exact": p.exact, "hops": [asdict(h) for h in p.hops]} for p in paths]})
    return {"query": query, "objects": out}


def render_why(query: str, found: list[tuple[int, int, str, bool, list[RootPath]]], stream: IO[str], *,
               width: int | None = None) -> None:
    """Each object asked about, then its paths from the roots, one hop a line."""
    con = _console(stream, width)
    for node, addr, typ, reached, paths in found:
        con.print(Text(f"{typ} at {addr:#x}", style="bold"))
        if not reached:
            con.print(Text("  not reachable from any root: a leak (see 'mappedtrace leaks')"))
            continue
        for k, p in enumerate(paths):
            con.print(Text(f"  path {k + 1} ({'exact' if p.exact else 'conservative'}, "
                           f"{len(p.hops)} hop{'s' if len(p.hops) != 1 else ''}):"))
            con.print(Text(f"    {p.source}  [{'exact' if p.root_exact else 'conservative'} root]"))
            for h in p.hops:
                into = f" (+{h.dst_offset:#x} into it)" if h.dst_offset else ""
                con.print(Text(f"    -> word +{h.via_offset:#x} {'exact' if h.exact else 'conservative'}"
                               f" -> {h.type} at {h.address:#x}, {h.size} B{into}"))


def to_json(doc: dict, stream: IO[str]) -> None:
    json.dump(doc, stream, indent=1)
    stream.write("\n")
