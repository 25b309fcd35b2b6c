"""Rendering of ``--tree`` runs (one report per process of a process tree, and a summary).

The per-process reports are the commands' own reporters; this module adds
the header that names each process, the summary table, and the combined
JSON document::

    {"processes": [{"pid", "ppid", "exe", "report": {…}} |
                   {"pid", "ppid", "exe", "error": "…", "gone": true|false}],
     "summary": {"processes", "analysed", "gone", "failed", …}}

Executable paths come from the target (user-controlled): they go into
:class:`rich.text.Text`, never through markup.
"""
from __future__ import annotations

import json
from typing import IO, Iterable

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

#: width used when the stream is not a terminal
DEFAULT_WIDTH = 100


def _console(stream: IO[str], width: int | None) -> Console:
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(file=stream, width=width or (None if tty else DEFAULT_WIDTH), force_terminal=tty,
                   no_color=not tty, highlight=False, emoji=False, soft_wrap=False)


def render_header(pid: int, ppid: int, exe: str, stream: IO[str], *, width: int | None = None) -> None:
    """A rule naming the process whose report follows."""
    _console(stream, width).print(Rule(Text(f"process {pid} ({exe or '?'}), parent {ppid}"), align="left"))


def render_summary(rows: list[dict], columns: Iterable[tuple[str, str]], stream: IO[str], *,
                   title: str, width: int | None = None) -> None:
    """The summary table: one row per process (``pid ppid exe status`` and ``columns``:
    ``(key, heading)`` pairs read from each row; a process with an error shows it instead)."""
    columns = list(columns)
    t = Table(title=title, title_justify="left")
    for head in ("pid", "ppid", "exe", "status"):
        t.add_column(head, justify="right" if head in ("pid", "ppid") else "left", overflow="fold")
    for _, head in columns:
        t.add_column(head, justify="right", overflow="fold")
    for r in rows:
        status = "gone" if r.get("gone") else "error" if r.get("error") else "ok"
        cells = [Text(str(r["pid"])), Text(str(r["ppid"])), Text(r.get("exe") or "?"), Text(status)]
        if r.get("error"):
            cells.append(Text(r["error"]))
            cells += [Text("")] * (len(columns) - 1)
        else:
            cells += [Text(str(r.get(k, ""))) for k, _ in columns]
        t.add_row(*cells[:4 + len(columns)])
    _console(stream, width).print(t)


def summary_counts(processes: list[dict]) -> dict:
    """``processes``, ``analysed``, ``gone``, ``failed`` of the JSON ``processes`` list."""
    gone = sum(1 for p in processes if p.get("gone"))
    failed = sum(1 for p in processes if "error" in p and not p.get("gone"))
    return {"processes": len(processes), "analysed": len(processes) - gone - failed, "gone": gone,
            "failed": failed}


def to_json(processes: list[dict], summary: dict, stream: IO[str]) -> None:
    """Write ``{"processes": […], "summary": {…}}``."""
    json.dump({"processes": processes, "summary": summary}, stream, indent=1)
    stream.write("\n")
