"""``mappedtrace cargo ARGS…``: cargo with pointer maps, and leak checks for run/test."""
from __future__ import annotations

from ._passthrough import passthrough
from ..driver import run_cargo

command = passthrough(
    "Run cargo with pointer maps: every crate of the build goes through rustc with the pass "
    "(RUSTC_WRAPPER=mappedtrace-rustc-wrapper; proc macros and build scripts as they are), and "
    "'cargo run'/'cargo test' run the program under 'mappedtrace run' (leaks reported at exit, "
    "exit code 23). Options of MappedTrace's own, before cargo's arguments: --leaks-json FILE, "
    "--no-leak-check. Every other argument is passed to cargo.", run_cargo)
