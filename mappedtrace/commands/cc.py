"""``mappedtrace cc ARGS…``: a drop-in CC (clang-22 + the MappedTrace pass)."""
from __future__ import annotations

import click

from ..driver import run_cc


@click.command(
    help="Compile C with pointer maps: a drop-in CC (clang-22 + the pass). "
         "Every argument is passed to clang-22, but --settle-points (loop map points for "
         "snapshot --settle; off by default: they cost instructions in tight loops).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> int:
    return run_cc(list(args))
