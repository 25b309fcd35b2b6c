"""Text report of a relocation pass (the JSON is :meth:`PassResult.to_dict` as is)."""
from __future__ import annotations

from typing import TextIO


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def render(d: dict, out: TextIO) -> None:
    s = d["summary"]
    if d.get("recovered") and d["recovered"]["action"] != "none":
        render_recovery(d["recovered"], out)
    verb = "would move" if d["dry_run"] else "moved"
    out.write(f"{verb} {s['moved_objects']} of {s['selected']} selected objects ({_kib(s['moved_bytes'])}); "
              f"{s['rewrites']} pointers rewritten ({s['rewrites_in_registers']} in registers)\n")
    out.write(f"heap: {s['objects']} objects ({_kib(s['bytes'])}); movable {s['movable_objects']} "
              f"({_kib(s['movable_bytes'])}), pinned {s['pinned_objects']} ({_kib(s['pinned_bytes'])})\n")
    if s.get("pages_before"):
        out.write(f"the moved objects spanned {s['pages_before']} pages, now {s['pages_after']}\n")
    if s["pinned_by_reason"]:
        out.write("pinned by reason:\n")
        for why, c in s["pinned_by_reason"].items():
            out.write(f"  {c['objects']:>8} objects {_kib(c['bytes']):>12}  {why}\n")
    if s["not_objects"]:
        out.write(f"not the start of an in-use object (ignored): {', '.join(s['not_objects'][:10])}"
                  f"{' …' if len(s['not_objects']) > 10 else ''}\n")
    t = d.get("timings_ms") or {}
    if t:
        out.write("timings: " + ", ".join(f"{k} {v:.1f} ms" for k, v in t.items()) + "\n")


def render_recovery(r: dict, out: TextIO) -> None:
    if r["action"] == "none":
        out.write("nothing to recover\n")
        return
    out.write(f"recovered an interrupted pass: {r['action']} ({r['words']} words restored, "
              f"{r['freed']} chunks freed, {r['leaked']} chunks left allocated rather than risk a double free)\n")
    if r.get("changed"):
        out.write(f"warning: {r['changed']} words had changed since the pass (the process was continued "
                  "before the recovery): left as they were\n")
