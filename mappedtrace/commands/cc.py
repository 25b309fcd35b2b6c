"""``mappedtrace cc ARGS…``: a drop-in CC (clang-22 + the MappedTrace pass)."""
from __future__ import annotations

from ._passthrough import passthrough
from ..driver import run_cc

command = passthrough("Compile C with pointer maps: a drop-in CC (clang-22 + the pass). "
                      "Every argument is passed to clang-22, but --settle-points (loop map points for "
                      "snapshot --settle; off by default: they cost instructions in tight loops) and "
                      "--alloc-sites (record where each heap object was allocated: 8 bytes per object; "
                      "reports then say 'allocated at FILE:LINE in FUNCTION'; --alloc-sites=compact: no chunk grows, "
                      "objects of sizes 16k+1..16k+8 get no site) and --alloc-fn=NAME[:malloc|calloc|realloc|wrapper],… "
                      "(calls to these allocation wrappers are sites too).", run_cc)
