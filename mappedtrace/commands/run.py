"""``mappedtrace run [--json FILE] [--exitcode N] -- PROGRAM ARGS…``: leaks at exit."""
from __future__ import annotations

import sys

import click

from ._analysis_opts import (LEAK_EXIT_CODE, open_private, output_path, print_warnings, remote_arg, remote_options,
                             roots_option)


@click.command(help="Run PROGRAM under the tracer and report its leaks when it exits "
                    "(after main returns or exit is called), like LeakSanitizer. "
                    "Exits with --exitcode when leaks are found, else with the program's code.",
               context_settings={"ignore_unknown_options": True})
@click.option("--json", "json_path", metavar="FILE", callback=output_path, help="Also write the leak report as JSON to FILE (mode 0600).")
@click.option("--exitcode", default=LEAK_EXIT_CODE, show_default=True, type=int,
              help="Exit code when leaks are found.")
@roots_option
@remote_options
@click.option("--width", type=int, default=None, help="Report width (columns).")
@click.argument("program", nargs=-1, required=False, type=click.UNPROCESSED)
def command(json_path: str | None, exitcode: int, roots_mode: str, width: int | None,
            program: tuple[str, ...]) -> int:
    from ..session import analyse
    from ..target.spawn import run_to_exit
    from ..reporters import leaks_report

    found: dict = {}

    def at_exit(target) -> None:
        a = analyse(target, roots_mode=roots_mode)
        found["analysis"] = a
        # report while the program is still held, so the report comes before it vanishes
        sys.stdout.flush()
        leaks_report.render(a.leaks, sys.stderr, width=width)
        if json_path:
            with open_private(json_path) as f:
                leaks_report.to_json(a.leaks, f)
        print_warnings(a.warnings)

    if remote_arg("remote"):
        if program:
            raise click.UsageError("with --remote, the server launches the program: "
                                   "gdbserver HOST:PORT PROGRAM ARGS… (give no PROGRAM here)")
        # the program was launched by the server: gdbserver HOST:PORT PROGRAM ARGS…
        from ..target.remote import run_remote_to_exit
        code = run_remote_to_exit(remote_arg("remote"), at_exit, sysroot=remote_arg("sysroot"))
        a = found["analysis"]
        return exitcode if a.leaks.summary["leaked_objects"] else (code or 0)
    if not program:
        raise click.UsageError("Missing argument 'PROGRAM...'.")
    res = run_to_exit(list(program), at_exit)
    if res.error is not None:
        raise res.error
    if not res.analysed:
        why = f"it was killed by signal {res.signal}" if res.signal else "it did not exit normally"
        click.echo(f"mappedtrace: {program[0]} was not analysed: {why}", err=True)
        return res.exit_code
    a = found["analysis"]
    if a.leaks.summary["leaked_objects"]:
        return exitcode
    return res.exit_code
