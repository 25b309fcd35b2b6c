"""``mappedtrace cargo ARGS…``: cargo with pointer maps, and leak checks for run/test."""
from __future__ import annotations

import click

from ..driver import run_cargo


@click.command(
    help="Run cargo with pointer maps: every crate of the build goes through rustc with the pass "
         "(RUSTC_WRAPPER=mappedtrace-rustc-wrapper; proc macros and build scripts as they are), and "
         "'cargo run'/'cargo test' run the program under 'mappedtrace run' (leaks reported at exit, "
         "exit code 23). Every argument is passed to cargo.",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> int:
    return run_cargo(list(args))
