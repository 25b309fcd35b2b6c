"""``mappedtrace rustc ARGS…``: rustc with linker-plugin-lto and lld loading the pass."""
from __future__ import annotations

import click

from ..driver import run_rustc


@click.command(
    help="Compile Rust with pointer maps (linker-plugin-lto + the pass in lld-22). "
         "Every argument is passed to rustc, but --settle-points (loop map points for "
         "snapshot --settle; off by default: they cost instructions in tight loops).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> int:
    return run_rustc(list(args))
