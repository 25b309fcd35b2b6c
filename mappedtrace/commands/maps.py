"""``mappedtrace maps BINARY [--json]``: decode and print a binary's pointer maps.

Exit codes: 0 maps shown · 1 the binary has no MappedTrace maps · 2 a
missing, non-ELF or malformed file (one-line error naming section and offset).
"""
from __future__ import annotations

import json
import os
import sys

import click

from ..formats.maps import BinaryMaps


@click.command(help="Decode and print the pointer maps of a binary.")
@click.argument("binary", type=str)
@click.option("--json", "as_json", is_flag=True, help="Write JSON to stdout instead of tables.")
@click.option("--all", "all_records", is_flag=True, help="List every map point (tables show the first 200).")
def command(binary: str, as_json: bool, all_records: bool) -> int:
    from ..reporters import maps_report

    maps = BinaryMaps.load(binary)          # MappedTraceError → one-line error, exit 2
    if not maps.has_maps:
        if "libc.so" in os.path.basename(binary):
            _glibc_model(binary, as_json)
        click.echo(f"mappedtrace: no MappedTrace maps in {binary}: build it with mappedtrace cc "
                   f"(or mappedtrace rustc)", err=True)
        return 1
    maps_report.render_warnings(maps, sys.stderr)
    if as_json:
        maps_report.render_json(maps, sys.stdout)
    else:
        maps_report.render_text(maps, sys.stdout, all_records=all_records)
    return 0


def _glibc_model(binary: str, as_json: bool) -> None:
    """The glibc model's cover of this libc (mappedtrace/glibc_model.py): which of its
    frames leak reports count exact without maps, or why none."""
    from ..glibc_model import model_for
    m = model_for(binary).summary()
    if as_json:
        click.echo(json.dumps({"glibc_model": m}, indent=1))
        return
    if m["off"]:
        click.echo(f"glibc model: off: {m['off']}")
        return
    ok = [n for n, v in m["wrappers"].items() if v == "checked"]
    bad = [n for n, v in m["wrappers"].items() if v != "checked"]
    click.echo(f"glibc model: {m['version']} ({binary}): frames of these functions count exact in leak "
               f"reports (never for relocation)")
    click.echo(f"  syscall wrappers checked by disassembly ({len(ok)}): {' '.join(ok)}")
    if bad:
        click.echo(f"  listed but not checked (a call outside the rule, or only a tail call: never a frame of its own): {' '.join(bad)}")
    click.echo(f"  blocking waits and the stdio read path (from glibc's source): {' '.join(m['waiters'])}")
    click.echo(f"  start-up: {' '.join(m['start'])};  thread start: {' '.join(m['thread_start'])}")
