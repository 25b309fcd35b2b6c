"""``mappedtrace relocate PID --plan FILE [--dry-run] [--json]``: one relocation pass.

The plan file is JSON: ``{"select": "all"}`` (every object that can move),
``{"objects": ["0x…", …]}`` (start addresses of in-use objects) or
``{"types": ["struct node", …]}`` (the objects the graph types so), with an
optional ``"limit": N``.  ``--recover`` only finishes or rolls back the pass
of a relocator that died (``relocate`` does that first anyway).

Exit codes: 0 done · 2 a one-line error (no such process, a bad plan, the
allocator busy: nothing written, or rolled back).
"""
from __future__ import annotations

import json
import sys

import click

from ..errors import MappedTraceError

#: bound on a plan file (addresses, each a JSON string)
MAX_PLAN_BYTES = 64 << 20


def read_plan(path: str) -> tuple[str | list[int] | dict, int | None]:
    """(selection, limit) from a plan file; a bad one is a one-line error naming it."""
    from ..fileio import open_regular
    try:
        with open_regular(path, "plan") as f:       # a FIFO or a device is refused, not read
            data = f.read(MAX_PLAN_BYTES + 1)
    except OSError as e:
        raise MappedTraceError(f"cannot read the plan {path}: {e.strerror}") from None
    if len(data) > MAX_PLAN_BYTES:
        raise MappedTraceError(f"{path}: plan larger than {MAX_PLAN_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise MappedTraceError(f"{path}: not JSON ({e})",
                               hint='a plan is {"select": "all"} or {"objects": ["0x...", ...]}') from None
    if not isinstance(doc, dict):
        raise MappedTraceError(f"{path}: a plan is a JSON object", hint='e.g. {"select": "all"}')
    limit = doc.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise MappedTraceError(f"{path}: limit must be a non-negative integer, not {limit!r}")
    if "types" in doc:
        types = doc["types"]
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            raise MappedTraceError(f"{path}: types must be a list of type names", hint='e.g. {"types": ["struct node"]}')
        return {"types": types}, limit
    if "objects" in doc:
        objs = doc["objects"]
        if not isinstance(objs, list):
            raise MappedTraceError(f"{path}: objects must be a list of addresses")
        out = []
        for n, x in enumerate(objs):
            try:
                v = x if isinstance(x, int) and not isinstance(x, bool) else int(str(x), 0)
            except ValueError:
                raise MappedTraceError(f"{path}: objects[{n}] = {x!r} is not an address") from None
            if not 0 < v < 1 << 64:
                raise MappedTraceError(f"{path}: objects[{n}] = {x!r} is not an address")
            out.append(v)
        return out, limit
    sel = doc.get("select")
    if sel in ("all", "all-movable"):
        return "all", limit
    raise MappedTraceError(f"{path}: unknown selection {sel!r}",
                           hint='choose "select": "all", or list "objects" or "types" ("cold" is not supported yet)')


def recover_and_report(pid: int, as_json: bool) -> int:
    """``--recover``: finish or roll back a dead relocator's pass on PID and say what was done."""
    from ..relocate.mover import recover as do_recover
    from ..reporters import relocate_report
    from ..target.live import check_pid
    check_pid(pid)
    out = do_recover(pid)
    if as_json:
        json.dump({"recovered": out}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        relocate_report.render_recovery(out, sys.stdout)
    return 0


@click.command(help="Move heap objects of a running process, rewriting every exact pointer to them "
                    "(one pass; --dry-run: what would move, what is pinned and why).")
@click.argument("pid", type=int)
@click.option("--plan", "plan_path", metavar="FILE",
              help='JSON: {"select": "all"}, {"objects": ["0x..."]} or {"types": ["struct node"]}, '
                   'optional "limit".')
@click.option("--dry-run", is_flag=True, help="Analyse and report only; write nothing.")
@click.option("--recover", is_flag=True, help="Only finish or roll back a pass whose relocator died.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(pid: int, plan_path: str | None, dry_run: bool, recover: bool, as_json: bool) -> int:
    from ..reporters import relocate_report
    from ..relocate.mover import relocate

    if pid <= 0:
        raise MappedTraceError(f"invalid PID {pid}", hint="give the PID of a running process (ps -e)")
    if recover:
        return recover_and_report(pid, as_json)
    if not plan_path:
        raise MappedTraceError("no plan given", hint='relocate PID --plan FILE (e.g. {"select": "all"})')
    select, limit = read_plan(plan_path)
    res = relocate(pid, select, dry_run=dry_run, limit=limit)
    d = res.to_dict()
    if as_json:
        json.dump(d, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        relocate_report.render(d, sys.stdout)
    for w in res.warnings:
        print(f"mappedtrace: warning: {w}", file=sys.stderr)
    return 0
