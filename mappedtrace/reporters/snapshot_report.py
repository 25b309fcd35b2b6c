"""Rendering of a snapshot's outcome (``mappedtrace snapshot``).

:func:`snapshot_to_dict` is the JSON-ready view of a captured target and the
file written; :func:`render_text` and :func:`render_json` write it to a
stream they are given.  Thread names come from the target (user-controlled):
escaped before rich sees them.
"""
from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..target.base import Target


def snapshot_to_dict(target: Target, path: str, file_bytes: int) -> dict:
    """What ``mappedtrace snapshot`` reports: threads, settle states, bytes, pause."""
    m = target.meta
    states: dict[str, int] = {}
    for t in target.threads:
        states[t.settle] = states.get(t.settle, 0) + 1
    return {
        "pid": target.pid, "exe": target.exe, "file": path, "file_bytes": file_bytes,
        "backend": m.get("backend", ""), "mode": m.get("mode", ""),
        "pause_ns": int(m.get("pause_ns", 0)),
        "stop_ns": int(m.get("stop_ns", 0)), "settle_ns": int(m.get("settle_ns", 0)),
        "copy_ns": int(m.get("copy_ns", 0)), "fork_ns": int(m.get("fork_ns", 0)),
        "captured_bytes": int(m.get("captured_bytes", 0)),
        "was_stopped": bool(m.get("was_stopped", False)),
        "settle_states": states,
        "threads": [{"tid": t.tid, "name": t.name, "pc": t.pc, "sp": t.sp,
                     "in_syscall": t.regs.get("orig_rax", -1) != (1 << 64) - 1,
                     "settle": t.settle, "settle_steps": t.settle_steps} for t in target.threads],
        "warnings": list(target.warnings),
    }


def render_json(d: dict, out: IO[str]) -> None:
    json.dump(d, out, indent=2)
    out.write("\n")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def render_text(d: dict, out: IO[str], width: int | None = None) -> None:
    """Threads table and a summary line, rich-formatted."""
    con = Console(file=out, width=width, highlight=False, soft_wrap=False)
    con.print(f"[bold]snapshot[/] of process {d['pid']} ({escape(d['exe'])}) → {escape(d['file'])}")
    tab = Table(box=None, pad_edge=False, show_edge=False)
    for col, just in (("tid", "right"), ("name", "left"), ("pc", "right"), ("state", "left"),
                      ("settle", "left"), ("steps", "right")):
        tab.add_column(col, justify=just)
    for t in d["threads"]:
        style = {"settled": "green", "unsettled": "yellow", "uninstrumented": "dim"}.get(t["settle"], "")
        tab.add_row(str(t["tid"]), escape(t["name"]), f"{t['pc']:#x}",
                    "syscall" if t["in_syscall"] else "running",
                    f"[{style}]{t['settle']}[/]" if style else t["settle"], str(t["settle_steps"]))
    con.print(tab)
    mib = d["captured_bytes"] / (1 << 20)
    states = ", ".join(f"{n} {s}" for s, n in sorted(d["settle_states"].items()))
    con.print(f"{len(d['threads'])} threads ({states}) · mode {d['mode']} · backend {d['backend']} · "
              f"captured {mib:.1f} MiB · pause {_ms(d['pause_ns'])} "
              f"(stop {_ms(d['stop_ns'])}, settle {_ms(d['settle_ns'])}, "
              + (f"fork {_ms(d['fork_ns'])})" if d["mode"] == "fork" else f"copy {_ms(d['copy_ns'])})")
              + f" · file {d['file_bytes'] / (1 << 20):.1f} MiB")


def render_warnings(d: dict, err: IO[str]) -> None:
    for w in d["warnings"]:
        err.write(f"mappedtrace: warning: {w}\n")
