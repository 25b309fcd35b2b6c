#!/usr/bin/env python3
"""Why does MappedTrace call these objects leaked?  For every object the precise
analysis leaves unreached, find every aligned word of the snapshot's writable
memory that points into it, and say where that word lies:

- inside a reached heap object: its type as the marker used it, the offset, and
  whether the type's size covers the offset (past it: a flexible array or a
  wrong type by size; inside it: the type says "no pointer" there);
- inside another unreached object (the rest of a leaked structure);
- in a mapping: a thread's stack (and whether above the first frame: the
  argv/envp area), a module's data, anonymous memory (TLS, mmapped chunks).

An object with no referrer at all is a true leak as far as memory shows (or a
pointer hidden by tagging / xor, which no tool here follows).

    PYTHONPATH=. .venv/bin/python benchmarks/soundness/diagnose.py CORE [--top N]
    (CORE: ``mappedtrace snapshot PID -o CORE``)
"""
from __future__ import annotations

import argparse
import collections
import sys

import numpy as np


def referrers(core: str, limit: int = 4) -> list[dict]:
    """One entry per direct leak: its address, size, and referrers (≤ ``limit``)."""
    import mappedtrace
    from mappedtrace.session import analyse

    t = mappedtrace.open_snapshot(core)
    a = analyse(t)
    g = a.graph
    reached = g.reached
    kinds, structs = {}, {}
    for l in a.leaks.leaks:
        kinds[int(l.address)] = l.kind
        structs[int(l.address)] = int(l.structure)
    hits: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)   # node -> [(word address, value)]
    for m in t.mappings:
        if not m.writable or not m.readable:
            continue
        try:
            data = t.read(m.start, m.size)
        except Exception:   # noqa: BLE001 — unreadable mapping (guard page…): nothing to find there
            continue
        w = np.frombuffer(data[: len(data) // 8 * 8], dtype=np.uint64)
        idx = g.find_many(w)
        sel = np.nonzero(idx >= 0)[0]
        for k in sel:
            n = int(idx[k])
            if reached[n]:
                continue
            src = m.start + 8 * int(k)
            if g.find(src) == n:        # a word inside the object itself
                continue
            hits[n].append((src, int(w[k])))
    stacks = _stack_ranges(a)
    out = []
    for i in range(len(g)):
        if reached[i]:
            continue
        addr, size = int(g.addresses[i]), int(g.sizes[i])
        # referrers inside objects first (they decide the cause), then plain memory
        hs = sorted(hits.get(i, []), key=lambda h: (g.find(h[0]) is None, h[1] == addr + size - 8))
        # a word equal to the end of the object's usable bytes minus 8 points at the
        # NEXT chunk's header (its prev_size field overlaps this chunk's last word):
        # glibc's own pointers (main_arena.top, a bin) look like that, and hold nothing
        refs = [("allocator metadata (the next chunk's header): " if val == addr + size - 8 else "")
                + _where(a, g, src, val, stacks) for src, val in hs[:limit]]
        words = g.object_bytes(i, 32)
        out.append({"address": addr, "size": size, "kind": kinds.get(addr, "?"), "structure": structs.get(addr),
                    "nrefs": len(hs), "refs": refs,
                    "words": [] if words is None else
                    [int.from_bytes(words[k:k + 8], "little") for k in range(0, len(words) // 8 * 8, 8)]})
    t.close()
    return out


def _stack_ranges(a) -> list[tuple[int, int, str]]:
    """(lo, hi, label) for each thread's stack as the unwinder saw it."""
    out = []
    for m in a.target.mappings:
        if m.path == "[stack]":
            out.append((m.start, m.end, "[stack]"))
    return out


def _where(a, g, src: int, val: int, stacks) -> str:
    j = g.find(src)
    if j is not None:
        base = int(g.addresses[j])
        tid = int(g.type_ids[j])
        t = g.types.get(tid) if tid else None
        tname = g.type_name(tid) or f"unk{int(g.sizes[j])}"
        how = "reached" if g.reached[j] else "unreached"
        tsize = getattr(t, "size", None)
        past = "" if tsize is None else (" (past the type's size %d)" % tsize if src - base >= tsize else
                                         " (inside the type: a word it calls no-pointer)")
        return f"{how} {tname} @{base:#x}+{src - base} [{int(g.sizes[j])} B, {_how(g, j)}]{past}{_typed_by(g, j)}"
    m = a.target.mapping_at(src)
    name = (m.path or "anonymous") if m else "unmapped"
    extra = ""
    if m is not None and m.path == "[stack]":
        extra = f" (stack top - {m.end - src:#x})"
    elif m is not None and m.path == "[heap]":
        name = "[heap] outside every in-use chunk (free memory or a chunk header)"
    mod = a.modules.module_at(src)
    if mod is not None:
        name = f"{mod.path}"
    return f"memory {name} @{src:#x}{extra}"


def _typed_by(g, j: int) -> str:
    """Where node ``j``'s type came from: the exact edges and root edges into its start."""
    from mappedtrace.graph import EDGE_EXACT
    e = g.edges
    sel = e[(e["dst"] == j) & (e["dst_off"] == 0) & ((e["flags"] & EDGE_EXACT) != 0)]
    out = []
    for x in sel[:2]:
        k = int(x["src"])
        out.append(f"{g.type_name(int(g.type_ids[k])) or 'unk%d' % int(g.sizes[k])}+{int(x['src_off'])}")
    r = g.root_edges
    rsel = r[(r["dst"] == j) & (r["dst_off"] == 0) & ((r["flags"] & EDGE_EXACT) != 0)]
    for x in rsel[:2]:
        out.append(f"root {g.roots[int(x['root'])].source}")
    return f"; typed via {', '.join(out)}" if out else ""


def _how(g, j: int) -> str:
    from mappedtrace.graph import HOW_NAMES
    return HOW_NAMES[int(g.how[j])]


def _category(ref: str) -> str:
    """A referrer description without its addresses and offsets."""
    import re
    ref = re.sub(r" @0x[0-9a-f]+(\+\d+)?", "", ref)
    ref = re.sub(r" \[(\d+) B, ", " [", ref)
    return re.sub(r" \(stack top - 0x[0-9a-f]+\)", "", ref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("core")
    ap.add_argument("--top", type=int, default=40, help="direct leaks to list")
    ap.add_argument("--all", action="store_true", help="list indirect leaks too")
    a = ap.parse_args(argv)
    rows = referrers(a.core)
    shown = 0
    for r in rows:
        if r["kind"] != "direct" and not a.all:
            continue
        if shown < a.top:
            shown += 1
            print(f"{r['kind']} {r['address']:#x} {r['size']} B, {r['nrefs']} referring words; "
                  f"first words {' '.join('%#x' % w for w in r['words'])}")
            for x in r["refs"]:
                print(f"      <- {x}")
    # each leaked structure is charged to the first referrer of its first direct leak
    objects = collections.Counter(r["structure"] for r in rows)
    cause, cause_objects = collections.Counter(), collections.Counter()
    seen = set()
    for r in rows:
        if r["kind"] != "direct":
            continue
        key = _category(r["refs"][0]) if r["refs"] else "no referrer in memory"
        cause[key] += 1
        if r["structure"] not in seen:
            seen.add(r["structure"])
            cause_objects[key] += objects[r["structure"]]
    print(f"\n{sum(cause.values())} direct leaks, {len(rows)} leaked objects, by the first referrer of each direct leak:")
    print("  direct  objects  referrer")
    for k, n in cause.most_common():
        print(f"  {n:6d}  {cause_objects[k]:7d}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
