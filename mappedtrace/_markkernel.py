"""The compiled marking kernel (``_mark.c``) through cffi in API mode.

Built on first use into ``~/.cache/mappedtrace/`` (``$XDG_CACHE_HOME``
honoured; ``MAPPEDTRACE_CACHE`` overrides), keyed by a hash of the C source,
so an edited kernel is rebuilt and concurrent builders do not collide (each
compiles in its own temporary directory and renames the result into place).
:func:`load` returns None when no C compiler is available; the caller then
uses the numpy marker.  ``MAPPEDTRACE_NO_CKERNEL=1`` forces that fallback.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

_SRC = Path(__file__).with_name("_mark.c")

CDEF = """
struct mt_edge { int64_t src; int64_t dst; uint64_t src_off; uint64_t dst_off; uint32_t flags; uint32_t pad; };
struct mt_seg { uint64_t lo, hi; int64_t first, last; int64_t boff, nb; uint32_t shift, pad; };
struct mt_heap {
    int64_t n; const uint64_t *start; const uint64_t *size; uint8_t *state; int32_t *type;
    int64_t npiece; const uint64_t *piece; int64_t nseg; const struct mt_seg *segs; int64_t hot;
    uint64_t lo, hi; const uint32_t *bucket;
    int64_t nheapmaps; const uint64_t *heapmaps; int64_t nmaps; const uint64_t *maps;
};
struct mt_types {
    int64_t n; const uint64_t *size; const uint32_t *flags; const int64_t *slot_lo; const int64_t *slot_hi;
    const int64_t *elem; const uint64_t *flex_off; const uint8_t *hasptr; const uint8_t *covered;
    const uint64_t *s_off; const uint64_t *s_count; const uint64_t *s_stride; const int64_t *s_target;
    const uint32_t *s_flags;
};
struct mt_out {
    int64_t nedges, nexact, ntcons, ncons, nunreached; uint64_t counters[8];
    const int64_t *site_type;
};
void mt_index(const struct mt_heap *h, uint32_t *bucket);
int64_t mt_find(const struct mt_heap *h, uint64_t v);
int mt_mark(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
            int64_t ninit, const int64_t *init_node, const int64_t *init_type,
            const uint64_t *init_off, int conservative);
int64_t mt_edges(const struct mt_heap *h, const struct mt_types *t, struct mt_out *o,
                 const uint8_t *select, struct mt_edge *out, int64_t cap);
int64_t mt_chain(const uint64_t *w, int64_t nw, int64_t *pos, int64_t lim, int64_t *out, uint64_t *raw,
                 int64_t cap);
int mt_csr(int64_t n, int64_t m, const int64_t *src, const int64_t *dst, int64_t *ptr, int64_t *adj);
int64_t mt_reach(int64_t n, const int64_t *ptr, const int64_t *adj, int64_t nstart, const int64_t *starts,
                 uint8_t *seen);
int64_t mt_dominators(int64_t n, const int64_t *ptr, const int64_t *adj, int64_t root, int64_t *idom);
int64_t mt_subtree_sums(int64_t n, const int64_t *parent, const uint64_t *weight, uint64_t *out);
int64_t mt_path_sums(int64_t n, const int64_t *parent, const int64_t *weight, int64_t *out, int64_t *root);
"""

_loaded: object | None = None
_failed = False


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    env = os.environ.get("MAPPEDTRACE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mappedtrace"


def _module_name() -> str:
    h = hashlib.sha256(_SRC.read_bytes() + CDEF.encode()).hexdigest()[:16]
    return f"_mt_mark_{h}"


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(name: str, dest: Path) -> Path | None:
    from cffi import FFI
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return None
    print(f"mappedtrace: building the marking kernel into {dest} (once)", file=sys.stderr)
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(name, _SRC.read_text(), extra_compile_args=["-O2", "-std=c99"])
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        so = Path(ffi.compile(tmpdir=tmp, verbose=False))
        final = dest / so.name
        os.replace(so, final)
    return final


def load():
    """The compiled kernel module (``.ffi``, ``.lib``), or None without a C compiler."""
    global _loaded, _failed
    if _loaded is not None or _failed:
        return _loaded
    if os.environ.get("MAPPEDTRACE_NO_CKERNEL"):
        return None
    name = _module_name()
    dest = cache_dir()
    try:
        found = sorted(dest.glob(name + ".*.so")) + sorted(dest.glob(name + ".so"))
        path = found[0] if found else _build(name, dest)
        _loaded = _import(name, path) if path else None
    except Exception as e:          # a broken compiler must not break tracing: fall back
        print(f"mappedtrace: cannot build the marking kernel ({type(e).__name__}: {e}); "
              "using the numpy marker", file=sys.stderr)
        _loaded = None
    if _loaded is None:
        _failed = True
    return _loaded
