"""``mappedtrace maps BINARY [--json]``: decode and print a binary's pointer maps.

Exit codes: 0 maps shown · 1 the binary has no MappedTrace maps · 2 a
missing, non-ELF or malformed file (one-line error naming section and offset).
"""
from __future__ import annotations

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
        click.echo(f"mappedtrace: no MappedTrace maps in {binary}: build it with mappedtrace cc "
                   f"(or mappedtrace rustc)", err=True)
        return 1
    maps_report.render_warnings(maps, sys.stderr)
    if as_json:
        maps_report.render_json(maps, sys.stdout)
    else:
        maps_report.render_text(maps, sys.stdout, all_records=all_records)
    return 0
