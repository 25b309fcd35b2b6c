"""``mappedtrace c++ ARGS…``: a drop-in CXX (clang++-22 + the MappedTrace pass)."""
from __future__ import annotations

from ._passthrough import passthrough
from ..driver import run_cc

command = passthrough("Compile C++ with pointer maps: a drop-in CXX (clang++-22 + the pass). "
                      "Every argument is passed to clang++-22, but --settle-points and --alloc-sites "
                      "(see 'mappedtrace cc'; operator new is not an allocation site).",
                      lambda args: run_cc(args, compiler="clang++-22"))
