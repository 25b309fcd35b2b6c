"""What a relocation pass may move, what is pinned and why, and every word to rewrite.

Input: a heap graph of the stopped process (:class:`~mappedtrace.graph.HeapGraph`,
its exact and conservative edges with their source words) and the root set
(value roots with :attr:`~mappedtrace.roots.Root.where`, derived pointers).

An object may move only when every word that may point into it is known
exactly and can be rewritten.  It is **pinned** when:

* it is unreached (a leak: whatever may hold it is not known exactly);
* the allocator holds it (a thread's tcache struct);
* a conservative root word points into it (an uninstrumented or unsettled
  frame, the registers of a thread not at a map point, data of a module
  without maps, TLS/TCB, the argv area, an anonymous mapping).  glibc's frames
  are among them even where leak finding counts them exact by the glibc
  model (mappedtrace/glibc_model.py): the mover analyses with
  ``glibc_model=False``, since a buffer ``read(2)`` is filling must not move;
* a conservative heap word points into it (the contents of an untyped or
  ambiguous object, the tail of a typed one, an unreached object);
* an exact pointer to it lives where it cannot be rewritten (a register of an
  outer frame: the unwinder recovers its value, not where the callee saved it);
* it cannot be read.

* some word (any heap word, any root range, any root or derived value) equals
  its end address: a pointer one past its end lands outside every object,
  so the graph has no edge for it (conservative: the word may be a number);
* a thread's stack pointer or a frame lies in it (a stack in a heap chunk);
* the kernel holds a pointer into it that /proc shows (``epoll_event.data`` in
  ``/proc/PID/fdinfo``: servers keep their connection objects there).

Known imprecision: pointers the kernel holds that /proc does not show (a
``sigaltstack`` in a heap chunk, ``timer_create``'s ``sigev_value``, AIO
control blocks) are not seen: such objects may be moved.

Known imprecision (written here, at the point where it arises): a pointer
whose *value* the program used (hashed, ordered, ``ptrtoint`` kept in an
integer outside the maps' "may hold a pointer" fields, or mangled as glibc
mangles ``jmp_buf`` pointers) keeps its old value's meaning: a program that
hashes or orders objects by address (Lua's tables as keys) must not be
relocated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MappedTraceError
from ..graph import EDGE_EXACT, EDGE_UNREACHED, HOW_CONSERVATIVE, HOW_TYPED, HOW_UNREACHED, HeapGraph

# pin reasons, in order of precedence (an object pinned for several is counted under the first)
UNREACHED = "unreached (a leak: its holders are not known)"
ALLOCATOR = "held by the allocator (tcache)"
UNREADABLE = "unreadable"
OUTER_REG = "exact pointer in a register of an outer frame (save slot unknown)"
NO_LOCATION = "exact pointer whose location is unknown"
END_POINTER = "a word holding its end address (a pointer one past its end)"
STACK = "a thread's stack is in it"
KERNEL = "the kernel holds a pointer into it (epoll data)"
CONS_HEAP_UNTYPED = "conservative word: contents of an untyped or ambiguous object"
CONS_HEAP_TAIL = "conservative word: tail of a typed object"
CONS_HEAP_UNREACHED = "conservative word: contents of an unreached object"

#: conservative root sources by a phrase of :attr:`Root.source`, first match wins
_ROOT_KINDS = (
    ("(frame scanned)", "conservative root: uninstrumented or unsettled frame"),
    ("exit path", "conservative root: frame on the exit path"),
    ("stack above", "conservative root: stack above the frames (argv, envp, auxv)"),
    ("stack (not unwound)", "conservative root: stack not unwound"),
    ("(no maps)", "conservative root: data of a module without maps"),
    ("outside its typed globals", "conservative root: untyped data of a module with maps"),
    ("tls", "conservative root: TLS or TCB"),
    ("tcb", "conservative root: TLS or TCB"),
    ("heap: corrupted", "conservative root: corrupted heap region"),
)
_ROOT_REGS = "conservative root: registers of a thread not at a map point"
_ROOT_OTHER = "conservative root: other memory (anonymous mappings)"


def root_reason(source: str, kind: str) -> str:
    """The pin reason for a conservative root with provenance ``source``."""
    s = source.lower()
    if kind == "value":
        return _ROOT_REGS
    for phrase, why in _ROOT_KINDS:
        if phrase in s:
            return why
    return _ROOT_OTHER


@dataclass(frozen=True)
class Site:
    """One word to rewrite: ``where`` is ``("mem", address)`` or ``("reg", tid, name)``;
    it holds ``old``, a pointer at byte ``old - address`` of object ``obj``."""

    where: tuple
    old: int
    obj: int


@dataclass
class Plan:
    """The objects to move (node indices, address order), pinned ones with their
    reasons, and every word that points into a moving object."""

    graph: HeapGraph
    moves: list[int]
    pinned: dict[int, str]
    sites: list[Site]
    #: objects the selection named that are not in-use objects (addresses)
    not_objects: list[int] = field(default_factory=list)
    selected: int = 0

    def figures(self) -> dict:
        """Moved/pinned counts and bytes, pinned by reason; like the leak report's precision."""
        g = self.graph
        sizes = g.sizes.astype(np.int64)
        by: dict[str, list[int]] = {}
        for i, why in self.pinned.items():
            c = by.setdefault(why, [0, 0])
            c[0] += 1
            c[1] += int(sizes[i])
        reached = int(np.count_nonzero(g.how != HOW_UNREACHED))
        movable_all = len(g) - len(self.pinned)
        return {
            "objects": len(g), "bytes": int(sizes.sum()), "objects_reached": reached,
            "selected": self.selected,
            "moved_objects": len(self.moves), "moved_bytes": int(sizes[self.moves].sum()) if self.moves else 0,
            "movable_objects": movable_all,
            "movable_bytes": int(sizes.sum()) - sum(v[1] for v in by.values()),
            "pinned_objects": len(self.pinned), "pinned_bytes": sum(v[1] for v in by.values()),
            "pinned_by_reason": {k: {"objects": v[0], "bytes": v[1]}
                                 for k, v in sorted(by.items(), key=lambda kv: -kv[1][0])},
            "rewrites": len(self.sites),
            "rewrites_in_registers": sum(1 for s in self.sites if s.where[0] == "reg"),
            "not_objects": [hex(a) for a in self.not_objects],
        }


def _pin(pinned: dict[int, str], nodes, why: str) -> None:
    for i in np.unique(np.asarray(nodes, dtype=np.int64)):
        if i >= 0:
            pinned.setdefault(int(i), why)


#: bound on the root-range bytes read back for the end-address check
MAX_ROOT_BYTES = 256 << 20


def _all_words(g: HeapGraph, read=None) -> list[np.ndarray]:
    """Every aligned word of the heap bytes the marker read, and of the root ranges
    (read through ``read(addr, size)`` when given), as u64 arrays."""
    out = []
    if g.mem is not None:
        for arr in g.mem.arrays:
            n = len(arr) // 8 * 8
            if n:
                out.append(arr[:n].view("<u8"))
    if read is not None:
        left = MAX_ROOT_BYTES
        for r in g.roots:
            if r.kind != "range" or r.size < 8 or r.size > left:
                continue
            try:
                data = read(r.value, r.size)
            except Exception:      # a root the marker could not read either
                continue
            left -= r.size
            out.append(np.frombuffer(data[:len(data) // 8 * 8], dtype="<u8"))
    return out


def make_plan(graph: HeapGraph, rootset, select: str | list[int] | dict = "all", limit: int | None = None,
              read=None, kernel_values=()) -> Plan:
    """Decide what moves.

    :param select: ``"all"`` (every object that can move), a list of object
        addresses (each the start of an in-use object; others are listed in
        :attr:`Plan.not_objects`), ``{"types": [name, …]}`` (objects the
        graph gives one of these type names; a size-guessed name never counts),
        or a callable ``(graph, pinned) -> node indices`` (pinned ones are
        dropped all the same)
    :param limit: move at most this many (the first in address order)
    :param read: ``read(addr, size) -> bytes`` of the stopped target, for the
        end-address check of root ranges (None: heap words and root values only)
    :param kernel_values: pointers the kernel holds (:func:`kernel_held_values`)
    """
    g = graph
    n = len(g)
    pinned: dict[int, str] = {}
    # precedence: each _pin keeps the first reason
    _pin(pinned, np.nonzero(g.how == HOW_UNREACHED)[0], UNREACHED)
    for e in g.root_edges:
        r = g.roots[int(e["root"])]
        if r.source.startswith("allocator:"):
            _pin(pinned, [int(e["dst"])], ALLOCATOR)
    if len(kernel_values) and n:
        kv = np.asarray(list(kernel_values), dtype=np.uint64)
        _pin(pinned, g.find_many(kv), KERNEL)
    if g.memoff is not None:
        _pin(pinned, np.nonzero(g.memoff < 0)[0], UNREADABLE)
    # conservative roots
    re_ = g.root_edges
    cons_r = re_[(re_["flags"] & EDGE_EXACT) == 0]
    for e in cons_r:
        r = g.roots[int(e["root"])]
        pinned.setdefault(int(e["dst"]), root_reason(r.source, r.kind))
    # conservative heap words, by how their source object was scanned
    edges = g.edges
    cons = edges[((edges["flags"] & EDGE_EXACT) == 0) | ((edges["flags"] & EDGE_UNREACHED) != 0)]
    if len(cons):
        how = g.how[cons["src"]]
        _pin(pinned, cons["dst"][how == HOW_UNREACHED], CONS_HEAP_UNREACHED)
        _pin(pinned, cons["dst"][how == HOW_CONSERVATIVE], CONS_HEAP_UNTYPED)
        _pin(pinned, cons["dst"][how == HOW_TYPED], CONS_HEAP_TAIL)
    # exact roots: a location we can rewrite, or a pin
    exact_r = re_[(re_["flags"] & EDGE_EXACT) != 0]
    root_sites: list[Site] = []
    for e in exact_r:
        r = g.roots[int(e["root"])]
        dst = int(e["dst"])
        val = int(g.addresses[dst]) + int(e["dst_off"])
        if r.kind == "range":
            root_sites.append(Site(("mem", r.value + int(e["root_off"])), val, dst))
        elif r.where is None:
            pinned.setdefault(dst, NO_LOCATION)
        elif r.where[0] == "reg" and r.where[1] != 0:
            pinned.setdefault(dst, OUTER_REG)
        elif r.where[0] == "reg":
            root_sites.append(Site(("reg", r.thread, r.where[2]), r.value, dst))
        else:
            root_sites.append(Site(("mem", r.where[1]), r.value, dst))
    # derived pointers (interior pointers of exact frames): rewritten with their base's object
    # every value root, exact or not (a register of a thread in libc may hold an end bound)
    values = [r.value for r in g.roots if r.kind == "value"]
    derived = list(getattr(rootset, "derived", []))
    for v, where, _src, tid in derived:
        dst = g.find(v)
        values.append(v)
        if dst is None:
            continue
        if where is None:
            pinned.setdefault(dst, NO_LOCATION)
        elif where[0] == "reg" and where[1] != 0:
            pinned.setdefault(dst, OUTER_REG)
        elif where[0] == "reg":
            root_sites.append(Site(("reg", tid, where[2]), v, dst))
        else:
            root_sites.append(Site(("mem", where[1]), v, dst))
    # a word equal to an object's end (outside every object: no edge says so)
    if n:
        ends = g.addresses + g.sizes
        for v in [np.asarray(values, dtype=np.uint64), *_all_words(g, read)]:
            if not len(v):
                continue
            hit = np.searchsorted(ends, v)
            ok = hit < n
            hit, v = hit[ok], v[ok]
            _pin(pinned, hit[ends[hit] == v], END_POINTER)
        # stacks in heap chunks (coroutines, threads given a malloc'd stack)
        sps = [x for fs in getattr(rootset, "frames", {}).values() for f in fs
               for x in (f.sp_low, f.cfa) if x]
        if sps:
            _pin(pinned, g.find_many(np.asarray(sps, dtype=np.uint64)), STACK)

    # the selection
    not_objects: list[int] = []
    if callable(select):
        # a policy that looks at the pins (mappedtrace compact chooses whole pages)
        chosen = np.unique(np.asarray(select(g, pinned), dtype=np.int64))
    elif select == "all":
        chosen = np.arange(n, dtype=np.int64)
    elif isinstance(select, dict):
        names = set(select.get("types", ()))
        ids = {tid for tid in np.unique(g.type_ids).tolist() if tid and g.type_name(tid) in names}
        chosen = np.nonzero(np.isin(g.type_ids, np.asarray(sorted(ids), dtype=np.uint64)))[0] \
            if ids else np.zeros(0, np.int64)
    else:
        idx = []
        for a in select:
            i = g.find(a)
            if i is None or int(g.addresses[i]) != a:
                not_objects.append(a)
            else:
                idx.append(i)
        chosen = np.unique(np.asarray(idx, dtype=np.int64))
    moves = [i for i in chosen.tolist() if i not in pinned]
    if limit is not None:
        moves = moves[:limit]
    moving = np.zeros(n, bool)
    moving[moves] = True

    # heap words: exact edges into moving objects (their source word's address)
    sites: list[Site] = []
    ex = edges[((edges["flags"] & EDGE_EXACT) != 0) & ((edges["flags"] & EDGE_UNREACHED) == 0)]
    ex = ex[moving[ex["dst"]]] if len(ex) else ex
    if len(ex):
        wa = (g.addresses[ex["src"]] + ex["src_off"].astype(np.uint64)).tolist()
        ov = (g.addresses[ex["dst"]] + ex["dst_off"].astype(np.uint64)).tolist()
        sites = [Site(("mem", a), v, d) for a, v, d in zip(wa, ov, ex["dst"].tolist())]
    sites += [s for s in root_sites if moving[s.obj]]
    # one rewrite per word (the same word can be reached twice, e.g. overlapping ranges)
    uniq: dict[tuple, Site] = {}
    for s in sites:
        prev = uniq.setdefault(s.where, s)
        if prev.old != s.old:
            raise MappedTraceError(f"word {s.where} read as both {prev.old:#x} and {s.old:#x}",
                                   hint="the graph is inconsistent: report it")
    return Plan(g, moves, pinned, list(uniq.values()), not_objects,
                selected=len(chosen))


#: bound on the descriptors and lines of /proc/PID/fdinfo read
MAX_FDS = 65536
MAX_FDINFO_LINES = 1 << 20


def kernel_held_values(pid: int) -> list[int]:
    """User data the kernel keeps for ``pid`` that may be pointers: the ``data``
    of every epoll registration (``/proc/PID/fdinfo/FD``, lines ``tfd: …
    data: HEX``).  Unreadable entries are skipped (a descriptor closed meanwhile)."""
    import os
    out: list[int] = []
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")[:MAX_FDS]
    except OSError:
        return out
    lines = 0
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    lines += 1
                    if lines > MAX_FDINFO_LINES:
                        return out
                    if line.startswith("tfd:") and " data:" in line:
                        tok = line.split(" data:", 1)[1].split()
                        if tok:
                            try:
                                out.append(int(tok[0], 16))
                            except ValueError:
                                pass
        except OSError:
            continue
    return out
