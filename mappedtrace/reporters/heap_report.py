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
from .leaks_report import _bytes, _console, _derived_line, _pct


def top_dict(types: list[TypeRow], holders: list[HolderRow], summary: dict, limit: int,
             sites: list | None = None) -> dict:
    """The JSON document of ``mappedtrace top`` (``sites``: rows of
    :func:`~mappedtrace.analyses.dominators.by_site`, empty without sites)."""
    return {"summary": summary,
            "types": [asdict(r) for r in types[:limit]],
            "holders": [asdict(r) for r in holders[:limit]],
            "sites": [asdict(r) for r in (sites or [])[:limit]]}


def render_top(types: list[TypeRow], holders: list[HolderRow], summary: dict, stream: IO[str], *,
               limit: int = 20, width: int | None = None, sites: list | None = None) -> None:
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
    if sites:
        st = Table(title="by allocation site (retained: what freeing the site's topmost objects would free)",
                   title_justify="left")
        for c, j in (("allocated at", "left"), ("type", "left"), ("objects", "right"), ("shallow", "right"),
                     ("retained", "right")):
            st.add_column(c, justify=j, overflow="fold")
        for r in sites[:limit]:
            st.add_row(Text(r.site or "(no site)"), Text(r.type), str(r.objects), _bytes(r.shallow_bytes),
                       _bytes(r.retained_bytes))
        con.print(st)
    con.print(Text(f"precision: {s['edges_exact']} exact / {s['edges_conservative']} conservative edges; "
                   f"{s['conservative_edges_deferred']} conservative words into objects that exact roots "
                   f"hold were not counted as holding them (freeing such a holder may free less); "
                   f"objects typed {_pct(s['objects_typed'], s['objects_reached'])}"))
    if s.get("derived_objects"):
        con.print(Text(_derived_line(s)))


def why_dict(query: str, found: list[tuple[int, int, str, bool, list[RootPath]]],
             sites: dict[int, str] | None = None) -> dict:
    """The JSON document of ``mappedtrace why`` (``sites``: node → where it
    was allocated, in a ``--alloc-sites`` build)."""
    out = []
    for node, addr, typ, reached, paths in found:
        out.append({"node": node, "address": addr, "type": typ, "reachable": reached,
                    "site": (sites or {}).get(node),
                    "paths": [{"root": p.source, "holder": p.holder, "root_exact": p.root_exact,
                               "exact": p.exact, "hops": [asdict(h) for h in p.hops]} for p in paths]})
    return {"query": query, "objects": out}


def render_why(query: str, found: list[tuple[int, int, str, bool, list[RootPath]]], stream: IO[str], *,
               width: int | None = None, sites: dict[int, str] | None = None) -> None:
    """Each object asked about (and where it was allocated, when known), then
    its paths from the roots, one hop a line."""
    con = _console(stream, width)
    for node, addr, typ, reached, paths in found:
        site = (sites or {}).get(node)
        con.print(Text(f"{typ} at {addr:#x}" + (f", allocated at {site}" if site else ""), style="bold"))
        if not reached:
            con.print(Text("  not reachable from any root: a leak (see 'mappedtrace leaks')"))
            continue
        for k, p in enumerate(paths):
            con.print(Text(f"  path {k + 1} ({'exact' if p.exact else 'conservative'}, "
                           f"{len(p.hops)} hop{'s' if len(p.hops) != 1 else ''}):"))
            con.print(Text(f"    {p.source}  [{'exact' if p.root_exact else 'conservative'} root]"))
            for h in p.hops:
                into = f" (+{h.dst_offset:#x} into it)" if h.dst_offset else ""
                via = f"{h.via_field} (+{h.via_offset:#x})" if h.via_field else f"word +{h.via_offset:#x}"
                con.print(Text(f"    -> {via} {'exact' if h.exact else 'conservative'}"
                               f" -> {h.type} at {h.address:#x}, {h.size} B{into}"))


def to_json(doc: dict, stream: IO[str]) -> None:
    json.dump(doc, stream, indent=1)
    stream.write("\n")


def diff_dict(d, limit: int) -> dict:
    """The JSON document of ``mappedtrace diff`` / ``watch``."""
    return {"before": {"label": d.before.label, "pid": d.before.pid, "exe": d.before.exe},
            "after": {"label": d.after.label, "pid": d.after.pid, "exe": d.after.exe},
            "totals": d.totals,
            "types": [dict(asdict(t), growth_bytes=t.growth_bytes) for t in d.types[:limit]],
            "holders": [dict(asdict(h), growth_bytes=h.growth_bytes) for h in d.holders[:limit]],
            "suspects": [{"holder": s.holder, "kind": s.kind, "growth_bytes": s.growth_bytes,
                          "path": [asdict(p) for p in s.path]} for s in d.suspects]}


def _signed(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else "") + _bytes(abs(n))


def render_diff(d, stream: IO[str], *, limit: int = 15, width: int | None = None) -> None:
    """Totals, growth by type, by holder, then the suspects."""
    con = _console(stream, width)
    t = d.totals
    con.print(Text(f"{t['objects_before']} → {t['objects_after']} reachable objects "
                   f"({_bytes(t['bytes_before'])} → {_bytes(t['bytes_after'])}, "
                   f"{_signed(t['bytes_after'] - t['bytes_before'])}): {t['new_objects']} new, "
                   f"{t['gone_objects']} gone, {t['kept_objects']} kept (matched by {t['matched_by']})"))
    ty = Table(title="growth by type", title_justify="left")
    for c, j in (("type", "left"), ("objects", "right"), ("bytes", "right"), ("growth", "right"),
                 ("new", "right"), ("gone", "right")):
        ty.add_column(c, justify=j, overflow="fold")
    for r in [r for r in d.types if r.growth_bytes or r.new_objects or r.gone_objects][:limit]:
        ty.add_row(Text(r.type), f"{r.objects_before} → {r.objects_after}", _bytes(r.bytes_after),
                   _signed(r.growth_bytes), str(r.new_objects), str(r.gone_objects))
    con.print(ty)
    ho = Table(title="growth by holder (retained bytes)", title_justify="left")
    for c, j in (("holder", "left"), ("kind", "left"), ("before", "right"), ("after", "right"),
                 ("growth", "right")):
        ho.add_column(c, justify=j, overflow="fold")
    for h in [h for h in d.holders if h.growth_bytes][:limit]:
        ho.add_row(Text(h.holder), h.kind, _bytes(h.retained_before), _bytes(h.retained_after),
                   _signed(h.growth_bytes))
    con.print(ho)
    if not d.suspects:
        con.print(Text("no suspects: no holder retains more than before"))
    for k, s in enumerate(d.suspects):
        con.print(Text(f"suspect {k + 1}: {s.holder} ({s.kind}) retains {_signed(s.growth_bytes)} more",
                       style="bold"))
        for p in s.path:
            con.print(Text(f"    -> {p.type} at {p.address:#x}: retained {_bytes(p.retained_before)} → "
                           f"{_bytes(p.retained_after)}{' (new)' if p.new else ''}"))


def render_rows(cols: list[str], rows: list[tuple], stream: IO[str], *, max_rows: int = 100,
                width: int | None = None) -> None:
    """A query's result as a table (the first ``max_rows`` rows)."""
    con = _console(stream, width)
    t = Table()
    for c in cols:
        t.add_column(Text(c), overflow="fold")
    for r in rows[:max_rows]:
        t.add_row(*[Text("NULL" if v is None else str(v)) for v in r])
    con.print(t)
    more = f" ({len(rows) - max_rows} more not shown: --max-rows or --json)" if len(rows) > max_rows else ""
    con.print(Text(f"{len(rows)} row{'s' if len(rows) != 1 else ''}{more}"))
