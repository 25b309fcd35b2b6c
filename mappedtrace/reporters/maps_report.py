"""Rendering of a binary's decoded maps (``mappedtrace maps``).

:func:`maps_to_dict` gives the JSON-ready view; :func:`render_json` and
:func:`render_text` write it to a stream they are given (the command chooses
the stream).  Symbol and type names are user-controlled: they are escaped
before rich sees them.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import IO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..formats.maps import BinaryMaps, Location, MapEntry
from ..formats.mtmap import CHUNK_O0, CHUNK_RUST
from ..target.base import DWARF_REGS

_SLOT_FLAGS = ((1, "untyped"), (2, "function"), (4, "conservative"), (8, "weak"), (16, "stored"))
_TYPE_FLAGS = ((1, "has_union"), (2, "flex"), (4, "erased"), (8, "rust"))
_FIELD_FLAGS = ((1, "base"), (2, "template_arg"), (4, "variant"))

#: Records shown in the text view before "… N more" (JSON has them all).
TEXT_RECORD_LIMIT = 200


def _flag_names(flags: int, names) -> list[str]:
    out = [n for bit, n in names if flags & bit]
    rest = flags & ~sum(b for b, _ in names)
    if rest:
        out.append(f"{rest:#x}")
    return out


def _reg(n: int) -> str:
    return DWARF_REGS.get(n, f"r#{n}")


def location_str(loc: Location) -> str:
    """``rbx`` · ``[rsp+16]`` (memory at) · ``rsp+16`` (address) · ``=123`` (constant)."""
    if loc.kind == "Register":
        return _reg(loc.dwarf_reg)
    if loc.kind in ("Direct", "Indirect"):
        s = f"{_reg(loc.dwarf_reg)}{loc.offset:+d}"
        return f"[{s}]" if loc.kind == "Indirect" else s
    return f"={loc.offset:#x}"


def _loc_dict(loc: Location) -> dict:
    return {"kind": loc.kind, "size": loc.size, "dwarf_reg": loc.dwarf_reg,
            "reg": _reg(loc.dwarf_reg), "offset": loc.offset, "text": location_str(loc)}


def _entry_dict(m: BinaryMaps, e: MapEntry) -> dict:
    d = {"role": e.role, "type_id": f"{e.type_id:#x}", "type": m.type_name(e.type_id),
         "location": _loc_dict(e.location)}
    if e.role == "derived":
        d["offset"] = e.offset
        d["location"]["text"] += f"{e.offset:+d}"   # the base's location, then the offset
    return d


def maps_to_dict(m: BinaryMaps) -> dict:
    """Everything ``mappedtrace maps`` shows, as JSON-ready data.

    Addresses are integers; type ids are hex strings (they are 62-bit hashes).
    """
    fns = m.functions
    names = {f.address: f.name for f in fns if f.address}
    recs = [m.records[pc] for pc in sorted(m.records)]
    n_call = sum(1 for r in recs if r.kind == "call")
    return {
        "path": m.path,
        "has_maps": m.has_maps,
        "section_sizes": dict(m.section_sizes),
        "summary": {
            "functions": len(fns),
            "instrumented": sum(1 for f in fns if f.status == "instrumented"),
            "partial": sum(1 for f in fns if f.status == "partial"),
            "skipped": sum(1 for f in fns if f.status == "skipped"),
            # what the pass could not instrument, by the reason it gave, most frequent first
            "skipped_reasons": dict(Counter(f.reason for f in fns if f.status == "skipped").most_common()),
            "call_sites": n_call,
            "loop_points": len(recs) - n_call,
            "unmapped_calls": sum(f.n_unmapped_calls for f in fns),
            "tail_calls": sum(f.n_tail_calls for f in fns),
            "derived_entries": sum(1 for r in recs for e in r.entries if e.role == "derived"),
            "entries": sum(len(r.entries) for r in recs),
            "types": len(m.types),
            "globals": len(m.globals),
            "foreign_records": m.foreign_records,
            "alloc_sites": len(getattr(m, "sites", [])),
        },
        "modules": [{"name": c.module_name, "rust": bool(c.flags & CHUNK_RUST),
                     "O0": bool(c.flags & CHUNK_O0), "types": len(c.types),
                     "functions": len(c.functions), "globals": len(c.globals)} for c in m.chunks],
        "functions": [{"name": f.name, "address": f.address, "size": f.size, "status": f.status,
                       "reason": f.reason, "n_callsites": f.n_callsites, "n_loop_points": f.n_loop_points,
                       "n_unmapped_calls": f.n_unmapped_calls, "n_tail_calls": f.n_tail_calls,
                       "allocas": [{"name": a.name, "type_id": f"{a.type_id:#x}", "type": m.type_name(a.type_id),
                                    "size": a.size} for a in f.allocas]} for f in fns],
        "records": [{"pc": r.pc, "kind": r.kind, "function_address": r.function_address,
                     "function": names.get(r.function_address, ""),
                     "entries": [_entry_dict(m, e) for e in r.entries]} for r in recs],
        "types": [{"id": f"{t.id:#x}", "name": t.name, "size": t.size, "kind": t.kind,
                   "flags": _flag_names(t.flags, _TYPE_FLAGS), "elem_type": f"{t.elem_type:#x}",
                   "flex_offset": t.flex_offset,
                   "slots": [{"offset": s.offset, "target": f"{s.target:#x}", "target_type": m.type_name(s.target),
                              "count": s.count, "stride": s.stride, "flags": _flag_names(s.flags, _SLOT_FLAGS)}
                             for s in t.slots],
                   "fields": [{"offset": f.offset, "name": f.name, "type_id": f"{f.type_id:#x}",
                               "type": m.type_name(f.type_id), "flags": _flag_names(f.flags, _FIELD_FLAGS)}
                              for f in getattr(t, "fields", ())]} for t in m.types.values()],
        "globals": [{"name": g.name, "address": g.address, "size": g.size, "type_id": f"{g.type_id:#x}",
                     "type": m.type_name(g.type_id), "tls": g.tls, "constant": g.constant} for g in m.globals],
        "alloc_sites": [{"address": a.address, "kind": a.kind, "type_id": f"{a.type_id:#x}",
                         "type": m.type_name(a.type_id) if a.type_id else "", "file": a.file, "line": a.line,
                         "column": a.column, "function": a.function} for a in getattr(m, "sites", [])],
        "warnings": list(m.warnings),
    }


def render_json(m: BinaryMaps, stream: IO[str]) -> None:
    """Write :func:`maps_to_dict` as indented JSON to ``stream``."""
    json.dump(maps_to_dict(m), stream, indent=2)
    stream.write("\n")


def render_text(m: BinaryMaps, stream: IO[str], width: int | None = None,
                all_records: bool = False) -> None:
    """Rich tables of the maps to ``stream`` (colour only on a terminal).

    :param width: terminal width (None: rich decides; tests fix it)
    :param all_records: list every record (else the first :data:`TEXT_RECORD_LIMIT`)
    """
    d = maps_to_dict(m)
    con = Console(file=stream, width=width, highlight=False, soft_wrap=False)
    s = d["summary"]
    # the sections a binary has (a default build: .mtstack and .mtmap; an older one: .llvm_stackmaps)
    sizes = ", ".join(f"{k} {v} bytes" for k, v in d["section_sizes"].items() if v) or "no map sections"
    con.print(f"[bold]{escape(m.path)}[/bold]: {sizes}")
    con.print(f"functions: {s['functions']} ({s['instrumented']} instrumented, {s['partial']} partial, "
              f"{s['skipped']} skipped) · call sites {s['call_sites']} · loop map points {s['loop_points']} · "
              f"unmapped calls {s['unmapped_calls']} · tail calls {s['tail_calls']} · "
              f"entries {s['entries']} ({s['derived_entries']} derived) · types {s['types']} · "
              f"globals {s['globals']}"
              + (f" · non-MappedTrace records {s['foreign_records']}" if s["foreign_records"] else ""))
    if d["modules"]:
        con.print("modules: " + ", ".join(
            escape(x["name"] or "?") + (" (rust)" if x["rust"] else "") + (" (-O0)" if x["O0"] else "")
            for x in d["modules"]))

    t = Table(box=box.SIMPLE_HEAD, title="functions", title_justify="left")
    name_w = max(12, min(28, con.width - 70, max([len(f["name"]) for f in d["functions"]] + [8])))
    for col in ("function", "address", "size", "status", "calls", "loops", "unmap", "alloc"):
        t.add_column(col, justify="right" if col in ("size", "calls", "loops", "unmap", "alloc") else "left",
                     no_wrap=col != "function", overflow="fold", min_width=name_w if col == "function" else None)
    for f in d["functions"]:
        style = {"instrumented": "green", "partial": "yellow", "skipped": "red"}.get(f["status"], "")
        t.add_row(escape(f["name"]), f"{f['address']:#x}", str(f["size"]),
                  f"[{style}]{f['status']}[/{style}]" if style else f["status"],
                  str(f["n_callsites"]), str(f["n_loop_points"]), str(f["n_unmapped_calls"]),
                  str(len(f["allocas"])))
    con.print(t)
    if s["skipped"]:
        con.print(f"still skipped: {s['skipped']} function{'s' if s['skipped'] > 1 else ''} ("
                  + escape("; ".join(f"{r}: {n}" for r, n in s["skipped_reasons"].items())) + ")", soft_wrap=True)
    # skipped functions first (their frames are scanned), then partial ones
    why = sorted((f for f in d["functions"] if f["reason"]), key=lambda f: f["status"] != "skipped")
    if why:
        con.print("not (fully) instrumented:")
        for f in why:
            con.print(f"  {escape(f['name'])} ({f['status']}): {escape(f['reason'])}", soft_wrap=True)

    recs = d["records"]
    shown = recs if all_records else recs[:TEXT_RECORD_LIMIT]
    t = Table(box=box.SIMPLE_HEAD, title="map points (call sites and loop map points)", title_justify="left")
    for col in ("pc", "kind", "function", "entries"):
        t.add_column(col, no_wrap=col in ("pc", "kind"), overflow="fold",
                     ratio={"function": 1, "entries": 3}.get(col))
    for r in shown:
        ents = "; ".join(f"{e['role']} {escape(e['type'])} @ {escape(e['location']['text'])}" for e in r["entries"])
        t.add_row(f"{r['pc']:#x}", r["kind"], escape(r["function"]), ents or "-")
    con.print(t)
    if len(shown) < len(recs):
        con.print(f"… {len(recs) - len(shown)} more map points (--all, or --json)")

    if not d["types"]:
        con.print("types: none")
    t = Table(box=box.SIMPLE_HEAD, title="types", title_justify="left")
    for col in ("id", "name", "size", "kind", "flags", "pointer slots"):
        t.add_column(col, justify="right" if col == "size" else "left", no_wrap=col == "id", overflow="fold")
    for ty in d["types"]:
        slots = ", ".join(
            f"+{x['offset']}" + (f"×{x['count']}/{x['stride']}" if x["count"] > 1 else "")
            + f"→{escape(x['target_type'])}" + (f"({','.join(x['flags'])})" if x["flags"] else "")
            for x in ty["slots"])
        t.add_row(ty["id"], escape(ty["name"]), str(ty["size"]), ty["kind"], ",".join(ty["flags"]), slots or "-")
    if d["types"]:
        con.print(t)

    if d["alloc_sites"]:
        t = Table(box=box.SIMPLE_HEAD, title="allocation sites (--alloc-sites)", title_justify="left")
        for col in ("record", "kind", "allocated at", "type"):
            t.add_column(col, no_wrap=col == "record", overflow="fold")
        for a in d["alloc_sites"]:
            t.add_row(f"{a['address']:#x}", a["kind"], escape(f"{a['file']}:{a['line']} in {a['function']}"),
                      escape(a["type"]) or "-")
        con.print(t)

    if not d["globals"]:
        con.print("globals: none")
        return
    t = Table(box=box.SIMPLE_HEAD, title="globals", title_justify="left")
    for col in ("global", "address", "size", "type", "flags"):
        t.add_column(col, justify="right" if col == "size" else "left", no_wrap=col == "address", overflow="fold")
    for g in d["globals"]:
        fl = ",".join(n for n, v in (("tls", g["tls"]), ("const", g["constant"])) if v)
        t.add_row(escape(g["name"]), (f"tls+{g['address']:#x}" if g["tls"] else f"{g['address']:#x}"),
                  str(g["size"]), escape(g["type"]), fl)
    con.print(t)


def render_warnings(m: BinaryMaps, stream: IO[str]) -> None:
    """Warnings, one line each, for stderr."""
    for w in m.warnings:
        stream.write(f"mappedtrace: warning: {w}\n")
