"""Commands that hand every argument to a compiler or build tool (cc, c++, rustc, cargo)."""
from __future__ import annotations

from typing import Callable

import click


def passthrough(help_: str, run: Callable[[list[str]], int]) -> click.Command:
    """A command that takes any arguments, unparsed, and returns ``run(args)``."""
    @click.command(help=help_, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                 "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> int:
        return run(list(args))
    return command
