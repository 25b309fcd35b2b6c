"""``mappedtrace rustc ARGS…``: rustc with linker-plugin-lto and lld loading the pass."""
from __future__ import annotations

from ._passthrough import passthrough
from ..driver import run_rustc

command = passthrough("Compile Rust with pointer maps (linker-plugin-lto + the pass in lld-22). "
                      "Every argument is passed to rustc, but --settle-points (loop map points for "
                      "snapshot --settle; off by default: they cost instructions in tight loops).", run_rustc)
