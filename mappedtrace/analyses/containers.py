"""Typing by holder: the heap buffers of containers named from the container that holds them.

The buffer of a Rust ``Vec<T>`` is reached through a ``*const u8`` and the
nodes of a ``std::map`` through ``_Rb_tree_node_base*``: the marker reaches
them untyped or by a base type.  The container object itself is typed (a
global, a frame slot, a field of a typed heap object), and its type's fields
and template arguments (``.mtmap`` version 2) say what the buffer holds.
:func:`derive_types` reads each container's words and gives the object its
pointer reaches a **derived type**:

=================================  ===========================================  ==================
holder                             object                                       said of it
=================================  ===========================================  ==================
``alloc::vec::Vec<T>``             ``alloc::vec::Vec<T> buffer``: ``len`` Ts    len, cap
``alloc::string::String``          ``alloc::string::String buffer`` (str)       len, cap
``std::collections::…HashMap``     ``HashMap<K, V> table`` (hashbrown: buckets  items, buckets
                                   of ``(K, V)`` below the control bytes)
``alloc::boxed::Box<[T]>``         ``Box<[T]> buffer``                          len
``alloc::rc::Rc<T>``/``Arc<T>``    ``RcInner<T>`` / ``ArcInner<T>`` (the table's)
``std::vector<T>``                 ``std::vector<T> buffer``: ``T[cap]``        len, cap
``std::basic_string``              ``… buffer`` (only when not the local SSO    len, cap
                                   buffer)
``std::_Rb_tree`` (map, set)       ``std::_Rb_tree_node<V>``, and every node
                                   linked from it
``std::_Hashtable``                ``… buckets`` and ``_Hash_node<V, …>``        buckets
``std::list<T>``                   ``std::_List_node<T>``, every node linked
``alloc::…::VecDeque<T>``          ``VecDeque<T> buffer`` (a ring from ``head``) len, cap
``std::__shared_ptr<T>``           ``_Sp_counted_ptr_inplace<T, …>`` (the T in
                                   the block) or ``_Sp_counted_ptr<T *, …>``
=================================  ===========================================  ==================

Elements are holders in turn (a ``Vec<String>``'s buffer types the strings'
buffers; a map node's key types its string's buffer), and the live elements
of a buffer of pointers (``std::vector<T *>``) name the untyped objects they
point to at their start ``T``.  The leak analysis
runs the same rules from the types it infers for unreachable objects
(:func:`derive_from`: a leaked ``Rc`` cycle's ``Vec`` buffers).  A C++ object
no holder names is named by its virtual table when it has one: the word at
offset 0 pointing into ``vtable for X`` makes it an ``X`` (the
dynamic class, also where the marker typed the object by a base class), which
names the control blocks of a leaked ``shared_ptr`` cycle and a
``_Sp_counted_ptr`` the table lacks.

Soundness (issue #11's rule): **a derived type names an object; it never
decides which of its words are scanned** — the marker has run before this
pass and scanned such buffers as their own pointers typed them (mostly
conservatively, as untyped ``u8`` buffers).  So a ``Vec<u64>`` buffer's words
beyond ``len``, or a ``Vec<u8>`` written by C code, are scanned as before.
``Precision.derived_*`` counts the derived objects and bytes, and of those the
ones the marker itself scanned by a type (``derived_objects_typed``).

Only live elements are read for nested holders: a ``Vec``'s first ``len``
elements, a hash table's full buckets (control byte < 0x80).  Each container
is checked against its chunk (``len <= cap``, ``cap`` elements fit the chunk,
the pointer at the chunk's start, or at the control bytes for hashbrown);
a container failing the check gives nothing.  Rust enum variants are all
read (which one is live is not known): a container in an inactive variant
must pass the same check to name anything.  Known imprecision: a node whose
first holder is not a container keeps the marker's name; two holders of one
object: the first in root order, then address order, wins; containers in
fixed arrays of more than 4 KiB, and ``BTreeMap``, ``LinkedList`` and
``std::deque`` are not read.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MappedTraceError
from ..formats.mtmap import TypeInfo
from ..graph import HOW_TYPED, Details, HeapGraph
from .fields import MAX_DEPTH, find_member, members_at, template_arg

#: top bit of a derived type's id (table ids have their top two bits clear, FORMAT.md §3)
DERIVED_BIT = 1 << 63
#: element visits (nested holders) per graph
MAX_ELEMENTS = 4_000_000
#: bytes of a root range read to find containers in it
MAX_ROOT_READ = 1 << 20
_LENCAP = "len {}, cap {}"


@dataclass
class Made:
    """What a holder says of the object its pointer reaches."""

    name: str                    # the derived type's name
    tid: int = 0                 # a type of the table when the holder names one (RcInner<T>, _Rb_tree_node<V>)
    detail: tuple = ()          # what is said of it: (format, one or two numbers), e.g. ("len {}, cap {}", 3, 4)
    elem: int = 0                # element type (nested holders; field names)
    start: int = 0               # offset of element 0 in the object
    count: int = 0
    stride: int = 0
    elem_offs: list[int] | None = None   # the live elements' offsets, when not 0..count
    links: tuple[int, ...] = ()  # words of the object whose targets are made alike (tree, list nodes)
    link_made: "Made | None" = None      # what links make (None: the same as this)


@dataclass(frozen=True)
class Spec:
    """How a container type reads: ``rule`` and member offsets in it."""

    rule: str
    tid: int
    ptrs: tuple[int, ...]        # words whose targets the rule types
    at: dict = field(default_factory=dict, compare=False, hash=False)


def _fnv(s: str) -> int:
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def _norm(name: str) -> str:
    # DWARF writes nested template closers "> >" (C++03 style) and "T *", a name
    # built here or demangled ">>" and "T*"
    return name.replace(" >", ">").replace(" *", "*").replace(" &", "&")


@functools.lru_cache(maxsize=4096)
def derived_id(name: str) -> int:
    """The id of the derived type ``name`` (top bit set: never a table id)."""
    return DERIVED_BIT | (_fnv(name) & 0x3FFFFFFFFFFFFFFF)


class _Types:
    """The type table with the lookups the rules need (memoised)."""

    def __init__(self, types: dict[int, Any]):
        self.t = types
        self._by_name: dict[str, int] | None = None
        self._slots: dict[int, list[tuple[int, Spec, int]]] = {}

    def size(self, tid: int) -> int:
        t = self.t.get(int(tid))
        return int(getattr(t, "size", 0) or 0) if t is not None else 0

    def name(self, tid: int) -> str:
        t = self.t.get(int(tid))
        return getattr(t, "name", "") if t is not None else ""

    def member(self, tid: int, name: str) -> int | None:
        m = find_member(self.t, tid, name)
        return m[0] if m else None

    def by_name(self, name: str) -> int:
        """The struct/union/class called ``name`` (``> >`` and ``>>`` alike), 0 none."""
        if self._by_name is None:
            self._by_name = {}
            for tid, t in self.t.items():
                if getattr(t, "kind", "") in ("struct", "union", "enum") and getattr(t, "size", 0):
                    self._by_name.setdefault(_norm(t.name), tid)
        return self._by_name.get(_norm(name), 0)

    def by_prefix(self, prefix: str) -> int:
        self.by_name("")
        p = _norm(prefix)
        for n, tid in self._by_name.items():       # type: ignore[union-attr]
            if n.startswith(p):
                return tid
        return 0

    def pointee(self, tid: int, member: str) -> int:
        """The pointee type of the pointer member ``member`` of ``tid`` (0 unknown)."""
        m = find_member(self.t, tid, member)
        if not m:
            return 0
        p = self.t.get(m[1])
        for _ in range(MAX_DEPTH):          # NonNull<T> { pointer: *const T }, Unique<T> { pointer: NonNull<T> }
            if p is None:
                return 0
            if getattr(p, "kind", "") == "pointer":
                s = list(getattr(p, "slots", ()))
                return int(s[0].target) if s else 0
            mm = members_at(self.t, p.id, 0)
            if mm is None:
                return 0
            p = self.t.get(int(mm[0].type_id))
        return 0

    def slots(self, tid: int, depth: int = 0) -> list[tuple[int, Spec, int]]:
        """(word offset, spec, container offset) of every container pointer inside
        type ``tid``; both offsets from the start of ``tid``."""
        tid = int(tid)
        if tid in self._slots:
            return self._slots[tid]
        self._slots[tid] = []                    # cycles through by-value members cannot happen; be safe
        out: list[tuple[int, Spec, int]] = []
        spec = _spec(self, tid)
        if spec is not None:
            out = [(p, spec, 0) for p in spec.ptrs]
        elif depth < MAX_DEPTH:
            t = self.t.get(tid)
            subs = [(f.offset, f.type_id) for f in getattr(t, "members", ())]
            if t is not None and t.name.startswith(("__gnu_cxx::__aligned_buffer<", "__gnu_cxx::__aligned_membuf<")):
                subs.append((0, template_arg(self.t, tid, "_Tp")))
            if t is not None and getattr(t, "kind", "") == "array" and t.elem_type and 0 < t.size <= 4096:
                esz = self.size(t.elem_type)
                if esz:
                    subs += [(i * esz, t.elem_type) for i in range(t.size // esz)]
            for off, sub in subs:
                if sub:
                    out += [(off + w, s, off + c) for w, s, c in self.slots(sub, depth + 1)]
        self._slots[tid] = out
        return out


# --------------------------------------------------------------------------
# The rules: a container type → Spec; a Spec and the container's words → Made
# --------------------------------------------------------------------------

Word = Callable[[int], "int | None"]     # the u64 at an offset of the container (None: unreadable)


def _spec(ty: _Types, tid: int) -> Spec | None:
    name = ty.name(tid)
    if not name:
        return None
    m = ty.member
    if name.startswith("alloc::string::String"):
        v = find_member(ty.t, tid, "vec")
        inner = _spec(ty, v[1]) if v else None
        if inner is None or inner.rule != "vec":
            return None
        at = {k: v[0] + o for k, o in inner.at.items() if isinstance(o, int) and k != "esz"}
        return Spec("string", tid, (at["ptr"],), dict(at, esz=1, elem=0))
    if name.startswith("alloc::vec::Vec<"):
        elem = int(getattr(ty.t.get(tid), "elem_type", 0) or 0) or template_arg(ty.t, tid, "T")
        at = {"ptr": m(tid, "ptr"), "len": m(tid, "len"), "cap": m(tid, "cap")}
        esz = ty.size(elem)
        if None in at.values() or esz <= 0:
            return None
        return Spec("vec", tid, (at["ptr"],), dict(at, esz=esz, elem=elem))
    if name.startswith("alloc::collections::vec_deque::VecDeque<"):
        # { buf: RawVec<T>, head, len }: a ring of len elements from head
        elem = int(getattr(ty.t.get(tid), "elem_type", 0) or 0) or template_arg(ty.t, tid, "T")
        at = {"ptr": m(tid, "ptr"), "len": m(tid, "len"), "cap": m(tid, "cap"), "head": m(tid, "head")}
        esz = ty.size(elem)
        if None in at.values() or esz <= 0:
            return None
        return Spec("vecdeque", tid, (at["ptr"],), dict(at, esz=esz, elem=elem))
    if name.startswith(("std::__cxx11::list<", "std::list<")):
        h = find_member(ty.t, tid, "_M_node")
        elem = template_arg(ty.t, tid, "_Tp")
        if not h or not elem:
            return None
        nl = tuple(o for o in (m(h[1], k) for k in ("_M_next", "_M_prev")) if o is not None)
        if len(nl) != 2:
            return None
        node_name = f"std::_List_node<{ty.name(elem)}>"
        node = ty.by_name(node_name)
        return Spec("list", tid, tuple(h[0] + o for o in nl),
                    {"node": node, "node_name": ty.name(node) or node_name, "links": nl})
    if name.startswith(("std::collections::hash::map::HashMap<", "std::collections::hash::set::HashSet<",
                        "hashbrown::map::HashMap<", "hashbrown::set::HashSet<", "hashbrown::raw::RawTable<")):
        # the RawTable inside: { table: RawTableInner { ctrl, bucket_mask, items, … }, marker: PhantomData<T> }
        raw, off = tid, 0
        for _ in range(4):
            if ty.name(raw).startswith("hashbrown::raw::RawTable<"):
                break
            t2 = find_member(ty.t, raw, "table") or find_member(ty.t, raw, "base")
            if not t2:
                return None
            raw, off = t2[1], off + t2[0]
        else:
            return None
        elem = template_arg(ty.t, raw, "T")
        at = {k: m(raw, k) for k in ("ctrl", "bucket_mask", "items")}
        esz = ty.size(elem)
        if None in at.values() or esz <= 0:
            return None
        at = {k: off + v for k, v in at.items()}
        return Spec("rawtable", tid, (at["ctrl"],), dict(at, esz=esz, elem=elem))
    if name.startswith("alloc::boxed::Box<["):
        at = {"ptr": m(tid, "data_ptr"), "len": m(tid, "length")}
        elem = ty.pointee(tid, "data_ptr")
        if None in at.values() or ty.size(elem) <= 0:
            return None
        return Spec("boxslice", tid, (at["ptr"],), dict(at, esz=ty.size(elem), elem=elem))
    if name.startswith(("alloc::rc::Rc<", "alloc::sync::Arc<")):
        p = m(tid, "ptr")
        inner = ty.pointee(tid, "ptr")
        if p is None or not inner:
            return None
        return Spec("rc", tid, (p,), {"ptr": p, "inner": inner})
    if name.startswith("std::vector<") and not name.startswith("std::vector<bool"):
        elem = template_arg(ty.t, tid, "_Tp")
        at = {k: m(tid, k) for k in ("_M_start", "_M_finish", "_M_end_of_storage")}
        if None in at.values() or ty.size(elem) <= 0:
            return None
        return Spec("vector", tid, (at["_M_start"],), dict(at, esz=ty.size(elem), elem=elem))
    if name.startswith(("std::__cxx11::basic_string<", "std::basic_string<")):
        at = {k: m(tid, k) for k in ("_M_p", "_M_string_length", "_M_allocated_capacity", "_M_local_buf")}
        if None in at.values():
            return None
        return Spec("basic_string", tid, (at["_M_p"],), at)
    if name.startswith("std::_Rb_tree<"):
        h = find_member(ty.t, tid, "_M_header")
        val = template_arg(ty.t, tid, "_Val")
        if not h or not val:
            return None
        links = tuple(h[0] + o for o in (m(h[1], k) for k in ("_M_parent", "_M_left", "_M_right")) if o is not None)
        node_links = tuple(o for o in (m(h[1], k) for k in ("_M_parent", "_M_left", "_M_right")) if o is not None)
        if len(links) != 3:
            return None
        vname = ty.name(val)
        node = ty.by_name(f"std::_Rb_tree_node<{vname}>")
        return Spec("rbtree", tid, links, {"node": node, "node_name": f"std::_Rb_tree_node<{vname}>",
                                            "links": node_links, "val": val})
    if name.startswith("std::_Hashtable<"):
        at = {k: m(tid, k) for k in ("_M_buckets", "_M_bucket_count", "_M_before_begin", "_M_single_bucket")}
        val = template_arg(ty.t, tid, "_Value")
        if None in at.values() or not val:
            return None
        vname = ty.name(val)
        node = ty.by_prefix(f"std::__detail::_Hash_node<{vname}, ")
        nxt = m(node, "_M_nxt") if node else 0
        return Spec("hashtable", tid, (at["_M_buckets"], at["_M_before_begin"]),
                    dict(at, node=node, node_name=ty.name(node) or f"std::__detail::_Hash_node<{vname}>",
                         nxt=nxt or 0))
    if name.startswith(("std::__shared_ptr<", "std::__weak_ptr<")):
        p, pi = m(tid, "_M_ptr"), m(tid, "_M_pi")
        elem = template_arg(ty.t, tid, "_Tp")
        if p is None or pi is None or not elem:
            return None
        return Spec("shared_ptr", tid, (pi,), {"ptr": p, "pi": pi, "elem": elem})
    return None


def _made(ty: _Types, spec: Spec, word: Word, base: int, ptr: int, dst_addr: int, dst_size: int,
          chunk_bytes: Callable[[], bytes | None]) -> Made | None:
    """What ``spec``'s container (its word reader ``word``, at address ``base``)
    says of the object at ``dst_addr`` its word ``ptr`` points into."""
    a = spec.at
    tname = a.get("_name")
    if tname is None:
        tname = a["_name"] = ty.name(spec.tid)
    value = word(ptr)
    if value is None:
        return None
    inner = value - dst_addr
    r = spec.rule
    if r in ("vec", "string", "boxslice"):
        n = word(a["len"])
        cap = word(a["cap"]) if r != "boxslice" else n
        if inner or n is None or cap is None or n > cap or cap * a["esz"] > dst_size:
            return None
        det = ("len {}", n) if r == "boxslice" else (_LENCAP, n, cap)
        return Made(f"{tname} buffer", detail=det, elem=a["elem"], count=n if a["elem"] else 0, stride=a["esz"])
    if r == "vecdeque":
        n, cap, head = word(a["len"]), word(a["cap"]), word(a["head"])
        if inner or n is None or cap is None or head is None or n > cap or (cap and head >= cap) \
                or cap * a["esz"] > dst_size:
            return None
        esz = a["esz"]
        live = [((head + i) % cap) * esz for i in range(n)] if cap else []
        return Made(f"{tname} buffer", detail=(_LENCAP, n, cap), elem=a["elem"], count=cap, stride=esz,
                    elem_offs=live)
    if r == "list":
        if inner:
            return None                         # the header itself (an empty list)
        node = a["node"]
        return Made(a["node_name"], tid=node, elem=node, count=1 if node else 0, links=a["links"])
    if r == "rawtable":
        mask, items = word(a["bucket_mask"]), word(a["items"])
        if mask is None or items is None:
            return None
        buckets = mask + 1
        start = inner - buckets * a["esz"]
        if buckets & mask or start < 0 or inner + buckets > dst_size or items > buckets:
            return None
        data = chunk_bytes()
        live = None
        if data is not None and len(data) >= inner + buckets:
            ctrl = np.frombuffer(data, np.uint8, buckets, inner)
            full = np.flatnonzero(ctrl < 0x80)
            live = (inner - (full + 1) * a["esz"]).tolist()   # bucket i's data lies below the control bytes
        return Made(f"{tname} table", detail=("items {}, buckets {}", items, buckets), elem=a["elem"],
                    start=start, count=buckets, stride=a["esz"], elem_offs=live if live is not None else [])
    if r == "rc":
        if inner:
            return None
        return Made(ty.name(a["inner"]), tid=a["inner"], elem=a["inner"], count=1)
    if r == "vector":
        fin, eos = word(a["_M_finish"]), word(a["_M_end_of_storage"])
        esz = a["esz"]
        if inner or fin is None or eos is None or not value <= fin <= eos or eos - value > dst_size:
            return None
        n, cap = (fin - value) // esz, (eos - value) // esz
        return Made(f"{tname} buffer", detail=(_LENCAP, n, cap), elem=a["elem"], count=n, stride=esz)
    if r == "basic_string":
        if value == base + a["_M_local_buf"] or inner:
            return None                         # the short string lives in the object itself
        n, cap = word(a["_M_string_length"]), word(a["_M_allocated_capacity"])
        if n is None or cap is None or n > cap or cap >= dst_size:
            return None
        return Made(f"{tname} buffer", detail=(_LENCAP, n, cap))
    if r == "rbtree":
        if inner:
            return None                         # the header itself (an empty tree)
        node = a["node"]
        return Made(a["node_name"], tid=node, elem=node, count=1 if node else 0, links=a["links"])
    if r == "hashtable":
        if inner:
            return None
        node = a["node"]
        nmade = Made(a["node_name"], tid=node, elem=node, count=1 if node else 0, links=(a["nxt"],))
        if ptr == a["_M_buckets"]:
            if value == base + a["_M_single_bucket"]:
                return None
            n = word(a["_M_bucket_count"])
            if n is None or n * 8 > dst_size:
                return None
            return Made(f"{tname} buckets", detail=("buckets {}", n), links=tuple(range(0, 8 * n, 8)),
                        link_made=nmade)
        return nmade
    if r == "shared_ptr":
        if inner:
            return None
        obj = word(a["ptr"])
        ename = ty.name(a["elem"])
        if obj is not None and dst_addr <= obj < dst_addr + dst_size:
            cb = ty.by_prefix(f"std::_Sp_counted_ptr_inplace<{ename}, ")
            return Made(ty.name(cb) if cb else f"std::_Sp_counted_ptr_inplace<{ename}>", tid=cb,
                        elem=a["elem"], start=obj - dst_addr, count=1)
        cb = ty.by_prefix(f"std::_Sp_counted_ptr<{ename} *, ")
        # not in the table (nothing typed points to one): the block's vtable names it (step 3)
        return Made(ty.name(cb), tid=cb) if cb else None
    return None


# --------------------------------------------------------------------------
# The pass over the graph
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _demangler():
    """libstdc++'s ``__cxa_demangle`` (None when libstdc++ is not there)."""
    path = ctypes.util.find_library("stdc++")
    try:
        lib = ctypes.CDLL(path or "libstdc++.so.6")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    f = lib.__cxa_demangle
    f.restype = ctypes.c_void_p
    f.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    libc.free.argtypes = [ctypes.c_void_p]

    def demangle(name: str) -> str | None:
        st = ctypes.c_int(0)
        p = f(name.encode(), None, None, ctypes.byref(st))
        if not p or st.value:
            return None
        try:
            return ctypes.string_at(p).decode("utf-8", "replace")
        finally:
            libc.free(p)
    return demangle


def _vtable_types(graph: HeapGraph, ty: _Types, ids: np.ndarray, modules) -> dict[int, Made]:
    """Nodes with no derived type yet (``ids`` 0) whose first word points into a
    ``vtable for X`` symbol, X a type of the table."""
    out: dict[int, Made] = {}
    dm = _demangler()
    if modules is None or dm is None or not len(ids):
        return out
    from ..formats import elf

    def has_vtables(m) -> bool:
        try:
            return any(sym.name.startswith("_ZTV") for sym in elf.symbols(m.path))
        except (MappedTraceError, OSError):     # a module we cannot read names nothing
            return False

    # only modules that define virtual tables (none in a C program: the first
    # words of millions of untyped objects are then not read at all)
    mods = sorted((m for m in modules if getattr(m, "path", None) and has_vtables(m)), key=lambda m: m.start)
    if not mods:
        return out
    # (the untyped nodes listed only now: in a C program, 8 bytes per object for nothing)
    nodes = np.flatnonzero(ids == 0)
    if not len(nodes):
        return out
    w, ok = graph.words(nodes, np.array([0], np.uint64))
    w, nodes = w[:, 0][ok[:, 0]], nodes[ok[:, 0]]
    # first words that point into a module's image, vectorised (a heap of millions
    # of untyped objects has as many distinct first words, few of them in a module)
    lo = np.array([m.start for m in mods], np.uint64)
    hi = np.array([m.end for m in mods], np.uint64)
    k = np.searchsorted(lo, w, side="right").astype(np.int64) - 1
    inmod = (k >= 0) & (w < hi[np.maximum(k, 0)])
    w, nodes, k = w[inmod], nodes[inmod], k[inmod]
    named: dict[int, int] = {}
    for v, mi in zip(*np.unique(np.stack([w, k.astype(np.uint64)]), axis=1).tolist()):
        m = mods[int(mi)]
        if not m.contains(v):
            continue
        try:
            s = elf.symbol_at(m.path, m.to_link(v))
        except (MappedTraceError, OSError):     # a module we cannot read names nothing
            continue
        if s is None or not s.name.startswith("_ZTV"):
            continue
        d = dm(s.name) or ""
        if d.startswith("vtable for "):
            cls = d[len("vtable for "):]
            named[v] = (ty.by_name(cls), cls)
    for i, v in zip(nodes.tolist(), w.tolist()):
        got = named.get(v)
        if got:
            tid, cls = got
            # a class the table has: typed and read as one (nested holders); else named only
            out[i] = Made(ty.name(tid), tid=tid, elem=tid, count=1) if tid else Made(cls)
    return out


class _Obj:
    """The bytes of one holder (a heap object as the marker read it, or a root
    range), read once: its words by offset."""

    def __init__(self, data: bytes | None):
        self.data = data or b""
        self.size = len(self.data)
        self.w = np.frombuffer(self.data, "<u8", self.size // 8)

    def word(self, off: int) -> int | None:
        if off < 0 or off + 8 > self.size:
            return None
        if not off & 7:
            return int(self.w[off >> 3])
        return int.from_bytes(self.data[off:off + 8], "little")

    def words(self, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the words at ``offs``, which offsets were readable and aligned)."""
        ok = (offs >= 0) & (offs + 8 <= self.size) & (offs % 8 == 0)
        out = np.zeros(len(offs), np.uint64)
        out[ok] = self.w[offs[ok] >> 3]
        return out, ok


class _Pass:
    """One run of :func:`derive_types` over a graph."""

    def __init__(self, graph: HeapGraph):
        self.g = graph
        self.ty = _Types(graph.types)
        n = len(graph)
        self.ids = np.zeros(n, np.uint64)
        self.detail = Details()
        self.elems: dict[int, tuple[int, int, int, int]] = {}
        self.queue: deque[tuple[int, Made]] = deque()
        self.budget = MAX_ELEMENTS
        self._objs: dict[int, _Obj] = {}

    def obj(self, node: int) -> _Obj:
        o = self._objs.get(node)
        if o is None:
            o = _Obj(self.g.object_bytes(node))
            if len(self._objs) > 4096:              # holders are met in bursts: keep a few
                self._objs.clear()
            self._objs[node] = o
        return o

    def give(self, node: int, made: Made) -> None:
        if self.ids[node]:
            return                               # the first holder names it
        tid = made.tid or derived_id(made.name)
        if not made.tid and tid not in self.g.types:
            self.g.types[tid] = TypeInfo(tid, made.name, 0, "derived", 0, (), made.elem)
        self.ids[node] = tid
        if made.detail:
            fmt, *nums = made.detail
            self.detail.add([node], [nums[0]], [nums[1] if len(nums) > 1 else 0], fmt)
        if made.elem and made.count:
            self.elems[node] = (made.elem, made.start, made.count, made.stride)
        self.queue.append((node, made))

    def _buffers(self, obj: _Obj, spec: Spec, cont: np.ndarray, vals: np.ndarray, d: np.ndarray) -> None:
        """:func:`_made` for the buffers of Vecs, Strings and std::vectors, a
        whole array of containers at once (a Vec of a million Strings)."""
        g, a = self.g, spec.at
        daddr, dsize = g.addresses[d], g.sizes[d]
        ok = vals == daddr
        esz = np.uint64(a["esz"])
        if spec.rule in ("vec", "string"):
            n, okn = obj.words(cont + a["len"])
            cap, okc = obj.words(cont + a["cap"])
            ok &= okn & okc & (n <= cap) & (cap <= dsize // esz)
        else:
            fin, okf = obj.words(cont + a["_M_finish"])
            eos, oke = obj.words(cont + a["_M_end_of_storage"])
            ok &= okf & oke & (vals <= fin) & (fin <= eos) & (eos - vals <= dsize)
            n, cap = (fin - vals) // esz, (eos - vals) // esz
        name = f"{self.ty.name(spec.tid)} buffer"
        tid = derived_id(name)
        if tid not in g.types:
            g.types[tid] = TypeInfo(tid, name, 0, "derived", 0, (), a["elem"])
        nest = bool(a["elem"]) and bool(self.ty.slots(a["elem"]))
        # vectorised: the first holder names an object (within the batch too)
        dd, first = np.unique(d[ok], return_index=True)
        fresh = self.ids[dd] == 0
        dd, k, c = dd[fresh], n[ok][first][fresh], cap[ok][first][fresh]
        self.ids[dd] = tid
        self.detail.add(dd, k.astype(np.int64), c.astype(np.int64), _LENCAP)
        if a["elem"] and self.ty.t.get(a["elem"]) is not None and self.ty.t[a["elem"]].kind != "scalar":
            # elements named in why (buffer[3].name); not for numbers and bytes: no pointers
            elem, esz = a["elem"], a["esz"]
            dl, kl = dd.tolist(), k.tolist()
            self.elems.update((x, (elem, 0, kk, esz)) for x, kk in zip(dl, kl) if kk)
            if nest:
                self.queue.extend((x, Made(name, elem=elem, count=kk, stride=esz)) for x, kk in zip(dl, kl) if kk)
            self._pointees(elem, esz, dl, kl)

    def _pointees(self, elem: int, esz: int, bufs: list[int], lens: list[int]) -> None:
        """The objects the live elements of buffers of pointers (``std::vector<T *>``)
        point to, at their start, that nothing has typed or named: named ``T``
        (a name, like every derived type) and read as holders in turn (a node's
        ``std::string`` member names its buffer).  The marker no longer reads
        such a buffer as an array of ``T *`` (a guessed array types wrongly:
        tests/sound_typing/first_member.c), so only this names the others."""
        t = self.ty.t.get(int(elem))
        if t is None or getattr(t, "kind", "") != "pointer" or esz != 8:
            return
        sl = list(getattr(t, "slots", ()))
        target = int(sl[0].target) if sl else 0
        tsize = self.ty.size(target)
        if not target or not tsize or getattr(self.ty.t.get(target), "kind", "") not in ("struct", "union"):
            return
        g = self.g
        for x, k in zip(bufs, lens):
            k = min(int(k), self.budget)
            if k <= 0:
                continue
            self.budget -= k
            vals, ok = self.obj(x).words(np.arange(k, dtype=np.int64) * 8)
            vals = vals[ok & (vals != 0)]
            d = g.find_many(vals)
            good = d >= 0
            for v, e in zip(vals[good].tolist(), d[good].tolist()):
                if v == int(g.addresses[e]) and not self.ids[e] and not int(g.type_ids_of(e)) \
                        and int(g.sizes[e]) >= tsize:
                    self.give(e, Made(self.ty.name(target), tid=target, elem=target, count=1, stride=tsize))

    def reach(self, obj: _Obj, node: int, base: int, insts: np.ndarray, slots) -> None:
        """Containers at offsets ``insts`` (the holder's elements) of ``obj``
        (node ``node``, -1 for a root range, at address ``base``)."""
        g = self.g
        for w, spec, cbase in slots:
            vals, ok = obj.words(insts + w)
            hit = ok & (vals != 0)
            if not hit.any():
                continue
            d = g.find_many(vals[hit])
            good = (d >= 0) & (d != node)
            if spec.rule in ("vec", "string", "vector"):
                self._buffers(obj, spec, insts[hit][good] + cbase, vals[hit][good], d[good])
                continue
            for eo, dd in zip(insts[hit][good].tolist(), d[good].tolist()):
                if self.ids[dd]:
                    continue
                c = eo + cbase
                made = _made(self.ty, spec, lambda o, c=c: obj.word(c + o), base + c, w - cbase,
                             int(g.addresses[dd]), int(g.sizes[dd]), lambda dd=dd: g.object_bytes(dd))
                if made is not None:
                    self.give(dd, made)

    def typed_nodes(self, typed: np.ndarray | None = None, tids: np.ndarray | None = None) -> None:
        """Containers in heap objects of a type (the marker's, or ``tids`` of
        ``typed``), one type at a time."""
        g = self.g
        if typed is None:           # (in slices: no column of every node's id)
            parts = [np.flatnonzero(g.type_ids_of(slice(lo, lo + (1 << 20))) != 0) + lo
                     for lo in range(0, len(g), 1 << 20)]
            typed = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            tids = g.type_ids_of(typed)
        if not len(typed):
            return
        u, inv = np.unique(tids, return_inverse=True)
        for k, t in enumerate(u.tolist()):
            slots = self.ty.slots(int(t))
            if not slots:
                continue
            nodes = typed[inv == k]
            offs = np.array(sorted({w for w, _, _ in slots}), np.uint64)
            vals, ok = g.words(nodes, offs)
            d = g.find_many(vals.reshape(-1)).reshape(vals.shape)
            keep = np.any(ok & (vals != 0) & (d >= 0) & (d != nodes[:, None]), axis=1)
            for i in nodes[keep].tolist():      # only holders whose container words hit an object
                self.reach(self.obj(i), i, int(g.addresses[i]), np.zeros(1, np.int64), slots)
                self.drain()

    def drain(self) -> None:
        """Nested holders: the elements of every derived object, and its links."""
        g = self.g
        while self.queue and self.budget > 0:
            node, made = self.queue.popleft()
            if made.elem and made.count:
                slots = self.ty.slots(made.elem)
                if slots:
                    insts = np.asarray(made.elem_offs, np.int64) if made.elem_offs is not None else \
                        made.start + np.arange(made.count, dtype=np.int64) * made.stride
                    insts = insts[:self.budget]
                    self.budget -= len(insts)
                    self.reach(self.obj(node), node, int(g.addresses[node]), insts, slots)
            if made.links:
                self.budget -= len(made.links)
                vals, ok = self.obj(node).words(np.asarray(made.links, np.int64))
                vals = vals[ok & (vals != 0)]
                d = g.find_many(vals)
                good = (d >= 0) & (d != node)
                for v, dd in zip(vals[good].tolist(), d[good].tolist()):
                    if v == int(g.addresses[dd]):   # a link to a node's start, not the header inside a holder
                        self.give(dd, made.link_made or made)


def derive_types(graph: HeapGraph, target=None, modules=None) -> None:
    """Give container buffers, nodes and control blocks their derived types
    (module docstring), in place: :attr:`HeapGraph.derived_ids`,
    ``derived_detail``, ``derived_elems``, new entries (kind ``"derived"``) in
    ``graph.types``, and the ``derived_*`` figures of ``graph.precision``.

    :param target: reads the root ranges that hold containers (globals, frame
        slots); without it only heap holders are read.
    :param modules: the target's :class:`~mappedtrace.modules.ModuleMap`, for
        naming leaked polymorphic objects by their virtual table.
    """
    ps = _Pass(graph)
    one = np.zeros(1, np.int64)
    # 1. containers in typed root ranges (globals, frame slots, thread-locals)
    if target is not None:
        for r in graph.roots:
            if r.kind != "range" or not r.type_id or not ps.ty.slots(r.type_id):
                continue
            try:
                data = target.read(r.value, min(r.size, MAX_ROOT_READ))
            except MappedTraceError:            # an unreadable root range holds nothing we can read
                continue
            ps.reach(_Obj(data), -1, r.value, one, ps.ty.slots(r.type_id))
            ps.drain()
    # 2. containers in heap objects the marker typed
    ps.typed_nodes()
    ps.drain()
    # 3. polymorphic objects no holder named (leaked ones; ones the marker typed by a
    #    base class, as a shared_ptr's _Sp_counted_base), by their virtual table
    for i, made in _vtable_types(graph, ps.ty, ps.ids, modules).items():
        ps.give(i, made)
    ps.drain()
    if ps.budget <= 0:
        graph.warnings.append(f"container typing stopped after {MAX_ELEMENTS} elements: "
                              f"some nested buffers keep the marker's name")
    graph.derived_ids, graph.derived_detail, graph.derived_elems = ps.ids, ps.detail, ps.elems
    _figures(graph)


def derive_from(graph: HeapGraph, nodes: np.ndarray, tids: np.ndarray) -> np.ndarray:
    """Typing by holder from types found after marking (the leak analysis's
    inferred types of unreachable objects: ``tids`` of ``nodes``): the objects
    their containers point to that have no derived type yet get one, in
    place as :func:`derive_types` does.  Returns the nodes newly named."""
    if graph.derived_ids is None:
        derive_types(graph)
    ps = _Pass(graph)
    ps.ids = graph.derived_ids.copy()
    ps.detail, ps.elems = graph.derived_detail, graph.derived_elems
    before = ps.ids != 0
    ps.typed_nodes(np.asarray(nodes, np.int64), np.asarray(tids, np.uint64))
    ps.drain()
    graph.derived_ids = ps.ids
    _figures(graph)
    return np.flatnonzero((ps.ids != 0) & ~before)


def _figures(graph: HeapGraph) -> None:
    d = graph.derived_ids != 0
    marker = d & (graph.how == HOW_TYPED) & ~graph.ambiguous
    p = graph.precision
    p.derived_objects = int(d.sum())
    p.derived_bytes = int(graph.sizes[d].sum())
    p.derived_objects_typed = int(marker.sum())
    p.derived_bytes_typed = int(graph.sizes[marker].sum())
