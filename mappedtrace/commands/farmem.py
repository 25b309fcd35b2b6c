"""``mappedtrace farmem``: run a program with part of its heap in a page store.

``run`` starts the program with the runtime helper preloaded and pages its
heap; ``status`` reads the state file the pager keeps; ``detach`` brings
every page home and leaves the process as if it had never been paged.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time

import click

from ..errors import MappedTraceError, NoSuchProcess

MIN_LOCAL = 1 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``64M``, ``1.5G``, ``4096`` → bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise MappedTraceError(f"--local {text!r} is not a size", hint="write it like 64M, 512K or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:        # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@click.group(help="Far memory: keep part of a program's heap in a page store (Redis or files).")
def command() -> None:
    pass


@command.command("run", context_settings={"ignore_unknown_options": True},
                 help="Run PROGRAM with its resident heap kept at or under --local; the rest lives in "
                      "--store and comes back when touched. Exits with the program's exit code.")
@click.option("--local", "local", required=True, metavar="SIZE", help="Resident heap budget, e.g. 64M.")
@click.option("--store", "store_url", required=True, metavar="URL",
              help="file:DIR or redis://HOST:PORT")
@click.option("--no-graph", is_flag=True,
              help="Page without heap-graph guidance (no leaked-first eviction, no prefetch along pointers).")
@click.option("--prefetch", default=8, show_default=True, type=click.IntRange(0, 64),
              help="Pages after a faulting one fetched with it when the store holds them (0: none).")
@click.option("--no-readahead", is_flag=True,
              help="Keep prefetched pages in the pager's cache until faulted, never put them into the program.")
@click.option("--graph-readahead", default=None, type=click.IntRange(0, 256), metavar="N",
              help="Of the pages prefetched along the heap graph, at most N a fault go into the program "
                   "(nearest first); the rest wait in the pager's cache.  [default: 0]")
@click.option("--relocate", is_flag=True,
              help="Also segregate objects by heat: gather hot objects onto pages of their own (relocation "
                   "passes, exact pointers rewritten) so that cold pages are evicted whole.")
@click.option("--relocate-every", default=3.0, show_default=True, type=click.FloatRange(0.2),
              metavar="SECONDS", help="Seconds between relocation passes (with --relocate).")
@click.option("--relocate-passes", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="Relocation passes at most (0: no bound).")
@click.option("--interval", default=0.1, show_default=True, type=float, help="Seconds between eviction rounds.")
@click.option("--access", "access", default="faults", show_default=True, type=click.Choice(["auto", "damon", "faults"]),
              help="What the clock sees besides faults: the kernel's DAMON access monitor (reads too), "
                   "faults only, or auto (DAMON where it can be used; the status says which).  DAMON is a "
                   "system-wide kernel monitor: it is started only when asked for.")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(local: str, store_url: str, no_graph: bool, prefetch: int, no_readahead: bool,
            graph_readahead: int | None, interval: float, relocate: bool, relocate_every: float,
            relocate_passes: int, access: str, program: tuple[str, ...]) -> int:
    from ..farmem import _runtime
    from ..farmem.pager import FarMemError, Pager, state_dir
    from ..farmem.stores import open_store

    budget = parse_size(local)
    if budget < MIN_LOCAL:
        # below this a thread touching a few pages at once could wait for room forever
        raise FarMemError(f"a local memory budget of {budget} bytes leaves no page resident"
                          if budget < 4096 else f"a local memory budget of {budget} bytes is below the "
                          f"{MIN_LOCAL >> 20} MiB this pager needs to keep every thread moving",
                          hint="give --local a size such as 64M or 1G")
    _check_access(access)
    store = open_store(store_url)
    lib = _runtime.library_path()
    token = secrets.token_hex(6)
    sock = os.path.join(state_dir(), f"helper-{token}.sock")
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(x for x in (lib, env.get("LD_PRELOAD", "")) if x)
    env["MTFARMEM_SOCK"] = sock
    try:
        child = subprocess.Popen(list(program), env=env)
    except OSError as e:
        raise MappedTraceError(f"cannot run {program[0]}: {e.strerror}") from None
    pager = Pager(child.pid, store, local=budget, sock=sock, ns=f"mtfm:{child.pid}:{token}",
                  interval=interval, graph=not no_graph, prefetch=prefetch, readahead=not no_readahead, access=access,
                  **({} if graph_readahead is None else {"graph_readahead": graph_readahead}))
    _segregate(pager, relocate, relocate_every, relocate_passes)
    try:
        pager.connect(alive=lambda: child.poll() is None)
        pager.start()
    except MappedTraceError as e:
        if child.poll() is None:
            child.kill()
            child.wait()
        raise e

    # Wait for the exit through a pidfd, and reap only then: the graph thread ptrace-stops the
    # program (our child) for its fork snapshots, and a waitpid here would take those stops
    # for the tracer's (Popen reads a stop as an exit by signal, and the tracer waits for ever).
    pidfd = os.pidfd_open(child.pid)

    def wait() -> int | None:
        if not select.select([pidfd], [], [], 0.2)[0]:
            return None
        return child.wait()
    try:
        rc = _page_until_exit(pager, wait)
    finally:
        os.close(pidfd)
    try:
        os.unlink(sock)
    except OSError:
        pass
    return rc if rc >= 0 else 128 - rc


def _recover_pass(pager) -> None:
    """A relocation pass the dead pager was in left the program stopped: finish or roll it
    back (with or without --relocate now) before paging on."""
    from ..farmem.segregate import Segregator
    seg = pager.segregator or Segregator(pager)
    done = seg.recover()
    if done:
        print(f"mappedtrace: farmem: the dead pager's relocation pass was {done['action']} "
              f"({done['words']} words, {done['freed']} chunks freed)", file=sys.stderr)


def _segregate(pager, on: bool, every: float, passes: int) -> None:
    if on:
        from ..farmem.segregate import Segregator
        pager.segregator = Segregator(pager, every=every, passes=passes)


def _page_until_exit(pager, wait) -> int:
    """Keep paging until ``wait()`` returns the program's exit code; SIGUSR1, SIGTERM or
    SIGINT to the pager detach it (every page home) and it goes on waiting."""
    from ..farmem.pager import state_path
    flags = {"detach": False}

    def on_signal(signum, frame):
        flags["detach"] = True
    for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    detached = False
    try:
        while (rc := wait()) is None:
            if flags["detach"] and not detached:
                pager.detach()
                detached = True
                print(f"mappedtrace: farmem: detached from {pager.pid}; every page is home", file=sys.stderr)
    finally:
        if not detached:
            pager.shutdown()
        for w in pager.warnings:
            print(f"mappedtrace: farmem: warning: {w}", file=sys.stderr)
        if pager.segregator is not None:
            print(f"mappedtrace: farmem: {pager.segregator.summary()}", file=sys.stderr)
    try:
        os.unlink(state_path(pager.pid))
    except OSError:
        pass
    return rc


@command.command("attach", help="Page PID again after its pager died (the program runs with the helper "
                                "that 'farmem run' preloaded). Waits until PID exits.")
@click.argument("pid", type=int)
@click.option("--local", "local", required=True, metavar="SIZE", help="Resident heap budget, e.g. 64M.")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="The store the dead pager used (default: the one its state file names).")
@click.option("--relocate", is_flag=True,
              help="Also segregate objects by heat: gather hot objects onto pages of their own (relocation "
                   "passes, exact pointers rewritten) so that cold pages are evicted whole.")
@click.option("--relocate-every", default=3.0, show_default=True, type=click.FloatRange(0.2),
              metavar="SECONDS", help="Seconds between relocation passes (with --relocate).")
@click.option("--relocate-passes", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="Relocation passes at most (0: no bound).")
@click.option("--interval", default=0.1, show_default=True, type=float, help="Seconds between eviction rounds.")
@click.option("--access", "access", default="faults", show_default=True, type=click.Choice(["auto", "damon", "faults"]),
              help="What the clock sees besides faults (see 'farmem run --help').")
def attach_cmd(pid: int, local: str, store_url: str | None, relocate: bool, relocate_every: float,
               relocate_passes: int, interval: float, access: str) -> int:
    from ..farmem.pager import FarMemError, Pager
    from ..farmem.stores import open_store
    st = _state_or_fail(pid)
    if _alive(st.get("pager_pid", -1)) and st.get("state") == "running":
        raise FarMemError(f"process {pid} is paged by pager {st['pager_pid']} already")
    if st.get("state") == "detached":
        # the helper gave its userfaultfd up; a new one needs code injected (a follow-up)
        raise FarMemError(f"process {pid} was detached: its helper no longer has a userfaultfd",
                          hint="attaching to a process without the helper needs it injected (not built yet)")
    if store_url and store_url != st["store"]:
        raise FarMemError(f"process {pid}'s pages are in {st['store']}, not {store_url}",
                          hint="give the same --store, or leave it out")
    budget = parse_size(local)
    if budget < MIN_LOCAL:
        raise FarMemError(f"a local memory budget of {budget} bytes is below {MIN_LOCAL >> 20} MiB")
    _check_access(access)
    store = open_store(st["store"])
    pager = Pager(pid, store, local=budget, sock=st["sock"], ns=st["namespace"], resume=True, interval=interval,
                  access=access)
    _segregate(pager, relocate, relocate_every, relocate_passes)
    pager.connect(timeout=5, alive=lambda: _alive(pid), before_helper=lambda: _recover_pass(pager))
    pager.start()
    print(f"mappedtrace: farmem: paging {pid} again (pages of the dead pager come back from "
          f"{st['store']} on their first touch)", file=sys.stderr)

    def wait() -> int | None:
        time.sleep(0.2)
        return None if _alive(pid) else 0
    _page_until_exit(pager, wait)
    return 0


def _check_access(access: str) -> None:
    """``--access damon`` where DAMON cannot be had: a one-line error before anything starts
    (a dead pager's DAMON context is stopped first: it would hold DAMON otherwise)."""
    from ..farmem.access import probe, reclaim_stale
    from ..farmem.pager import FarMemError, state_dir
    if access != "damon":
        return
    reclaim_stale(state_dir())
    why = probe(state_dir())
    if why:
        raise FarMemError(f"--access damon: {why}",
                          hint="use --access auto or faults (the clock then sees faults and writes only)")


def _state_or_fail(pid: int) -> dict:
    from ..farmem.pager import read_state
    st = read_state(pid)
    if st is None:
        if not _alive(pid):
            raise NoSuchProcess(f"no process {pid}", hint="the program has exited")
        raise MappedTraceError(f"process {pid} is not paged by mappedtrace farmem",
                               hint="start it with 'mappedtrace farmem run --local SIZE --store URL -- PROGRAM'")
    if not _alive(pid):
        raise NoSuchProcess(f"no process {pid} (a stale far-memory state file is left)",
                            hint="the program has exited")
    return st


def _mib(n) -> str:
    return "-" if n is None else f"{n / (1 << 20):.1f} MiB"


@command.command("status", help="Resident and remote bytes, faults, fault latency, evictions, store health.")
@click.argument("pid", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def status_cmd(pid: int, as_json: bool) -> int:
    st = _state_or_fail(pid)
    st["pager_alive"] = _alive(st.get("pager_pid", -1))
    if as_json:
        json.dump(st, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"far memory of process {pid}", show_header=False)
    lat = st.get("fault_latency_median_us")
    rows = [
        ("pager", f"{st['pager_pid']} ({st['state']}{'' if st['pager_alive'] else ', NOT RUNNING: faults wait'})"),
        ("store", f"{st['store']} ({'ok' if st['store_health']['ok'] else 'DOWN: ' + st['store_health']['detail']})"),
        ("local budget", _mib(st["local_bytes"])),
        ("resident heap", _mib(st["resident_bytes"])),
        ("remote", _mib(st["remote_bytes"])),
        ("heap paged", f"{_mib(st['heap_bytes'])} in {len(st['ranges'])} ranges"),
        ("faults", f"{st['faults']} ({st['zero_faults']} zero-filled), {st['faults_per_s']}/s"),
        ("fault latency", "-" if lat is None else
         f"median {lat:.0f} µs, p99 {st['fault_latency_p99_us']:.0f} µs"),
        ("fault loop", f"{st.get('fault_loop', '-')}, {st.get('store_round_trips', 0)} store round trips"),
        ("prefetch", "-" if st.get("prefetch_accuracy") is None else
         f"accuracy {st['prefetch_accuracy']:.1%} ({st['prefetch_hits']} of {st['prefetched']} used; "
         f"{st.get('graph_prefetched', 0)} along the graph), cache {_mib(st.get('prefetch_cache_bytes'))}"),
        ("readahead", f"{st.get('readahead', 0)} prefetched pages put into the program (no fault for them; "
                      f"whether each was used is not known)"),
        ("budget", f"worst resident {_mib(st.get('resident_scan_max_bytes', 0))} once held; "
                   f"{st.get('faults_waited_for_room', 0)} faults waited for room, "
                   f"{st.get('faults_over_budget', 0)} let in over it"),
        ("pages evicted", f"{st['pages_evicted']} (sent {st['pages_sent']}, clean {st['pages_dropped_clean']}, "
                          f"zero {st['pages_zero']}); by reason: " +
         ", ".join(f"{k} {v}" for k, v in st.get("evicted_by_reason", {}).items())),
        ("bytes moved", f"{_mib(st['bytes_sent'])} out, {_mib(st['bytes_fetched'])} in"),
        ("graph", _graph_line(st.get("graph"))),
        ("access", _access_line(st.get("access"))),
        ("forks", f"{st.get('forks', 0)} of the program followed ({st.get('fork_pages_restored', 0)} pages put back "
                  f"into the children, {1e3 * (st.get('fork_seconds') or 0):.0f} ms); "
                  f"{st.get('forks_own', 0)} snapshots of the graph's own"),
    ]
    rl = st.get("relocation")
    if rl:
        rows.append(("relocation", f"{rl['passes']} passes ({rl['passes_failed']} failed), {rl['objects_moved']} "
                     f"objects moved ({_mib(rl['bytes_moved'])}; {rl['objects_promoted']} gathered hot, "
                     f"{rl['objects_demoted']} moved off hot pages), {rl['objects_pinned']} pinned "
                     f"(" + (", ".join(f"{k} {v}" for k, v in rl['pinned_by_reason'].items()) or "-") +
                     f"), {rl['hot_pages']} hot pages; pause last {rl['pause_ms_last']:.0f} ms, "
                     f"max {rl['pause_ms_max']:.0f} ms"))
    if st.get("blocked"):
        rows.append(("BLOCKED", st["blocked"]))
    from rich.text import Text
    for k, v in rows:
        t.add_row(k, Text(str(v)))
    Console(width=int(os.environ.get("COLUMNS", "100"))).print(t)
    for w in st.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _access_line(a) -> str:
    if not isinstance(a, dict):
        return "-"
    if a.get("source") == "damon":
        return (f"DAMON (reads too): {a.get('regions', 0)} regions, {a.get('updates', 0)} updates, "
                f"sampling {a.get('sample_us', 0) // 1000} ms / aggregating {a.get('aggr_us', 0) // 1000} ms"
                + (f"; {a['error']}" if a.get("error") else ""))
    if a.get("source") == "faults":
        return f"faults and writes only ({a.get('why', '')})"
    return str(a.get("source", "-"))


def _graph_line(g) -> str:
    if not isinstance(g, dict):
        return str(g or "-")
    if g.get("state") != "ready":
        return g.get("state", "-") + (f" ({g['error']})" if g.get("error") else "")
    return (f"{g['objects']} objects, {g['leaked_pages']} leaked pages, {g['page_edges']} page edges; "
            f"refreshed {g['refreshes']}×, last capture {g['capture_ms']:.0f} ms + graph {g['graph_ms']:.0f} ms"
            + (f"; {g['note']}" if g.get("note") else ""))


@command.command("detach", help="Bring every page of PID home, stop paging it, leave it as if never paged.")
@click.argument("pid", type=int)
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds to wait.")
def detach_cmd(pid: int, timeout: float) -> int:
    from ..farmem.pager import Pager, read_state
    from ..farmem.stores import open_store
    st = _state_or_fail(pid)
    if st.get("state") == "detached":
        print(f"process {pid} is already detached", file=sys.stderr)
        return 0
    pager_pid = st.get("pager_pid", -1)
    if _alive(pager_pid):
        os.kill(pager_pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = read_state(pid)
            if cur is None or cur.get("state") == "detached" or not _alive(pager_pid):
                break
            time.sleep(0.1)
        else:
            raise MappedTraceError(f"the pager {pager_pid} did not detach from {pid} within {timeout:.0f} s")
        print(f"detached from {pid}", file=sys.stderr)
        return 0
    # the pager died: take over its descriptor and bring the pages home ourselves
    store = open_store(st["store"])
    p = Pager(pid, store, local=max(st["local_bytes"], 4096), sock=st["sock"], ns=st["namespace"], resume=True)
    p.connect(timeout=5, before_helper=lambda: _recover_pass(p))
    p.detach()
    print(f"detached from {pid} (its pager had died; pages brought home from {st['store']})", file=sys.stderr)
    return 0
