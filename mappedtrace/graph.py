"""The heap object graph (DESIGN step 9): objects, edges, root edges, precision.

Built by :func:`mappedtrace.trace.mark`.  Arrays (numpy) hold the bulk so a
graph of millions of objects stays compact; :meth:`HeapGraph.node` and
:meth:`HeapGraph.iter_edges` give dataclass views for reporters and tests.

Node ``i`` is the ``i``-th in-use chunk in address order.  An edge says "the
word at ``src_off`` of node ``src`` points at byte ``dst_off`` of node
``dst``"; it is *exact* when the word is known to be a pointer (a typed slot
of a typed object), conservative when the word merely looks like one.  Edges
from objects that the roots do not reach (flag :data:`EDGE_UNREACHED`) are
found by a conservative scan of those objects; they let the leak analysis
see the shape of leaked structures and never make anything reachable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .roots import Root

#: edge flags (mirrored in _mark.c)
EDGE_EXACT = 0x1
EDGE_WEAK = 0x2
EDGE_TYPEDSCAN = 0x4
EDGE_UNREACHED = 0x8

#: how a node was scanned
HOW_UNREACHED = 0
HOW_TYPED = 1
HOW_CONSERVATIVE = 2
HOW_NAMES = ("unreached", "typed", "conservative")

EDGE_DTYPE = np.dtype([("src", "<i8"), ("dst", "<i8"), ("src_off", "<u8"),
                       ("dst_off", "<u8"), ("flags", "<u4"), ("pad", "<u4")])
ROOT_EDGE_DTYPE = np.dtype([("root", "<i8"), ("dst", "<i8"), ("root_off", "<u8"),
                            ("dst_off", "<u8"), ("flags", "<u4"), ("pad", "<u4")])


@dataclass(frozen=True)
class Node:
    """One in-use heap object."""

    index: int
    address: int
    size: int
    type_id: int          # 0: unknown
    type_name: str        # "" when unknown
    state: str            # "in-use"
    reached: bool
    how: str              # "typed" | "conservative" | "unreached"
    ambiguous: bool = False


@dataclass(frozen=True)
class Edge:
    """A pointer from one heap object into another."""

    src: int
    src_off: int
    dst: int
    dst_off: int
    exact: bool
    weak: bool = False
    unreached: bool = False


@dataclass(frozen=True)
class RootEdge:
    """A root (by index in :attr:`HeapGraph.roots`) pointing into a heap object."""

    root: int
    root_off: int         # offset of the word inside a range root (0 for a value root)
    dst: int
    dst_off: int
    exact: bool
    source: str           # the Root's provenance


@dataclass
class Precision:
    """How exact the graph is: every figure is a count, reported as is."""

    mode: str = "precise"
    kernel: str = ""
    roots_exact: int = 0
    roots_conservative: int = 0
    frames_exact: int = 0
    frames_conservative: int = 0
    objects: int = 0
    objects_reached: int = 0
    objects_typed: int = 0
    objects_conservative: int = 0
    objects_ambiguous: int = 0
    heap_bytes: int = 0
    heap_bytes_typed: int = 0
    heap_bytes_conservative: int = 0
    #: part of heap_bytes_conservative: tails of typed objects, the bytes beyond what
    #: their type describes (trailing data, raw flexible arrays, array guesses)
    heap_bytes_tail: int = 0
    edges_exact: int = 0
    edges_conservative: int = 0
    root_edges_exact: int = 0
    root_edges_conservative: int = 0
    dangling_pointers: int = 0
    pointers_to_static: int = 0
    typed_words_read: int = 0
    unreadable_objects: int = 0
    #: allocation sites (a ``--alloc-sites`` build): chunks whose site word was found,
    #: those whose site has a type, the typed ones whose type is their site's, and their typed bytes
    objects_with_site: int = 0
    objects_with_site_type: int = 0
    objects_typed_by_site: int = 0
    heap_bytes_typed_by_site: int = 0
    #: of those, byte buffers (sites whose result is used as pointer-free memory:
    #: ``char *``, sds, listpacks) whose words were skipped; only when the program
    #: counted no untyped pointer write (``untyped_pointer_writes`` 0; -1: some
    #: module with maps did not count them)
    objects_bytes_by_site: int = 0
    heap_bytes_bytes_by_site: int = 0
    untyped_pointer_writes: int = -1
    #: objects (bytes of their site type) named by their site but not typed by the
    #: marker: reached only conservatively, unreached, or untrusted byte buffers
    #: (typed for naming, not for scanning)
    objects_named_by_site: int = 0
    heap_bytes_named_by_site: int = 0
    #: objects (bytes) named by a type derived from their holder (analyses/containers.py),
    #: and of those the ones the marker itself scanned by a type; derived types never
    #: decide which words are scanned
    derived_objects: int = 0
    derived_bytes: int = 0
    derived_objects_typed: int = 0
    derived_bytes_typed: int = 0
    #: the C marker's queue at its largest (bytes; 0 for the numpy marker)
    mark_queue_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Details:
    """What holders say of objects ("len 3, cap 4"), kept as columns: batches of
    (nodes, first number, second number, format) added by the container pass,
    sorted into one index on first lookup."""

    def __init__(self) -> None:
        self._batches: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        self._fmts: list[str] = []
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, nodes, a, b, fmt: str) -> None:
        """``fmt`` with ``{}`` for each number it shows (one or two)."""
        if fmt not in self._fmts:
            self._fmts.append(fmt)
        nodes = np.asarray(nodes, np.int64)
        if len(nodes):
            self._batches.append((nodes, np.asarray(a, np.int64), np.asarray(b, np.int64),
                                  self._fmts.index(fmt)))
            self._index = None

    def __len__(self) -> int:
        return sum(len(x[0]) for x in self._batches)

    def _idx(self):
        if self._index is None:
            if self._batches:
                nodes = np.concatenate([x[0] for x in self._batches])
                a = np.concatenate([x[1] for x in self._batches])
                b = np.concatenate([x[2] for x in self._batches])
                f = np.concatenate([np.full(len(x[0]), x[3], np.int64) for x in self._batches])
                o = np.argsort(nodes, kind="stable")
                self._index = (nodes[o], a[o], b[o], f[o])
                self._batches = [(nodes[o], a[o], b[o], 0)] if len(self._fmts) == 1 else self._batches
            else:
                z = np.zeros(0, np.int64)
                self._index = (z, z, z, z)
        return self._index

    def get(self, i: int) -> str:
        nodes, a, b, f = self._idx()
        k = int(np.searchsorted(nodes, i))
        if k < len(nodes) and int(nodes[k]) == i:
            return self._fmts[int(f[k])].format(int(a[k]), int(b[k]))
        return ""

    def strings(self, n: int) -> np.ndarray:
        """An object array of ``n`` strings, "" where nothing is said."""
        out = np.full(n, "", dtype=object)
        nodes, a, b, f = self._idx()
        for k, fmt in enumerate(self._fmts):
            sel = f == k
            out[nodes[sel]] = [fmt.format(x, y) for x, y in zip(a[sel].tolist(), b[sel].tolist())]
        return out


@dataclass
class HeapGraph:
    """The object graph of one heap snapshot.

    Per-node arrays are indexed by node index (address order); ``edges`` and
    ``root_edges`` are structured arrays (:data:`EDGE_DTYPE`,
    :data:`ROOT_EDGE_DTYPE`).  The type of each node is given either as a
    column of type ids (u64) or, as the marker gives it, as a column of
    indices (i32, -1 none) into a table of ids: :attr:`type_ids` then makes
    the column of ids on first use (8 bytes per object that a leak check,
    which asks :meth:`type_ids_of` for a few nodes, never pays).
    """

    addresses: np.ndarray          # u64
    sizes: np.ndarray              # u64, usable bytes
    _type_col: np.ndarray          # u64 type ids (0 unknown), or i32 indices into _type_table (-1 unknown)
    how: np.ndarray                # u8, HOW_*
    ambiguous: np.ndarray          # bool
    _edges: np.ndarray | None      # None: made on first use (see :attr:`edges`)
    root_edges: np.ndarray
    roots: list[Root]
    types: dict
    precision: Precision
    warnings: list[str] = field(default_factory=list)
    #: the heap bytes read by the marker (kept so analyses see the same snapshot;
    #: :attr:`memoff` says where each node's bytes are in it)
    mem: Any = field(default=None, repr=False)          # trace.PieceMemory
    #: sorted, merged [lo, hi) address ranges of the target's mappings
    mapped: np.ndarray | None = field(default=None, repr=False)
    _csr: tuple | None = field(default=None, repr=False)
    #: makes the edges of the nodes in a boolean mask (None: all) when the marker deferred them
    _edge_maker: Any = field(default=None, repr=False)
    #: how a live process was captured (mode, pause_ms…: session.capture_figures); None otherwise
    capture: dict | None = None
    #: allocation sites (``--alloc-sites`` builds): the sites, and per node an index into them (-1 none)
    sites: list = field(default_factory=list)
    node_site: np.ndarray | None = field(default=None, repr=False)

    @property
    def memoff(self) -> np.ndarray | None:
        """Each node's position in :attr:`mem` (i64, -1: unreadable), None without
        ``mem``; a new array at each access (not kept: 8 bytes per object)."""
        return None if self.mem is None else self._memoff_of(np.arange(len(self)))

    def _memoff_of(self, nodes: np.ndarray) -> np.ndarray:
        return self.mem.positions(self.addresses[nodes], self.sizes[nodes])

    def site_of(self, i: int):
        """The :class:`~mappedtrace.formats.allocsites.AllocSite` of node ``i``, or None."""
        if self.node_site is None or self.node_site[i] < 0:
            return None
        return self.sites[int(self.node_site[i])]
    #: types derived from the holder (a container's buffer, node or control block:
    #: analyses/containers.py), per node, 0 none; they name objects, never decide
    #: which words are scanned.  Their entries are in ``types`` (kind "derived").
    derived_ids: np.ndarray | None = field(default=None, repr=False)
    #: what the holder says of a node (:class:`Details`; :meth:`detail` formats it)
    derived_detail: Details = field(default_factory=Details, repr=False)
    #: node -> (element type id, offset of element 0, element count, stride) of a derived object
    derived_elems: dict = field(default_factory=dict, repr=False)
    _labels: tuple | None = field(default=None, repr=False)
    #: u64 type ids, one per index of ``_type_col`` when it holds indices (None: it holds ids)
    _type_table: np.ndarray | None = field(default=None, repr=False)

    @property
    def type_ids(self) -> np.ndarray:
        """u64 type id of each node (0: unknown); made from the marker's type
        indices on first use, then kept."""
        if self._type_table is not None:
            col, ids = self._type_col, self._type_table
            out = np.empty(len(col), np.uint64)
            for lo in range(0, len(col), 1 << 20):        # ids[-1] is 0: index -1 is unknown
                out[lo:lo + (1 << 20)] = ids[col[lo:lo + (1 << 20)]]
            self._type_col, self._type_table = out, None
        return self._type_col

    @type_ids.setter
    def type_ids(self, value: np.ndarray) -> None:
        self._type_col, self._type_table = np.asarray(value, np.uint64), None

    def type_ids_of(self, nodes) -> np.ndarray:
        """u64 type ids of ``nodes`` (indices, a mask or a slice), without making
        the column of every node's id."""
        if self._type_table is None:
            return self._type_col[nodes]
        return self._type_table[self._type_col[nodes]]

    @property
    def edges(self) -> np.ndarray:
        """Every edge (:data:`EDGE_DTYPE`), ordered by (src, src_off).  The C
        marker makes them on first use: a leak check needs only the edges of
        the leaked objects (:meth:`edges_from`), and 11 M edges take seconds."""
        if self._edges is None:
            self._edges = self._edge_maker(None)
            self._edge_maker = None
        return self._edges

    def edges_from(self, nodes: np.ndarray) -> np.ndarray:
        """The edges whose source is in ``nodes`` (a boolean mask over the
        nodes), in order; made for those nodes alone while :attr:`edges` is not."""
        if self._edges is None and self._edge_maker is not None:
            return self._edge_maker(np.asarray(nodes, dtype=bool))
        e = self.edges
        return e[np.asarray(nodes, dtype=bool)[e["src"]]] if len(e) else e

    # --- nodes ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.addresses)

    @property
    def reached(self) -> np.ndarray:
        """Boolean array: node reached from the roots."""
        return self.how != HOW_UNREACHED

    def type_name(self, type_id: int) -> str:
        """Name of ``type_id`` in the type table ("" for unknown)."""
        if not type_id:
            return ""
        t = self.types.get(int(type_id))
        return getattr(t, "name", "") if t is not None else f"type#{int(type_id):x}"

    @property
    def label_ids(self) -> np.ndarray:
        """The type id that names each node: the derived type where there is one
        (:attr:`derived_ids`), else the marker's type (0: unknown)."""
        if self.derived_ids is None:
            return self.type_ids
        c = self._labels
        if c is None or c[0] is not self.derived_ids or c[1] is not self.type_ids:
            c = self._labels = (self.derived_ids, self.type_ids,
                                np.where(self.derived_ids != 0, self.derived_ids, self.type_ids))
        return c[2]

    def object_name(self, i: int) -> str:
        """What to call node ``i`` in a report: its (derived) type's name with what
        the holder says of it ("… buffer (len 3, cap 4)"), or ``unkN``."""
        tid = int(self.label_ids[i])
        name = self.type_name(tid) if tid else f"unk{int(self.sizes[i])}"
        d = self.detail(i)
        return f"{name} ({d})" if d else name

    def detail(self, i: int) -> str:
        """What node ``i``'s holder says of it ("len 3, cap 4"), "" when nothing."""
        return self.derived_detail.get(int(i))

    def node(self, i: int) -> Node:
        """A :class:`Node` view of node ``i`` (``type_name``: the derived type's when there is one)."""
        tid = int(self.type_ids[i])
        lid = int(self.label_ids[i])
        return Node(i, int(self.addresses[i]), int(self.sizes[i]), tid, self.type_name(lid),
                    "in-use", bool(self.how[i] != HOW_UNREACHED), HOW_NAMES[int(self.how[i])],
                    bool(self.ambiguous[i]))

    def nodes(self) -> Iterator[Node]:
        for i in range(len(self)):
            yield self.node(i)

    def find(self, addr: int) -> int | None:
        """Index of the node containing ``addr``, or None."""
        i = int(np.searchsorted(self.addresses, np.uint64(addr), side="right")) - 1
        if i >= 0 and addr - int(self.addresses[i]) < int(self.sizes[i]):
            return i
        return None

    def find_many(self, values: np.ndarray) -> np.ndarray:
        """Node index containing each value (vectorised :meth:`find`), -1 for none."""
        v = np.asarray(values, dtype=np.uint64)
        if len(v) > 4096:       # sorted needles: the binary searches share their cache lines
            o = np.argsort(v, kind="stable")
            i = np.empty(len(v), np.int64)
            i[o] = np.searchsorted(self.addresses, v[o], side="right")
            i -= 1
        else:
            i = np.searchsorted(self.addresses, v, side="right").astype(np.int64) - 1
        ic = np.maximum(i, 0)
        ok = (i >= 0) & ((v - self.addresses[ic]) < self.sizes[ic]) if len(self) else np.zeros(len(v), bool)
        return np.where(ok, i, -1)

    def mapped_many(self, values: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`is_mapped`."""
        v = np.asarray(values, dtype=np.uint64)
        if self.mapped is None or len(self.mapped) == 0:
            return np.zeros(len(v), bool)
        i = np.searchsorted(self.mapped[:, 1], v, side="right")
        ok = i < len(self.mapped)
        return ok & (self.mapped[np.where(ok, i, 0), 0] <= v)

    def words(self, nodes: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(words, valid): the u64 at each byte offset of each node, a
        ``len(nodes) x len(offs)`` matrix; invalid (0) past a node's end or
        where it could not be read."""
        nodes = np.asarray(nodes, dtype=np.int64)
        offs = np.asarray(offs, dtype=np.uint64)
        shape = (len(nodes), len(offs))
        if self.mem is None or not len(nodes) or not len(offs):
            return np.zeros(shape, np.uint64), np.zeros(shape, bool)
        mo = self._memoff_of(nodes)
        valid = (mo[:, None] >= 0) & (offs[None, :] + np.uint64(8) <= self.sizes[nodes][:, None])
        pos = np.maximum(mo, 0)[:, None].astype(np.uint64) + offs[None, :]
        w = np.zeros(shape, np.uint64)
        w[valid] = self.mem.u64(pos[valid])
        return w, valid

    def object_bytes(self, i: int, limit: int | None = None) -> bytes | None:
        """The bytes of node ``i`` as the marker read them (None if unreadable)."""
        if self.mem is None:
            return None
        mo = self.mem.position(int(self.addresses[i]), int(self.sizes[i]))
        if mo < 0:
            return None
        n = int(self.sizes[i]) if limit is None else min(limit, int(self.sizes[i]))
        return self.mem.bytes(mo, n)

    def is_mapped(self, addr: int) -> bool:
        """Whether ``addr`` lies in a mapping of the target (False when unknown)."""
        if self.mapped is None or len(self.mapped) == 0:
            return False
        i = int(np.searchsorted(self.mapped[:, 1], np.uint64(addr), side="right"))
        return i < len(self.mapped) and int(self.mapped[i, 0]) <= addr

    # --- edges ------------------------------------------------------------
    def iter_edges(self) -> Iterator[Edge]:
        for e in self.edges:
            f = int(e["flags"])
            yield Edge(int(e["src"]), int(e["src_off"]), int(e["dst"]), int(e["dst_off"]),
                       bool(f & EDGE_EXACT), bool(f & EDGE_WEAK), bool(f & EDGE_UNREACHED))

    def iter_root_edges(self) -> Iterator[RootEdge]:
        for e in self.root_edges:
            r = int(e["root"])
            yield RootEdge(r, int(e["root_off"]), int(e["dst"]), int(e["dst_off"]),
                           bool(int(e["flags"]) & EDGE_EXACT), self.roots[r].source)

    def _adjacency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._csr is None:
            order = np.argsort(self.edges["src"], kind="stable")
            src = self.edges["src"][order]
            ptr = np.searchsorted(src, np.arange(len(self) + 1))
            self._csr = (order, ptr, self.edges["dst"][order])
        return self._csr

    def successors(self, i: int) -> np.ndarray:
        """Indices of the nodes that node ``i`` points to (with repeats)."""
        _, ptr, dst = self._adjacency()
        return dst[ptr[i]:ptr[i + 1]]

    def out_edges(self, i: int) -> np.ndarray:
        """Rows of ``edges`` whose source is node ``i``."""
        order, ptr, _ = self._adjacency()
        return self.edges[order[ptr[i]:ptr[i + 1]]]

