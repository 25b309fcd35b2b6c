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


def _remember(ctx: click.Context, param: click.Parameter, value):
    # kept on the context, read by target_from_arg: the commands pass nothing down
    if value is not None and value is not False:
        ctx.meta[f"mappedtrace.{param.name}"] = value
    return value


def remote_options(f):
    """``--remote HOST:PORT`` and ``--sysroot DIR`` for a command that takes a PID or FILE."""
    import functools

    inner = f

    @functools.wraps(inner)
    def command(*args, **kw):
        if kw.get("tree") and remote_arg("remote"):
            from ..errors import MappedTraceError
            raise MappedTraceError("--tree and --remote do not go together: a server is attached to one process",
                                   hint="start a server per process of the tree and trace each with --remote "
                                        "(one gdbserver --multi serving a tree is not supported)")
        return inner(*args, **kw)
    f = click.option("--sysroot", metavar="DIR", expose_value=False, callback=_remember,
                     help="Find the target's binaries here by build-id: a tree that mirrors the target's "
                          "paths, or a .build-id/xx/yyyy… tree (with --remote or a snapshot from "
                          "another machine).  Also searched: DEBUGINFOD_URLS, then the server's files.")(command)
    return click.option("--remote", metavar="HOST:PORT", expose_value=False, callback=_remember,
                        help="Trace PID on another machine through the gdb-remote server at HOST:PORT "
                             "(lldb-server-22 gdbserver HOST:PORT, or gdbserver --once --multi HOST:PORT "
                             "there; or either attached already); the server exits when we detach.  "
                             "--mode fork needs gdbserver (elsewhere: stop-copy, and the report says why).")(f)


#: ``snapshot --bundle`` (read with :func:`remote_arg`)
bundle_option = click.option(
    "--bundle", is_flag=True, expose_value=False, callback=_remember,
    help="Write a tar of the core and every binary it maps (found by build-id), so another "
         "machine can analyse it offline: mappedtrace leaks FILE.")


def _remember_size(ctx: click.Context, param: click.Parameter, value):
    if value is None:
        return None
    from ..memory import parse_size
    try:
        ctx.meta[f"mappedtrace.{param.name}"] = parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return value


#: ``--max-memory SIZE`` (read with :func:`remote_arg`; checked by :func:`analyse_arg`)
max_memory_option = click.option(
    "--max-memory", metavar="SIZE", expose_value=False, callback=_remember_size,
    help="Refuse, before the work, an analysis estimated to need more memory than SIZE "
         "(e.g. 2G, 512M): checked before a capture (the copy) and after the heap walk "
         "(the copy and the heap's chunks), before the marking.")


def remote_arg(name: str):
    """The value of ``--remote``/``--sysroot``/``--bundle`` given to the running command, or None."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(f"mappedtrace.{name}") if ctx is not None else None


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
    remote, sysroot = remote_arg("remote"), remote_arg("sysroot")
    if remote:
        if not what.isdigit():
            raise MappedTraceError(f"{what}: with --remote, give the PID of the process on the target's machine",
                                   hint="the PID the server is attached to")
        # copy what a snapshot copies, detach, analyse the copy: the target is held only
        # while its memory crosses the link (the roots scan every anonymous mapping
        # anyway, so reading on demand would not move fewer bytes)
        from ..session import MapsCache, warm_caches
        from ..target.remote import attach_remote, capture_remote
        cache = maps_cache if maps_cache is not None else MapsCache()
        # a server with no process yet: the maps and libc's symbols are decoded before it
        # attaches (as a local capture decodes them before its stop); a server attached
        # already holds the process: they are decoded after the detach, in the analysis
        # (decoded in a thread during the copy, they lengthened the pause by 1-3 s and
        # saved no wall time here: benchmarks/remote/RESULTS.md)
        rt = attach_remote(remote, int(what), sysroot=sysroot, before_attach=lambda t: warm_caches(t, cache),
                           fork_events=capture_mode == "fork")
        try:
            # a copy taken while a thread held an arena lock is taken again after a
            # moment's run (before the detach: the server exits when we detach)
            return capture_remote(rt, busy=_arena_busy, attempts=LOCKED_RETRIES, mode=capture_mode)
        finally:
            rt.close()
    limit = remote_arg("max_memory")
    if what.isdigit():
        from ..session import capture_live
        if limit is not None:
            _check_capture(int(what), limit)
        return capture_live(int(what), capture_mode, maps_cache)
    if not os.path.exists(what):
        raise MappedTraceError(f"{what}: neither a PID nor an existing snapshot file",
                               hint="give the PID of a running process or a file written by 'mappedtrace snapshot'")
    from ..target.bundle import is_bundle, open_bundle
    if is_bundle(what):
        return open_bundle(what, sysroot=sysroot)
    from ..target.core import open_core
    if limit is not None:
        # the snapshot's memory is mapped, not copied; what the analysis touches of it counts
        from ..memory import check
        check(limit, os.path.getsize(what), None, what)
    target = open_core(what)
    if sysroot:
        from ..target.bundle import localize_snapshot
        localize_snapshot(target, sysroot=sysroot)
    return target


def _arena_busy(target) -> str | None:
    """Why a copy of ``target`` would give a heap in mid-update (an arena lock held), or None."""
    from ..errors import MappedTraceError
    from ..heap.glibc import locked_arenas
    from ..modules import ModuleMap
    try:
        locked = locked_arenas(target, ModuleMap(target))
    except MappedTraceError:
        return None         # no heap found: the analysis says so
    return f"arena {', '.join(locked)} was locked (a thread was inside malloc or free)" if locked else None


def _check_capture(pid: int, limit: int) -> None:
    """Before a capture: refuse when the copy alone would not fit in ``limit``."""
    from ..errors import NoSuchProcess, PermissionProblem
    from ..memory import check
    from ..target.capture import plan_bytes
    from ..target.live import parse_maps
    try:
        with open(f"/proc/{pid}/maps") as f:
            mappings = parse_maps(f.read())
    except FileNotFoundError:
        raise NoSuchProcess(f"no process with PID {pid}", hint="check the PID (ps -e)") from None
    except PermissionError:
        raise PermissionProblem(f"cannot read /proc/{pid}/maps", hint="run as root or with CAP_SYS_PTRACE") from None
    check(limit, plan_bytes(mappings), None, f"process {pid}")


def _report_remote(meta: dict) -> None:
    """What a remote analysis moved over the link, and how long the target was held."""
    click.echo(f"mappedtrace: remote {meta.get('remote')}: read {meta.get('bytes_in', 0) / 2**20:.1f} MiB "
               f"in {meta.get('round_trips', 0)} round trips, sent {meta.get('bytes_out', 0) / 2**10:.0f} KiB; "
               f"{meta.get('mode', 'stop-copy')} capture: pause {meta.get('pause_ns', 0) / 1e6:.0f} ms from our "
               f"{'attach' if meta.get('attached_here') else 'connect'} to our detach"
               + (f" of the parent (the fork's child was read after it, then killed)" if meta.get("mode") == "fork"
                  else "") + ", before the analysis "
               f"({'binary x' if meta.get('binary_reads') else 'hex m'} reads)"
               + (f"; stopped {meta['lock_retries'] + 1} times: an arena lock was held, the process ran "
                  "a moment in between" if meta.get("lock_retries") else ""), err=True)


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
    # remotely the copy is retried before the detach (target_from_arg): one attempt here
    attempts = LOCKED_RETRIES if what.isdigit() and not remote_arg("remote") else 1
    cache = MapsCache()
    kw.setdefault("max_memory", remote_arg("max_memory"))
    for i in range(attempts):
        last = i == attempts - 1
        try:
            with target_from_arg(what, capture_mode, cache) as target:
                a = analyse(target, maps_cache=cache, **kw)
            if remote_arg("remote"):
                _report_remote(target.meta)
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
