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


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def render_compaction(d: dict, out: TextIO) -> None:
    """A compaction pass (:mod:`mappedtrace.relocate.compact`): pages first, then the moves."""
    c = d["compaction"]
    s = d["summary"]
    b = c["before"]
    if d.get("recovered") and d["recovered"]["action"] != "none":
        render_recovery(d["recovered"], out)
    if c["mode"] == "trim-only":
        out.write("malloc_trim(0) only (the baseline)\n")
    elif d["dry_run"]:
        p = c["plan"]
        out.write(f"would move {p['objects']} objects ({_kib(p['bytes'])}) off {c['source_pages']} of "
                  f"{c['pages_in_use']} used heap pages (pages at most {c['max_occupancy']:.0%} full whose "
                  f"every chunk can move; {c['blocked_pages']} hold a pinned or tcache-held chunk)\n")
        out.write(f"estimate: about {p['estimated_pages_freed']} pages freed if the moved objects took new "
                  "pages, packed\n")
    else:
        out.write(f"moved {s['moved_objects']} objects ({_kib(s['moved_bytes'])}) off {c['source_pages']} "
                  f"sparse pages; {s['rewrites']} pointers rewritten")
        if d.get("skipped"):
            out.write(f"; {d['skipped']} objects stayed (no place off those pages)")
        out.write("\n")
    out.write(f"heap: {b['heap_pages']} pages, {b['heap_resident_pages']} resident; {b['free_whole_pages']} "
              f"free whole pages, {b['free_whole_pages_resident']} of them resident (what malloc_trim would "
              "give back)\n")
    if "after" in c:
        a, r = c["after"], c["released"]
        out.write(f"after: {a['heap_pages']} pages, {a['heap_resident_pages']} resident: "
                  f"{r['heap_resident_pages']} pages released ({_mib(r['heap_resident_pages'] * 4096)}); "
                  f"{a['free_whole_pages']} free whole pages, {a['free_whole_pages_resident']} resident\n")
        out.write(f"RssAnon {_mib(b['rss_anon'])} -> {_mib(a['rss_anon'])}, VmRSS {_mib(b['vm_rss'])} -> "
                  f"{_mib(a['vm_rss'])}\n")
    if c["mode"] != "trim-only" and s["pinned_by_reason"]:
        out.write("pinned by reason:\n")
        for why, n in s["pinned_by_reason"].items():
            out.write(f"  {n['objects']:>8} objects {_kib(n['bytes']):>12}  {why}\n")
    t = d.get("timings_ms") or {}
    if t:
        out.write("timings: " + ", ".join(f"{k} {v:.1f} ms" for k, v in t.items()) + "\n")
