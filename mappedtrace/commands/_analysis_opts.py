"""Options and output shared by the analysis commands (run, leaks, graph)."""
from __future__ import annotations

import os

import click

# every file written: mode 0600, a fresh file renamed into place, no symlink followed
from ..fileio import check_output, write_private as open_private  # noqa: F401 (re-exported)

#: exit code when leaks are found (LeakSanitizer's)
LEAK_EXIT_CODE = 23

roots_option = click.option(
    "--roots", "roots_mode", type=click.Choice(["precise", "conservative"]), default="precise",
    show_default=True,
    help="precise: use the maps; conservative: scan every root and object word by word (the LeakSanitizer baseline).")


def output_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback of every output-file option: refuse a directory or a
    missing directory before any work (one-line error, exit 2)."""
    if value is not None:
        check_output(value)
    return value


capture_option = click.option(
    "--mode", "capture_mode", type=click.Choice(["fork", "stop-copy"]), default="fork", show_default=True,
    help="How a running process (PID) is captured; it is paused only for that, and analysed on the copy "
         "while it runs on.  fork: a copy-on-write child (shortest pause; falls back to stop-copy where "
         "a fork is impossible, and says so); stop-copy: stopped while its memory is copied.")


def print_warnings(warnings: list[str], limit: int = 20) -> None:
    seen = []
    for w in warnings:
        if w not in seen:
            seen.append(w)
    for w in seen[:limit]:
        click.echo(f"mappedtrace: warning: {w}", err=True)
    if len(seen) > limit:
        click.echo(f"mappedtrace: warning: … {len(seen) - limit} more warnings", err=True)


def target_from_arg(what: str, capture_mode: str = "fork", maps_cache=None):
    """A PID (captured: :func:`~mappedtrace.session.capture_live`) or a snapshot file."""
    from ..errors import MappedTraceError
    if what.isdigit():
        from ..session import capture_live
        return capture_live(int(what), capture_mode, maps_cache)
    if not os.path.exists(what):
        raise MappedTraceError(f"{what}: neither a PID nor an existing snapshot file",
                               hint="give the PID of a running process or a file written by 'mappedtrace snapshot'")
    from ..target.core import open_core
    return open_core(what)


#: attempts at stopping a live process whose malloc was caught mid-update
LOCKED_RETRIES = 5


def analyse_arg(what: str, capture_mode: str = "fork", **kw):
    """Analyse a PID or a snapshot file.

    A PID is captured (``capture_mode``) and analysed on the copy while it
    runs on.  A live process caught while one of its threads was inside
    malloc or free (an arena lock held) has a heap in mid-update: it is
    captured again, up to :data:`LOCKED_RETRIES` times; the last attempt's
    answer is kept with its warning.
    """
    import time
    from ..heap.glibc import HeapCorrupted, HeapError
    from ..session import MapsCache, analyse
    attempts = LOCKED_RETRIES if what.isdigit() else 1
    cache = MapsCache()
    for i in range(attempts):
        last = i == attempts - 1
        try:
            with target_from_arg(what, capture_mode, cache) as target:
                a = analyse(target, maps_cache=cache, **kw)
        except (HeapCorrupted, HeapError) as e:
            if last or "was locked" not in (e.hint or ""):
                raise
            time.sleep(0.02 * (i + 1))
            continue
        if not last and any("is locked" in w for w in getattr(a.heap, "warnings", [])):
            time.sleep(0.02 * (i + 1))
            continue
        return a
    raise AssertionError("unreachable")
