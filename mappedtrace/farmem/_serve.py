"""The compiled fault-serving loop (``_serve.c``) through cffi, and what Python asks of it.

The loop runs in a thread of the pager that holds no GIL while it waits and
serves (cffi releases it around every call), so the program's faults never wait
for Python: not for the evictor, not for the status writer, not for the heap
graph.  Python keeps the policy and changes the one page table through
:meth:`FaultServer.evict` (a batch of pages, evicted in C: ``_evict.c``).
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

import numpy as np
from cffi import FFI

from . import _runtime
from .stores import FileStore, RedisStore, Store, StoreError

ffi = FFI()
ffi.cdef("""
struct mtfs_stats {
    uint64_t faults, zero_faults, bytes_fetched, faults_waited_for_room, store_round_trips;
    uint64_t events_remove, events_unmap, events_remap, removed_by_program, remapped, wp_faults;
    uint64_t prefetched, prefetch_hits, prefetch_unused, hinted, copy_errors, store_errors, faults_over_budget, graph_prefetched;
    uint64_t cycle, nlat, recent_n, remote_pages, stored_pages;
    int64_t resident_est;
    uint64_t installed, faults_pager_own, readahead, graph_readahead, leaked_not_prefetched;
    uint64_t forks, forks_own, fork_pages_restored, fork_events_child;
    double fork_seconds;
};
struct mtfs_evict_res {
    uint64_t asked, evicted, sent, clean, zero, deleted, not_present, not_read, not_dropped, bytes_sent;
    double t_read, t_put, t_drop;
    char err[320];
};
struct mtfs;
struct mtfs *mtfs_create(int uffd, int kick_fd, int resume, int64_t local, int pf_neigh, uint32_t cache_pages,
                         int kind, const char *url, const char *ns, const char *dir, const char *host, int port,
                         int db, const char *pass, const char *unix_path);
void mtfs_destroy(struct mtfs *s);
int mtfs_run(struct mtfs *s);
void mtfs_stop(struct mtfs *s);
uint64_t mtfs_cycle(struct mtfs *s);
void mtfs_quiesce(struct mtfs *s);
int mtfs_serve_now(struct mtfs *s, const uint64_t *pages, uint32_t n);
int mtfs_evict_setup(struct mtfs *s, int pid, int pagemap_fd, int helper_fd);
int mtfs_evict(struct mtfs *s, const uint64_t *pages, uint32_t n, struct mtfs_evict_res *ret);
void mtfs_set_resident_scan(struct mtfs *s, int64_t bytes, uint64_t installed_before);
uint64_t mtfs_installed(struct mtfs *s);
void mtfs_set_features(struct mtfs *s, uint64_t features);
void mtfs_set_readahead(struct mtfs *s, int on);
void mtfs_set_graph_readahead(struct mtfs *s, int n);
int mtfs_set_leaked(struct mtfs *s, const uint64_t *pages, uint64_t n);
void mtfs_hello(struct mtfs *s, const uint64_t *runs, uint32_t n);
void mtfs_set_resident(struct mtfs *s, int64_t bytes, int add);
uint64_t mtfs_stored(struct mtfs *s, uint64_t *out, uint64_t max, int remote_only);
void mtfs_hint(struct mtfs *s, const uint64_t *pages, uint32_t n);
int mtfs_set_graph(struct mtfs *s, const uint64_t *keys, const uint64_t *ptr, const uint64_t *adj, uint64_t n,
                   int depth);
void mtfs_own_fork(struct mtfs *s, int on);
int mtfs_set_ranges(struct mtfs *s, const uint64_t *ranges, uint32_t n);
void mtfs_read(struct mtfs *s, struct mtfs_stats *st, double *lat, uint64_t *recent, char *blocked, char *warning);
""")
ST_FILE, ST_REDIS = 1, 2
LATN, RECENTN = 20000, 4096      # _mtfs.h's LATN and RECENTN
EVB = 1024                       # _mtfs.h's EVB: pages of one eviction batch at most
EVICT_FIELDS = ("asked", "evicted", "sent", "clean", "zero", "deleted", "not_present", "not_read", "not_dropped",
                "bytes_sent")
STAT_FIELDS = ("faults", "zero_faults", "bytes_fetched", "faults_waited_for_room", "store_round_trips",
               "events_remove", "events_unmap", "events_remap", "removed_by_program", "remapped", "wp_faults",
               "prefetched", "prefetch_hits", "prefetch_unused", "hinted", "copy_errors", "store_errors", "faults_over_budget", "graph_prefetched",
               "cycle", "nlat", "recent_n", "remote_pages", "stored_pages", "resident_est", "installed",
               "faults_pager_own", "readahead", "graph_readahead", "leaked_not_prefetched",
               "forks", "forks_own", "fork_pages_restored", "fork_events_child")
_lib = None


def _load():
    global _lib
    if _lib is None:
        _lib = ffi.dlopen(_runtime.serve_library_path())
    return _lib


def _u64(pages) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(pages, dtype=np.uint64))


def _ptr(a: np.ndarray, ctype: str):
    return ffi.cast(ctype, a.ctypes.data)


def store_params(store: Store) -> dict:
    """How the C loop reaches ``store`` (it speaks ``file:`` and Redis over TCP or a unix socket).

    :raises StoreError: a store the compiled loop cannot speak (``rediss://``: TLS)
    """
    if isinstance(store, FileStore):
        return dict(kind=ST_FILE, dir=store.dir)
    if isinstance(store, RedisStore):
        u = urlparse(store.url)
        if u.scheme == "unix":
            from urllib.parse import parse_qs
            db = int(parse_qs(u.query).get("db", ["0"])[0])
            return dict(kind=ST_REDIS, unix_path=u.path, db=db, password=unquote(u.password or ""))
        if u.scheme != "redis":
            raise StoreError(f"store {store.url}: the fault loop speaks redis:// and unix://, not {u.scheme}://",
                             hint="use redis://HOST:PORT (TLS is not supported)")
        db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() or not u.path.strip("/") else 0
        return dict(kind=ST_REDIS, host=u.hostname or "127.0.0.1", port=u.port or 6379, db=db,
                    password=unquote(u.password or ""))
    raise StoreError(f"store {store.url}: the compiled fault loop has no client for it")


class FaultServer:
    """The C loop's state for one process: its page table, prefetch cache and counters.

    :param uffd: the pager's duplicate of the program's userfaultfd
    :param kick_fd: an eventfd the loop writes when a fault waits for room
    :param local: the resident heap budget in bytes
    :param pf_neigh: pages after a faulting page to prefetch with it (0: none)
    :param cache_pages: size of the prefetch cache (pages kept in the pager)
    """

    def __init__(self, uffd: int, kick_fd: int, store: Store, ns: str, *, local: int, resume: bool,
                 pf_neigh: int, cache_pages: int):
        lib = _load()
        p = store_params(store)
        enc = lambda k: (p.get(k) or "").encode()       # noqa: E731
        self._keep = [store.url.encode(), ns.encode(), enc("dir"), enc("host"), enc("password"), enc("unix_path")]
        self.s = lib.mtfs_create(uffd, kick_fd, int(resume), local, pf_neigh, cache_pages, p["kind"],
                                 *self._keep[:4], p.get("port", 0), p.get("db", 0), *self._keep[4:])
        if self.s == ffi.NULL:
            raise MemoryError("the fault loop's state")
        self.lib = lib
        self.cache_pages = cache_pages

    def run(self) -> int:
        """The loop (blocks until :meth:`stop`); 0, or -errno when reading the userfaultfd failed."""
        return self.lib.mtfs_run(self.s)

    def stop(self) -> None:
        self.lib.mtfs_stop(self.s)

    def destroy(self) -> None:
        if self.s != ffi.NULL:
            self.lib.mtfs_destroy(self.s)
            self.s = ffi.NULL

    def quiesce(self) -> None:
        """Return once every message the loop has read so far is handled."""
        self.lib.mtfs_quiesce(self.s)

    def serve_now(self, pages: list[int]) -> int:
        a = _u64(pages)
        return int(self.lib.mtfs_serve_now(self.s, _ptr(a, "uint64_t *"), len(a))) if len(a) else 0

    def evict_setup(self, pid: int, pagemap_fd: int, helper_fd: int) -> None:
        """Where :meth:`evict` reads (``pid``, its pagemap) and whom it asks to drop (the helper)."""
        if self.lib.mtfs_evict_setup(self.s, pid, pagemap_fd, helper_fd):
            raise MemoryError("the evictor's buffer")

    def evict(self, pages: np.ndarray) -> tuple[dict, str]:
        """Evict ``pages`` (sorted, at most :data:`EVB`) in C without the GIL: write-protect,
        read, hash, send what changed, drop (``_evict.c``).  Returns the batch's counters and
        why it failed ("" when it did not); the caller holds the helper's lock."""
        a = _u64(pages)
        r = ffi.new("struct mtfs_evict_res *")
        rc = self.lib.mtfs_evict(self.s, _ptr(a, "uint64_t *"), len(a), r)
        out = {k: int(getattr(r, k)) for k in EVICT_FIELDS}
        out.update(t_read=float(r.t_read), t_put=float(r.t_put), t_drop=float(r.t_drop))
        err = ffi.string(r.err).decode(errors="replace")
        if rc == -3:
            err = "the evictor was not set up, or a batch was too big"
        return out, ((err or f"eviction failed ({rc})") if rc else "")

    def installed(self) -> int:
        """Pages the loop has put into the program so far (for :meth:`set_resident_scan`)."""
        return int(self.lib.mtfs_installed(self.s))

    def set_resident_scan(self, nbytes: int, installed_before: int) -> None:
        """The resident heap a pagemap scan measured, the scan having begun at ``installed_before``."""
        self.lib.mtfs_set_resident_scan(self.s, nbytes, installed_before)

    def set_features(self, features: int) -> None:
        self.lib.mtfs_set_features(self.s, features)

    def set_readahead(self, on: bool) -> None:
        """Prefetched pages into the program while half the room left under the budget allows."""
        self.lib.mtfs_set_readahead(self.s, int(on))

    def set_graph_readahead(self, n: int) -> None:
        """Of the graph's prefetched pages (and hints), at most ``n`` a round trip go into the
        program, nearest first (readahead on); the others wait in the pager's cache."""
        self.lib.mtfs_set_graph_readahead(self.s, int(n))

    def set_leaked(self, pages) -> None:
        """Pages the heap graph says hold only leaked objects: never prefetched."""
        a = np.sort(_u64(pages))
        if self.lib.mtfs_set_leaked(self.s, _ptr(a, "uint64_t *"), len(a)):
            raise MemoryError("the fault loop's leaked set")

    def hello(self, foreign: list[tuple[int, int]]) -> None:
        a = _u64(foreign).reshape(-1)
        self.lib.mtfs_hello(self.s, _ptr(a, "uint64_t *"), len(foreign))

    def set_resident(self, nbytes: int, add: bool = False) -> None:
        self.lib.mtfs_set_resident(self.s, nbytes, int(add))

    def stored(self, remote_only: bool = False) -> np.ndarray:
        """Pages whose copy the store holds (sorted)."""
        for _ in range(8):          # the table may grow between the count and the copy
            n = int(self.lib.mtfs_stored(self.s, ffi.NULL, 0, int(remote_only)))
            out = np.zeros(n + 1024, np.uint64)
            k = int(self.lib.mtfs_stored(self.s, _ptr(out, "uint64_t *"), len(out), int(remote_only)))
            if k <= len(out):
                return np.sort(out[:k])
        raise RuntimeError("the page table kept growing")

    def set_graph(self, src: np.ndarray, dst: np.ndarray, depth: int) -> None:
        """Page edges ``src[i] -> dst[i]`` (sorted by src) for prefetch along the graph."""
        src, dst = _u64(src), _u64(dst)
        keys, first = np.unique(src, return_index=True)
        ptr = _u64(np.append(first, len(src)))
        keys = _u64(keys)
        self.lib.mtfs_set_graph(self.s, _ptr(keys, "uint64_t *"), _ptr(ptr, "uint64_t *"), _ptr(dst, "uint64_t *"),
                                len(keys), depth)

    def set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """The registered ranges ``(start, end)`` (a resumed pager's fork restore looks at them)."""
        a = _u64(ranges).reshape(-1)
        if self.lib.mtfs_set_ranges(self.s, _ptr(a, "uint64_t *"), len(ranges)):
            raise MemoryError("the fault loop's ranges")

    def own_fork(self, on: bool) -> None:
        """The pager itself makes the program fork now (the heap graph's fork snapshot; call with
        every thread of the program stopped): the next fork event's child is the pager's own and
        gets no pages restored (its copy is patched from the store).  ``False``: that fork is
        over; an unused credit is withdrawn.  Both first wait until the loop has handled what it
        read: a fork event of the program's read before its threads stopped must not take the
        credit (nor, after, the pager's own event be left to find none)."""
        self.quiesce()
        self.lib.mtfs_own_fork(self.s, int(on))

    def hint(self, pages) -> None:
        a = _u64(pages)
        if len(a):
            self.lib.mtfs_hint(self.s, _ptr(a, "uint64_t *"), len(a))

    def read(self, *, latencies: bool = False, recent: bool = False) -> dict:
        """Counters; with ``latencies`` the last fault latencies (s), with ``recent`` the last
        demand-faulted pages; ``blocked`` and ``warning`` messages ("" when none)."""
        st = ffi.new("struct mtfs_stats *")
        lat = np.zeros(LATN, float) if latencies else None
        rec = np.zeros(RECENTN, np.uint64) if recent else None
        blocked, warning = ffi.new("char[320]"), ffi.new("char[320]")
        self.lib.mtfs_read(self.s, st, _ptr(lat, "double *") if lat is not None else ffi.NULL,
                           _ptr(rec, "uint64_t *") if rec is not None else ffi.NULL, blocked, warning)
        out = {k: int(getattr(st, k)) for k in STAT_FIELDS}
        out["fork_seconds"] = float(st.fork_seconds)
        out["blocked"] = ffi.string(blocked).decode(errors="replace")
        out["warning"] = ffi.string(warning).decode(errors="replace")
        if lat is not None:
            out["latencies"] = lat[:min(out["nlat"], LATN)]
        if rec is not None:
            n = out["recent_n"]
            out["recent"] = rec[:min(n, RECENTN)]
        return out


def make_kick_fd() -> int:
    """An eventfd for the loop's "a fault waits for room" signal."""
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
