"""``mappedtrace cc ARGS…``: a drop-in CC (clang-22 + the MappedTrace pass)."""
from __future__ import annotations

from ._passthrough import passthrough
from ..driver import run_cc

command = passthrough("Compile C with pointer maps: a drop-in CC (clang-22 + the pass). "
                      "Every argument is passed to clang-22.", run_cc)
