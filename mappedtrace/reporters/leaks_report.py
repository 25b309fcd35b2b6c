"""Render a :class:`~mappedtrace.analyses.leaks.LeakReport`: rich text or JSON.

Every user-controlled string (type names such as ``[u8; 16]``, previews of
target memory, root sources) goes into :class:`rich.text.Text` cells, never
through markup; when the stream is not a terminal the width is fixed
(:data:`DEFAULT_WIDTH`) and colour is off, so the output is stable.
"""
from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..analyses.leaks import LeakReport

#: width used when the stream is not a terminal
DEFAULT_WIDTH = 100
#: objects listed per structure
OBJECTS_PER_STRUCTURE = 5


def _console(stream: IO[str], width: int | None) -> Console:
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(file=stream, width=width or (None if tty else DEFAULT_WIDTH),
                   force_terminal=tty, no_color=not tty, highlight=False, emoji=False,
                   soft_wrap=False)


def _n(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(report: LeakReport, stream: IO[str], *, width: int | None = None,
           structures: int = 5) -> None:
    """Write the human-readable leak report to ``stream``.

    :param width: columns (default: the terminal's, or :data:`DEFAULT_WIDTH`).
    :param structures: how many of the biggest leaked structures to show.
    """
    con = _console(stream, width)
    for n in report.notes:
        con.print(Text(f"note: {n}", style="yellow"))
    s = report.summary
    if s["leaked_objects"] == 0:
        con.print(Text(f"no leaks: {_n(s['reachable_objects'], 'object')} "
                       f"({_bytes(s['reachable_bytes'])}) reachable", style="bold green"))
    else:
        con.print(Text.assemble(
            (f"{_n(s['leaked_objects'], 'leaked object')} ({_bytes(s['leaked_bytes'])})", "bold red"),
            f" in {_n(s.get('structures', len(report.structures)), 'structure')}: "
            f"{s['direct_objects']} direct, {s['indirect_objects']} indirect; "
            f"{_n(s['reachable_objects'], 'object')} ({_bytes(s['reachable_bytes'])}) reachable"))
        t = Table(title="leaks by type", title_justify="left", expand=False)
        for col, just in (("type", "left"), ("objects", "right"), ("bytes", "right"),
                          ("direct", "right"), ("indirect", "right")):
            t.add_column(col, justify=just, overflow="fold")
        for name, cnt, nbytes, d, i in report.by_type():
            t.add_row(Text(name), str(cnt), str(nbytes), str(d), str(i))
        con.print(t)
        by_site = report.by_site()
        if by_site:
            t = Table(title="leaks by allocation site", title_justify="left", expand=False)
            for col, just in (("allocated at", "left"), ("type", "left"), ("objects", "right"),
                              ("bytes", "right"), ("direct", "right"), ("indirect", "right")):
                t.add_column(col, justify=just, overflow="fold")
            for site, name, cnt, nbytes, d, i in by_site:
                t.add_row(Text(site or "(no site)"), Text(name), str(cnt), str(nbytes), str(d), str(i))
            con.print(t)
        for st in report.structures[:structures]:
            types = ", ".join(f"{k} x{v}" for k, v in sorted(st.types.items(), key=lambda kv: -kv[1]))
            con.print(Text.assemble((f"structure #{st.index}", "bold"),
                                    f": {_n(st.objects, 'object')}, {_bytes(st.bytes)} ({types})"),
                      overflow="ellipsis", no_wrap=True)
            for l in st.leaks[:OBJECTS_PER_STRUCTURE]:
                how = f" [{l.type_source}]" if l.type_source in ("pointer", "size") else ""
                line = Text(f"  {l.kind:8} {l.address:#x} {l.size:>7} B  ")
                line.append(Text(l.type + how))
                if l.site:
                    line.append(Text(f"  allocated at {l.site}"))
                if l.preview and not l.type_id:
                    line.append(Text("  " + l.preview, style="dim"))
                con.print(line, overflow="ellipsis", no_wrap=True)
            if st.objects > OBJECTS_PER_STRUCTURE:
                con.print(Text(f"  … {st.objects - OBJECTS_PER_STRUCTURE} more"))
    render_precision(report.precision, con)
    if report.capture is not None:
        con.print(Text(capture_line(report.capture)))
    if report.warnings:
        con.print(Text(f"{len(report.warnings)} warnings (see stderr)", style="yellow"))


def capture_line(c: dict) -> str:
    """One line saying how long a live process was paused, and how."""
    if c.get("mode") == "remote":
        return (f"process paused {c['pause_ms']:.1f} ms by us through {c.get('remote', '?')} "
                f"({_bytes(c.get('bytes_read', 0))} read in {c.get('round_trips', 0)} round trips); "
                f"analysed on the copy after we detached")
    part = f"fork {c['fork_ms']:.1f} ms" if "fork_ms" in c else f"copy {c.get('copy_ms', 0):.1f} ms"
    line = (f"process paused {c['pause_ms']:.1f} ms to capture it ({c['mode']}: stop {c['stop_ms']:.1f} ms, "
            f"{part}, {_bytes(c['captured_bytes'])} copied); analysed on the copy while it ran")
    if c.get("fallback"):
        line += f" — {c['fallback']}"
    return line


def render_precision(p: dict, con: Console) -> None:
    """The precision figures as a small table."""
    t = Table(title=escape(f"precision ({p.get('mode', '?')} marking, {p.get('kernel', '?')} kernel)"),
              title_justify="left", show_header=True)
    t.add_column("what")
    t.add_column("exact", justify="right")
    t.add_column("conservative", justify="right")
    t.add_column("exact share", justify="right")

    def row(name: str, a: int, b: int) -> None:
        t.add_row(name, str(a), str(b), _pct(a, a + b))

    row("frames", p.get("frames_exact", 0), p.get("frames_conservative", 0))
    row("roots", p.get("roots_exact", 0), p.get("roots_conservative", 0))
    row("heap bytes (typed / scanned)", p.get("heap_bytes_typed", 0), p.get("heap_bytes_conservative", 0))
    row("edges", p.get("edges_exact", 0), p.get("edges_conservative", 0))
    con.print(t)
    con.print(Text(f"dangling pointers: {p.get('dangling_pointers', 0)}   "
                   f"pointers to globals/stacks: {p.get('pointers_to_static', 0)}   "
                   f"ambiguous objects: {p.get('objects_ambiguous', 0)}   "
                   f"unreadable objects: {p.get('unreadable_objects', 0)}"))
    if p.get("frames_exact_by_glibc_model"):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(p.get("frames_by_model", {}).items()))
        con.print(Text(f"frames exact by glibc model: {p['frames_exact_by_glibc_model']} ({kinds}; "
                       f"{p.get('glibc_model', '')})"))
    elif str(p.get("glibc_model", "")).startswith("off"):
        con.print(Text(f"glibc model {p['glibc_model']}"))
    if p.get("objects_with_site"):
        con.print(Text(f"allocation sites: {p['objects_with_site']} objects with a site "
                       f"({p.get('objects_with_site_type', 0)} of a known type); "
                       f"{p.get('objects_typed_by_site', 0)} typed by their site "
                       f"({_bytes(p.get('heap_bytes_typed_by_site', 0))})"))
        w = p.get("untyped_pointer_writes", -1)
        con.print(Text(f"  byte buffers skipped: {p.get('objects_bytes_by_site', 0)} "
                       f"({_bytes(p.get('heap_bytes_bytes_by_site', 0))}); named only: "
                       f"{p.get('objects_named_by_site', 0)} ({_bytes(p.get('heap_bytes_named_by_site', 0))}); "
                       f"untyped pointer writes: {w if w >= 0 else 'not counted'}"))
    if p.get("derived_objects"):
        con.print(Text(_derived_line(p)))
    if p.get("heap_corrupted_regions"):
        con.print(Text(f"corrupted heap: {p['heap_corrupted_regions']} region(s), "
                       f"{_bytes(p.get('heap_corrupted_bytes', 0))}: objects there are not known, not reported "
                       "as leaks, and scanned conservatively as roots (see the warnings)", style="yellow"))
    if p.get("stack_above_frames_bytes") or p.get("frames_exit_path_scanned"):
        con.print(Text(f"stack scanned above the outermost frames: {_bytes(p.get('stack_above_frames_bytes', 0))}   "
                       f"exit-path frames scanned: {p.get('frames_exit_path_scanned', 0)}"))


def _derived_line(p: dict) -> str:
    """The figures of typing by holder (analyses/containers.py): names only."""
    return (f"named by their holder (container buffers, nodes, control blocks): {p.get('derived_objects', 0)} "
            f"objects, {_bytes(p.get('derived_bytes', 0))}; of those scanned by a type: "
            f"{p.get('derived_objects_typed', 0)} ({_bytes(p.get('derived_bytes_typed', 0))}), the rest "
            f"conservatively (a derived type never decides what is scanned)")


def to_json(report: LeakReport, stream: IO[str], *, indent: int | None = 1) -> None:
    """Write the leak JSON of DESIGN.md (``summary``, ``leaks``, ``precision`` …).

    With the default ``indent=1`` the text is exactly ``json.dump(report.to_dict(),
    indent=1)``'s, but the two long lists are written from templates: the
    standard encoder takes about 45 µs per leak (9 s for 200 000 leaks)."""
    if indent != 1:
        json.dump(report.to_dict(), stream, indent=indent)
        stream.write("\n")
        return
    _write_json1(report, stream)


_str = json.encoder.encode_basestring_ascii       # what json.dumps uses for a str (ensure_ascii)
_LEAK = ('  {\n   "address": %d,\n   "size": %d,\n   "type": %s,\n   "kind": %s,\n   "structure": %d,'
         '\n   "type_source": %s,\n   "preview": %s,\n   "site": %s\n  }')
_STRUCT = '  {\n   "index": %d,\n   "objects": %d,\n   "bytes": %d,\n   "direct": %s,\n   "types": %s\n  }'
_ONE_DIRECT = '[\n    %d\n   ]'
_ONE_TYPE = '{\n    %s: 1\n   }'
#: items joined before one write
_BATCH = 4096


def _nested(value, level: int) -> str:
    """``json.dumps(value, indent=1)`` as it reads ``level`` levels deep."""
    return json.dumps(value, indent=1).replace("\n", "\n" + " " * level)


class _Quoted(dict):
    """str -> its JSON text, made once per distinct string."""

    def __missing__(self, key: str) -> str:
        v = _str(key)
        if len(self) < 65536:
            self[key] = v
        return v


def _write_list(stream: IO[str], items) -> None:
    """A list at level 1 whose items (already laid out at level 2) come from ``items``."""
    buf: list[str] = []
    first = True
    for text in items:
        buf.append(text)
        if len(buf) == _BATCH:
            stream.write(("[\n" if first else ",\n") + ",\n".join(buf))
            first = False
            buf.clear()
    if buf:
        stream.write(("[\n" if first else ",\n") + ",\n".join(buf))
        first = False
    stream.write("[]" if first else "\n ]")


def _write_json1(report: LeakReport, stream: IO[str]) -> None:
    q = _Quoted()

    def direct(xs: list[int]) -> str:
        if len(xs) == 1:
            return _ONE_DIRECT % xs[0]
        return "[\n    " + ",\n    ".join(str(x) for x in xs) + "\n   ]" if xs else "[]"

    def counts(d: dict[str, int]) -> str:
        if len(d) == 1:
            (k, v), = d.items()
            if v == 1:
                return _ONE_TYPE % q[k]
        return "{\n    " + ",\n    ".join(f"{q[k]}: {v}" for k, v in d.items()) + "\n   }" if d else "{}"

    stream.write('{\n "summary": ' + _nested(dict(report.summary), 1)
                 + ',\n "notes": ' + _nested(list(report.notes), 1) + ',\n "leaks": ')
    _write_list(stream, (_LEAK % (a, sz, q[t], q[k], st, q[so], q[pv], "null" if si is None else q[si])
                         for a, sz, t, k, st, so, pv, si in report.leak_rows()))
    stream.write(',\n "structures": ')
    _write_list(stream, (_STRUCT % (i, n, b, direct(d), counts(ty))
                         for i, n, b, d, ty in report.structure_rows()))
    stream.write(',\n "sites": ' + _nested(report.to_dict_sites(), 1))
    stream.write(',\n "precision": ' + _nested(dict(report.precision), 1)
                 + ',\n "warnings": ' + _nested(list(report.warnings), 1)
                 + ("" if report.capture is None else ',\n "capture": ' + _nested(dict(report.capture), 1))
                 + "\n}\n")
