#!/usr/bin/env python3
"""Far memory: the issue's workloads, and the first checksum workload, at 100/75/50/25 % local memory.

    PYTHONPATH=. .venv/bin/python benchmarks/farmem/run.py --workload kv|chase|leak [--ci] [--mib N]
        [--stores redis,redis-nograph,kswap] [--shares 1,0.75,0.5,0.25] [--warmup 8] [--seconds 12]
    PYTHONPATH=. .venv/bin/python benchmarks/farmem/run.py --workload redis [--ci] [--keys N] [--no-save] ...

``redis`` = workload (d): Redis 7.0.15 built from the Debian sources (redis_work.py says why
and how), 60 000 keys of 1 KiB (``--ci`` 16 000), a window of Zipf GET/SET batches with every
GET checked, every key read back, and after each paged row a BGSAVE (Redis forks) whose RDB
is loaded into Debian's redis-server and checked key by key.  Its "heap" is the size of
the mappings the pager pages, measured in the unpaged run after the load.

The issue's workloads (issue #15), built with ``mappedtrace cc`` (maps in, so the
graph can guide): ``kv`` = samples/farmem_kv.c (Zipf lookups over a chained hash
table, default 256 MiB, ``--ci`` 32), ``chase`` = samples/farmem_chase.c (a
cycle of records linked in a random order, default 64 MiB, ``--ci`` 16),
``leak`` = samples/farmem_leakserver.c (a server leaking one response in 256,
32 MiB of sessions, ``--ci`` 8).  Each run: start, let it warm up ``--warmup``
s (with the graph: until a heap graph taken after the program was built is in
use), then a window of ``--seconds`` between two SIGUSR2 progress marks, with
the pager's (or the cgroup's) counters read at both ends.  Figures per window:
ops/s (slowdown = unpaged ÷ paged), RssAnon at the end, demand faults (faults
that waited for the store: not zero pages, not prefetch-cache hits; the
kernel's: the cgroup's major faults), the same per 1000 operations (a slower run
does fewer operations), all userfaultfd faults, bytes moved (fetched + sent),
prefetch accuracy (hits ÷ prefetched).  Store kinds: ``redis``, ``redis-nograph``,
``redis-relocate`` (the pager with ``--relocate``: hot/cold segregation of objects, issue 17;
``--relocate-every``, ``--relocate-passes``), ``redis-pagebfs`` (the first version of graph prefetch, page to page breadth
first), ``redis-pathsN`` (object paths with a budget of N pages a fault), ``redis-graN``
(``--graph-readahead N``), ``file``, ``file-nograph``, ``kswap``.  Results: results_WORKLOAD.json.

The checksum workload (default, ``--workload checksum``):

    PYTHONPATH=. .venv/bin/python benchmarks/farmem/run.py [--mib 32] [--threads 2] [--seconds 12]
                                                            [--stores redis,file] [--json out.json]
                                                            [--shares 1,0.75,0.5,0.25] [--repeat 1]

Builds samples/farmem_checksum.c with cc, runs it once unpaged and then under
``mappedtrace farmem run --local X`` for X = 100, 75, 50, 25 % of its heap (as
the program reports it) with each store: Redis started here on 127.0.0.1 at a
free port (persistence off, stopped at the end) and ``file:`` on tmpfs
(/dev/shm); ``--no-graph`` rows with ``redis-nograph``, ``--no-readahead`` rows with
``redis-noreadahead``.

``kswap`` in ``--stores`` is the baseline: Linux's own swap.  The benchmark
sets up a zram swap device (``/sys/block/zram0``, lz4, 1 GiB, ``swapon``) and
a cgroup-v1 memory cgroup per run whose ``memory.limit_in_bytes`` is X plus
the program's memory outside its heap (measured in the same cgroup unlimited:
max usage − heap) plus 4 MiB for the swap cache (an advantage the kernel gets), runs the program in it, and tears both down at the end (the
machine is left with no swap, as it came).  Needs root and a free zram0.  Each run lasts ``--seconds``; the pager's status is read just
before the run is ended with SIGUSR1.  Throughput is the program's checking
passes per second, so slowdown = unpaged passes/s ÷ paged passes/s.  With
``--repeat N`` every paged run is paired with an unpaged run just before it,
N times, and the row gives the median of the N ratios (and the worst): on a
loaded machine the unpaged rate itself moves 2-4× within minutes.  Every run
must report zero mismatches and the right checksum, or the benchmark fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MT = [sys.executable, "-m", "mappedtrace"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return p, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("redis-server did not start")


CG_ROOT = "/sys/fs/cgroup/memory"
KSWAP_SLACK = 4 << 20
ZRAM = "/sys/block/zram0"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def zram_swap_on(size: int = 1 << 30) -> None:
    """A zram swap device, or SystemExit saying why not."""
    if not os.path.isdir(ZRAM) or not os.path.isdir(CG_ROOT):
        raise SystemExit(f"kswap baseline: needs {ZRAM} and the cgroup-v1 memory controller at {CG_ROOT}")
    if open(f"{ZRAM}/disksize").read().strip() != "0":
        raise SystemExit("kswap baseline: /dev/zram0 is in use already; not touching it")
    try:
        _write(f"{ZRAM}/comp_algorithm", "lz4")
    except OSError:
        pass
    _write(f"{ZRAM}/disksize", str(size))
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)


def zram_swap_off() -> None:
    subprocess.run(["swapoff", "/dev/zram0"], capture_output=True)
    try:
        _write(f"{ZRAM}/reset", "1")
    except OSError as e:
        print(f"warning: zram0 not reset: {e}", file=sys.stderr)


def remove_cgroup(cg: str) -> None:
    """Remove the memory cgroup of a kernel-swap row (its last process may still be leaving: a
    few tries, then give up quietly; the machine's own cgroups are never touched)."""
    for _ in range(50):
        try:
            os.rmdir(cg)
            return
        except OSError:
            time.sleep(0.1)


def one_run(exe: str, args: list[str], seconds: float, budget: int | None, store: str | None,
            cgroup_limit: int | None = None, extra: list[str] = ()) -> dict:
    cmd = [exe, *args]
    cg = None
    if cgroup_limit is not None:
        cg = os.path.join(CG_ROOT, f"mtfm-bench-{os.getpid()}")
        os.makedirs(cg, exist_ok=True)
        if cgroup_limit > 0:
            _write(f"{cg}/memory.limit_in_bytes", str(cgroup_limit))
            _write(f"{cg}/memory.swappiness", "100")      # anonymous memory is all there is to reclaim
        cmd = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$0" "$@"', *cmd]
    elif budget is not None:
        cmd = [*MT, "farmem", "run", "--local", str(budget), "--store", store, *extra, "--", *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    ready = p.stdout.readline()
    pid = int(re.search(r"pid=(\d+)", ready).group(1))
    t0 = time.monotonic()
    st = None
    while time.monotonic() - t0 < seconds:
        time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
        if budget is not None:
            r = subprocess.run([*MT, "farmem", "status", str(pid), "--json"], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if r.returncode == 0:
                st = json.loads(r.stdout)
    if cg:
        stat = dict(line.split() for line in open(f"{cg}/memory.stat"))
        st = {"max_usage_bytes": int(open(f"{cg}/memory.max_usage_in_bytes").read()),
              "swap_bytes": int(stat.get("swap", 0)), "pgmajfault": int(stat.get("pgmajfault", 0)),
              "pswpin_note": "pgmajfault: the cgroup's major faults (swap-ins)"}
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        pass
    out, err = p.communicate(timeout=300)
    wall = time.monotonic() - t0
    if cg:
        remove_cgroup(cg)
    m = re.search(r"passes=(\d+) mismatches=(\d+) checksum=(\w+) expected=(\w+)", out)
    if cg and p.returncode == -signal.SIGKILL:
        # the kernel's memory-cgroup OOM killer: reclaim into swap did not keep up (a result, not an error)
        return {"passes": 0, "seconds": wall, "passes_per_s": 0.0, "status": {**(st or {}), "oom_killed": True}}
    if not m or m.group(2) != "0" or m.group(3) != m.group(4) or p.returncode:
        raise SystemExit(f"wrong result under {cmd}: {out} {err}")
    return {"passes": int(m.group(1)), "seconds": wall, "passes_per_s": int(m.group(1)) / wall, "status": st}



# ---- the workloads (a) Zipf key-value, (b) pointer chase, (c) leaking server ----------------
#: name -> (sample, default MiB, CI MiB, extra program arguments after MIB SECONDS)
WORKLOADS = {
    "kv": ("farmem_kv.c", 256, 32, []),
    "chase": ("farmem_chase.c", 64, 16, []),
    "leak": ("farmem_leakserver.c", 32, 8, ["256"]),
}
WINDOW_STATS = ("faults", "zero_faults", "prefetched", "prefetch_hits", "store_round_trips", "bytes_fetched",
                "bytes_sent", "pages_evicted", "graph_prefetched", "faults_waited_for_room", "faults_over_budget",
                "readahead", "graph_readahead", "leaked_not_prefetched")


def pager_window(out: dict, c0: dict, c1: dict, keep: tuple[str, ...]) -> None:
    """The pager's figures of a timed window into ``out``: the counters' differences between
    the status ``c0`` at its start and ``c1`` at its end, what they imply, and ``keep`` as ``c1``
    has them."""
    d = {k: (c1.get(k) or 0) - (c0.get(k) or 0) for k in WINDOW_STATS}
    out.update(d)
    # a demand fault waits for the store: not a zero page, not a prefetched page from the cache
    # (the kernel's analogue: a major fault; a swap-cache hit is a minor fault)
    out["demand_faults"] = d["faults"] - d["zero_faults"] - d["prefetch_hits"]
    # per thousand operations: a slower run does fewer operations, and fewer faults with them
    out["demand_faults_per_kop"] = out["demand_faults"] * 1000 / max(out["ops"], 1)
    out["prefetch_accuracy"] = round(d["prefetch_hits"] / d["prefetched"], 4) if d["prefetched"] else None
    out["bytes_moved"] = d["bytes_fetched"] + d["bytes_sent"]
    for k in keep:
        out[k] = c1.get(k)


def build_workload(name: str, tmp: str) -> str:
    """The sample built with ``mappedtrace cc`` (maps in: the graph can guide)."""
    exe = os.path.join(tmp, name)
    r = subprocess.run([*MT, "cc", "-O2", "-g", "-o", exe, str(ROOT / "samples" / WORKLOADS[name][0]), "-lm"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode:
        raise SystemExit(f"building {name}: {r.stderr.strip()}")
    return exe


def _status(pid: int) -> dict | None:
    r = subprocess.run([*MT, "farmem", "status", str(pid), "--json"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(r.stdout) if r.returncode == 0 else None


def _rss_anon(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Ended(Exception):
    """The program ended before its progress line (the kernel's OOM killer, in a cgroup)."""


def _mark(p: subprocess.Popen, pid: int) -> tuple[int, float]:
    """``(ops, t)`` the program prints on SIGUSR2."""
    try:
        os.kill(pid, signal.SIGUSR2)
    except ProcessLookupError:
        raise _Ended() from None
    while True:
        line = p.stdout.readline()
        if not line:
            raise _Ended()
        m = re.match(r"mark ops=(\d+) t=([\d.]+)", line)
        if m:
            return int(m.group(1)), float(m.group(2))


def window_run(exe: str, args: list[str], *, warmup: float, seconds: float, budget: int | None = None,
               store: str | None = None, extra: list[str] = (), cgroup_limit: int | None = None,
               want_graph: bool = False) -> dict:
    """One run of a workload: start it (under the pager, in a memory cgroup, or alone), let it
    warm up ``warmup`` s (and, with the graph, until a heap graph taken after the program was
    built is in use), then time a window of ``seconds`` between two SIGUSR2 progress marks,
    with the pager's counters (or the cgroup's) read at both ends.  The program's own check
    must report zero mismatches."""
    cmd = [exe, *args]
    cg = None
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cgroup_limit is not None:
        cg = os.path.join(CG_ROOT, f"mtfm-bench-{os.getpid()}")
        os.makedirs(cg, exist_ok=True)
        if cgroup_limit > 0:
            _write(f"{cg}/memory.limit_in_bytes", str(cgroup_limit))
            _write(f"{cg}/memory.swappiness", "100")
        cmd = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$0" "$@"', *cmd]
    elif budget is not None:
        cmd = [*MT, "farmem", "run", "--local", str(budget), "--store", store, *extra, "--", *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = {}
    try:
        ready = p.stdout.readline()
        m = re.search(r"heap=(\d+) pid=(\d+)", ready)
        if not m:
            if cg and p.wait(timeout=60) == -signal.SIGKILL:
                return {"ops_per_s": 0.0, "oom_killed": True, "ops": 0, "while": "building its heap"}
            raise SystemExit(f"no ready line from {cmd}: {ready!r} {p.stderr.read() if p.poll() is not None else ''}")
        heap, pid = int(m.group(1)), int(m.group(2))
        t_ready = time.time()
        deadline = time.monotonic() + warmup + 120
        t_warm = time.monotonic() + warmup
        while time.monotonic() < t_warm or want_graph:
            time.sleep(0.5)
            if want_graph:
                st = _status(pid) or {}
                g = st.get("graph") or {}
                if g.get("updated", 0) > t_ready and time.monotonic() >= t_warm:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"no heap graph after {warmup + 120:.0f} s: {g}")

        def counters() -> dict:
            if cg:
                stat = dict(line.split() for line in open(f"{cg}/memory.stat"))
                return {"pgmajfault": int(stat.get("pgmajfault", 0)), "swap_bytes": int(stat.get("swap", 0))}
            return (_status(pid) or {}) if budget is not None else {}
        c0 = counters()
        try:
            ops0, t0 = _mark(p, pid)
            time.sleep(seconds)
            ops1, t1 = _mark(p, pid)
        except _Ended:
            p.wait(timeout=60)
            if cg and p.returncode == -signal.SIGKILL:
                # the kernel's memory-cgroup OOM killer: reclaim into swap did not keep up (a result)
                return {"ops_per_s": 0.0, "oom_killed": True, "ops": 0}
            raise SystemExit(f"the program ended before its progress line ({p.returncode}): {p.stderr.read()}")
        time.sleep(0.6 if budget is not None else 0)     # the state file is written twice a second
        c1 = counters()
        rss = _rss_anon(pid)
        os.kill(pid, signal.SIGUSR1)
        # the program's last check reads its whole heap back through the pager: at 256 MiB and
        # 50 % on a loaded machine that took more than 300 s once (the row was lost)
        stdout, err = p.communicate(timeout=1800)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if cg:
            remove_cgroup(cg)
    if cg and p.returncode == -signal.SIGKILL:
        return {"ops_per_s": 0.0, "oom_killed": True}
    fm = re.search(r"mismatches=(\d+)", stdout)
    if not fm or fm.group(1) != "0" or p.returncode:
        raise SystemExit(f"wrong result under {cmd}: {stdout} {err}")
    out = {"heap_bytes": heap, "ops": ops1 - ops0, "ops_per_s": (ops1 - ops0) / max(t1 - t0, 1e-9), "window_s": t1 - t0,
           "rss_anon_bytes": rss, "final": stdout.strip().splitlines()[-1]}
    if cg:
        out["major_faults"] = c1.get("pgmajfault", 0) - c0.get("pgmajfault", 0)
        out["demand_faults_per_kop"] = out["major_faults"] * 1000 / max(out["ops"], 1)
        out["swap_bytes"] = c1.get("swap_bytes")
    elif budget is not None:
        pager_window(out, c0, c1, ("resident_bytes", "remote_bytes", "fault_latency_median_us", "evicted_by_reason"))
        g = c1.get("graph") or {}
        out["graph"] = {k: g.get(k) for k in ("state", "refreshes", "leaked_pages", "page_edges", "prefetch",
                                                "capture_ms", "graph_ms", "unreached_objects", "unreached_bytes",
                                                "unreached_bytes_on_leaked_pages", "error")}
        for k in ("leaked_pages_resident", "leaked_faulted_back", "relocation"):
            out[k] = c1.get(k)
        if c1.get("relocation") and c0.get("relocation"):
            # relocation passes inside the timed window (their pauses are in its ops/s)
            out["relocation_passes_in_window"] = c1["relocation"]["passes"] - c0["relocation"]["passes"]
    return out


def workload_main(a) -> None:
    name = a.workload
    tmp = tempfile.mkdtemp(prefix="farmem-bench-")
    shm = tempfile.mkdtemp(prefix="farmem-pages-", dir="/dev/shm")
    exe = build_workload(name, tmp)
    mib = a.mib or (WORKLOADS[name][2] if a.ci else WORKLOADS[name][1])
    long = str(a.warmup + a.seconds + 600)          # the program's own deadline: far beyond the window
    args = [str(mib), long, *WORKLOADS[name][3]]
    shares = [float(x) for x in a.shares.split(",")]
    redis = None
    swap_on = False
    rows = []
    try:
        base = window_run(exe, args, warmup=a.warmup, seconds=a.seconds)
        heap = base["heap_bytes"]
        print(f"{name}: unpaged {base['ops_per_s']:.0f} ops/s, heap {heap / 2**20:.1f} MiB, "
              f"RssAnon {base['rss_anon_bytes'] / 2**20:.1f} MiB", flush=True)
        for kind in a.stores.split(","):
            extra: list[str] = []
            overhead = None
            store = None
            env_pf = None
            os.environ.pop("MTFARMEM_GRAPH_PREFETCH", None)
            os.environ.pop("MTFARMEM_GRAPH_PREFETCH_PAGES", None)
            # STORE-relocate: the same with --relocate (hot/cold segregation, issue 17)
            reloc = ["--relocate", "--relocate-every", str(a.relocate_every),
                     "--relocate-passes", str(a.relocate_passes)] if kind.endswith("-relocate") else []
            kind_full, kind = kind, kind.removesuffix("-relocate")
            if kind == "redis-pagebfs":         # the first version of graph prefetch (page BFS, depth 2)
                os.environ["MTFARMEM_GRAPH_PREFETCH"] = "pages"
                kind_store = "redis"
            elif kind.startswith("redis-paths"):  # redis-pathsN: a budget of N pages a fault
                os.environ["MTFARMEM_GRAPH_PREFETCH_PAGES"] = kind[len("redis-paths"):]
                kind_store = "redis"
            elif kind.startswith("redis-gra"):    # redis-graN: --graph-readahead N
                kind_store = "redis"
            else:
                kind_store = kind
            if kind_store in ("redis", "redis-nograph"):
                redis, store = start_redis(tmp)
                extra = ["--no-graph"] if kind_store == "redis-nograph" else []
                if kind.startswith("redis-gra"):
                    extra = ["--graph-readahead", kind[len("redis-gra"):]]
            elif kind_store in ("file", "file-nograph"):
                store = f"file:{shm}"
                extra = ["--no-graph"] if kind == "file-nograph" else []
            elif kind_store == "kswap":
                zram_swap_on(max(1 << 30, 2 * heap))
                swap_on = True
                # the program's memory outside its heap, measured in the same cgroup without a limit
                overhead = max(0, (base["rss_anon_bytes"] or heap) - heap)
            else:
                raise SystemExit(f"unknown store kind {kind}")
            extra = extra + reloc
            for share in shares:
                local = int(heap * share)
                if overhead is not None:
                    r = window_run(exe, args, warmup=a.warmup, seconds=a.seconds,
                                   cgroup_limit=local + overhead + KSWAP_SLACK)
                else:
                    r = window_run(exe, args, warmup=a.warmup, seconds=a.seconds, budget=local, store=store,
                                   extra=extra, want_graph="--no-graph" not in extra)
                row = {"workload": name, "mib": mib, "store": kind_full, "local_share": share, "local_bytes": local,
                       "slowdown": base["ops_per_s"] / max(r["ops_per_s"], 1e-9), **r}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if redis:
                redis.terminate()
                redis.wait()
                redis = None
            if swap_on:
                zram_swap_off()
                swap_on = False
        # the unpaged reference again at the end: the machine's load moves it; slowdowns are
        # against the mean of the two (the first alone in "slowdown_vs_first")
        base2 = window_run(exe, args, warmup=a.warmup, seconds=a.seconds)
        ref = (base["ops_per_s"] + base2["ops_per_s"]) / 2
        print(f"{name}: unpaged again {base2['ops_per_s']:.0f} ops/s", flush=True)
        for row in rows:
            row["slowdown_vs_first"] = row["slowdown"]
            row["slowdown"] = ref / max(row["ops_per_s"], 1e-9)
        base["ops_per_s_end"] = base2["ops_per_s"]
    finally:
        if redis:
            redis.kill()
        if swap_on:
            zram_swap_off()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    path = a.json or str(Path(__file__).with_name(f"results_{name}{'_ci' if a.ci else ''}.json"))
    with open(path, "w") as f:
        json.dump({"workload": name, "mib": mib, "heap_bytes": heap, "unpaged_ops_per_s": base["ops_per_s"],
                   "unpaged_ops_per_s_end": base.get("ops_per_s_end"),
                   "load": os.getloadavg(), "args": vars(a), "rows": rows}, f, indent=1)
    print(table(rows), flush=True)


REDIS_KEYS, REDIS_KEYS_CI, REDIS_VSIZE = 60000, 16000, 1024


def redis_row(exe, data_args: tuple[int, int], workdir: str, *, warmup: float, seconds: float,
              budget: int | None = None, store: str | None = None, extra: list[str] = (),
              cgroup_limit: int | None = None, save: bool = False) -> dict:
    """One run of workload (d) (``redis_work``): load, warm up, a timed window with every GET
    checked, every key read back, and with ``save`` a BGSAVE whose RDB is loaded into Debian's
    redis-server and checked key by key."""
    import redis_work as rw
    cg = None
    if cgroup_limit is not None:
        cg = os.path.join(CG_ROOT, f"mtfm-bench-{os.getpid()}")
        os.makedirs(cg, exist_ok=True)
        if cgroup_limit > 0:
            _write(f"{cg}/memory.limit_in_bytes", str(cgroup_limit))
            _write(f"{cg}/memory.swappiness", "100")
    srv = None
    out: dict = {}
    try:
        srv = rw.Server(exe, workdir, budget=budget, store=store, extra=list(extra), cgroup=cg)
        data = rw.Data(*data_args)
        t0 = time.monotonic()
        data.load(srv.r)
        out["load_s"] = time.monotonic() - t0
        data.window(srv.r, warmup)
        out["heap_bytes"] = rw.heap_bytes(srv.pid)
        c0 = (srv.status() or {}) if budget is not None else {}
        if cg:
            stat = dict(line.split() for line in open(f"{cg}/memory.stat"))
            c0 = {"pgmajfault": int(stat.get("pgmajfault", 0))}
        w = data.window(srv.r, seconds)
        out.update(w)
        time.sleep(0.6 if budget is not None else 0)
        c1 = (srv.status() or {}) if budget is not None else {}
        out["rss_anon_bytes"] = rw.rss_anon(srv.pid)
        if cg:
            stat = dict(line.split() for line in open(f"{cg}/memory.stat"))
            out["major_faults"] = int(stat.get("pgmajfault", 0)) - c0["pgmajfault"]
            out["demand_faults_per_kop"] = out["major_faults"] * 1000 / max(out["ops"], 1)
            out["swap_bytes"] = int(stat.get("swap", 0))
        elif budget is not None:
            pager_window(out, c0, c1, ("resident_bytes", "remote_bytes", "fault_latency_median_us",
                                       "fault_latency_p99_us", "evicted_by_reason", "resident_scan_max_bytes",
                                       "faults_over_budget"))
        t0 = time.monotonic()
        out["keys_checked"] = data.check_all(srv.r)
        out["check_s"] = time.monotonic() - t0
        if save:
            out["bgsave_s"] = rw.bgsave(srv)
            out["rdb_keys_checked"] = rw.check_rdb(os.path.join(workdir, "dump.rdb"), data, workdir)
            if budget is not None:
                st = srv.status() or {}
                out.update({k: st.get(k) for k in ("forks", "fork_pages_restored", "fork_seconds")})
    except rw.WrongValue as e:
        raise SystemExit(f"workload (d) gave a wrong answer ({budget=}, {store=}, {extra=}): {e}")
    except Exception as e:          # redis.ConnectionError: the server is gone
        if cg and srv is not None and srv.proc.wait(timeout=60) == -signal.SIGKILL:
            # the kernel's memory-cgroup OOM killer: reclaim into swap did not keep up (a result)
            return {**out, "ops_per_s": out.get("ops_per_s", 0.0), "oom_killed": True,
                    "while": "the window" if "ops" not in out else "reading every key back"}
        raise SystemExit(f"workload (d): the server failed ({budget=}, {store=}, {extra=}): "
                         f"{type(e).__name__}: {e}; see {workdir}/server.log")
    finally:
        if srv is not None:
            rc = srv.stop()
            if cg is None and rc not in (0, None):
                out["exit_code"] = rc
        if cg:
            remove_cgroup(cg)
    return out


def redis_main(a) -> None:
    """Workload (d): Redis from the Debian sources (benchmarks/farmem/redis_work.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import redis_work as rw
    exe = rw.redis_exe()
    keys = a.keys or (REDIS_KEYS_CI if a.ci else REDIS_KEYS)
    dargs = (keys, REDIS_VSIZE)
    tmp = tempfile.mkdtemp(prefix="farmem-bench-redis-")
    shares = [float(x) for x in a.shares.split(",")]
    rows: list[dict] = []
    store_srv = None
    swap_on = False
    n = [0]

    def wd() -> str:
        n[0] += 1
        return os.path.join(tmp, f"run{n[0]}")
    try:
        base = redis_row(exe, dargs, wd(), warmup=a.warmup, seconds=a.seconds)
        heap = base["heap_bytes"]
        print(f"redis: unpaged {base['ops_per_s']:.0f} ops/s, heap {heap / 2**20:.1f} MiB, RssAnon "
              f"{base['rss_anon_bytes'] / 2**20:.1f} MiB, load {base['load_s']:.1f} s", flush=True)
        for kind in a.stores.split(","):
            extra: list[str] = []
            store = None
            overhead = None
            if kind in ("redis", "redis-nograph"):
                store_srv, store = start_redis(tmp)
                extra = ["--no-graph"] if kind == "redis-nograph" else []
            elif kind == "kswap":
                zram_swap_on(max(1 << 30, 2 * heap))
                swap_on = True
                overhead = max(0, base["rss_anon_bytes"] - heap)
            else:
                raise SystemExit(f"workload redis: store kind {kind} is not measured here")
            for share in shares:
                local = int(heap * share)
                if overhead is not None:
                    r = redis_row(exe, dargs, wd(), warmup=a.warmup, seconds=a.seconds,
                                  cgroup_limit=local + overhead + KSWAP_SLACK)
                else:
                    r = redis_row(exe, dargs, wd(), warmup=a.warmup, seconds=a.seconds, budget=local, store=store,
                                  extra=extra, save=not a.no_save)
                row = {"workload": "redis", "keys": keys, "store": kind, "local_share": share, "local_bytes": local,
                       "slowdown": base["ops_per_s"] / max(r.get("ops_per_s", 0), 1e-9), **r}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if store_srv:
                store_srv.terminate()
                store_srv.wait()
                store_srv = None
            if swap_on:
                zram_swap_off()
                swap_on = False
        base2 = redis_row(exe, dargs, wd(), warmup=a.warmup, seconds=a.seconds)
        ref = (base["ops_per_s"] + base2["ops_per_s"]) / 2
        print(f"redis: unpaged again {base2['ops_per_s']:.0f} ops/s", flush=True)
        for row in rows:
            row["slowdown_vs_first"] = row["slowdown"]
            row["slowdown"] = ref / max(row.get("ops_per_s", 0), 1e-9)
    finally:
        if store_srv:
            store_srv.kill()
        if swap_on:
            zram_swap_off()
        shutil.rmtree(tmp, ignore_errors=True)
    path = a.json or str(Path(__file__).with_name(f"results_redis{'_ci' if a.ci else ''}.json"))
    with open(path, "w") as f:
        json.dump({"workload": "redis", "keys": keys, "value_bytes": REDIS_VSIZE, "heap_bytes": heap,
                   "unpaged": base, "unpaged_end": base2, "load": os.getloadavg(), "args": vars(a),
                   "rows": rows}, f, indent=1)
    print(table(rows), flush=True)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (what RESULTS.md shows)."""
    def f(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)
    out = ["| store | local | slowdown | ops/s | RssAnon MiB | demand faults / 1000 ops | demand faults | all faults "
           "| MiB moved | prefetch accuracy | evicted leaked / cold |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.get("oom_killed"):
            out.append(f"| {r['store']} | {r['local_share']:.0%} | killed by the kernel's OOM killer "
                       "| - | - | - | - | - | - | - | - |")
            continue
        ev = r.get("evicted_by_reason") or {}
        dem = r.get("demand_faults", r.get("major_faults"))
        out.append(f"| {r['store']} | {r['local_share']:.0%} | {r['slowdown']:.2f}× | {f(r['ops_per_s'])} "
                   f"| {f((r.get('rss_anon_bytes') or 0) / 2**20, '{:.1f}')} | {f(r.get('demand_faults_per_kop'), '{:.2f}')} "
                   f"| {f(dem)} | {f(r.get('faults'))} "
                   f"| {f(r['bytes_moved'] / 2**20, '{:.1f}') if r.get('bytes_moved') is not None else '-'} "
                   f"| {f(r.get('prefetch_accuracy'), '{:.3f}')} "
                   f"| {ev.get('leaked', '-')} / {ev.get('cold', '-')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="checksum", choices=["checksum", *WORKLOADS, "redis"])
    ap.add_argument("--keys", type=int, default=None, help="workload redis: keys of 1 KiB (default 60000, --ci 16000)")
    ap.add_argument("--no-save", action="store_true", help="workload redis: no BGSAVE + RDB check after a paged row")
    ap.add_argument("--ci", action="store_true", help="the workload's CI size (kv 32, chase 16, leak 8 MiB)")
    ap.add_argument("--shares", default="1,0.75,0.5,0.25", help="local memory as shares of the heap")
    ap.add_argument("--warmup", type=float, default=8, help="seconds before the timed window (workloads)")
    ap.add_argument("--mib", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--stores", default="redis,file")
    ap.add_argument("--json", default=None)
    ap.add_argument("--relocate-every", type=float, default=3.0, help="STORE-relocate rows: seconds between passes")
    ap.add_argument("--relocate-passes", type=int, default=4, help="STORE-relocate rows: passes at most (0: no bound)")
    ap.add_argument("--repeat", type=int, default=1, help="paired runs per row (median slowdown; checksum only)")
    a = ap.parse_args()
    if a.workload == "redis":
        if a.stores == "redis,file":
            a.stores = "redis,redis-nograph,kswap"
        return redis_main(a)
    if a.workload != "checksum":
        if a.stores == "redis,file":
            a.stores = "redis,redis-nograph,kswap"
        return workload_main(a)
    a.mib = a.mib or 32
    a.json = a.json or str(Path(__file__).with_name("results.json"))
    tmp = tempfile.mkdtemp(prefix="farmem-bench-")
    shm = tempfile.mkdtemp(prefix="farmem-pages-", dir="/dev/shm")
    exe = os.path.join(tmp, "farmem_checksum")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, str(ROOT / "samples" / "farmem_checksum.c")], check=True)
    args = [str(a.mib), str(a.threads), str(a.seconds * 10)]
    heap = int(re.search(r"heap=(\d+)", subprocess.run([exe, str(a.mib), str(a.threads), "0"], capture_output=True,
                                                          text=True).stdout).group(1))
    redis = None
    swap_on = False
    rows = []
    try:
        base = one_run(exe, args, a.seconds, None, None)
        print(f"unpaged: {base['passes_per_s']:.1f} passes/s, heap {heap / 2**20:.1f} MiB", flush=True)
        for store_kind in a.stores.split(","):
            extra: list[str] = []
            overhead = None
            if store_kind in ("redis", "redis-nograph", "redis-noreadahead"):
                redis, store = start_redis(tmp)
                extra = {"redis-nograph": ["--no-graph"], "redis-noreadahead": ["--no-readahead"]}.get(store_kind, [])
            elif store_kind == "kswap":
                zram_swap_on()
                swap_on = True
                base_cg = one_run(exe, args, min(a.seconds, 4), None, None, cgroup_limit=0)
                overhead = max(0, base_cg["status"]["max_usage_bytes"] - heap)
                print(f"kswap: unlimited max usage {base_cg['status']['max_usage_bytes'] / 2**20:.1f} MiB, "
                      f"outside the heap {overhead / 2**20:.1f} MiB", flush=True)
            else:
                store = f"file:{shm}"
            for share in (float(x) for x in a.shares.split(",")):
                ratios = []
                for k in range(max(1, a.repeat)):
                    ref = base if a.repeat <= 1 else one_run(exe, args, a.seconds, None, None)
                    if overhead is not None:
                        # + KSWAP_SLACK: the swap cache and page tables are charged to the cgroup too;
                        # without it the kernel OOM-kills the program at 75 % (seen here)
                        r = one_run(exe, args, a.seconds, None, None,
                                    cgroup_limit=int(heap * share) + overhead + KSWAP_SLACK)
                    else:
                        r = one_run(exe, args, a.seconds, int(heap * share), store, extra=extra)
                    ratios.append(ref["passes_per_s"] / max(r["passes_per_s"], 1e-9))
                st = r["status"] or {}
                ratios.sort()
                row = {"store": store_kind, "local_share": share, "local_bytes": int(heap * share),
                       "slowdown": ratios[len(ratios) // 2] if len(ratios) % 2 else
                       (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2,
                       "slowdown_worst": ratios[-1], "slowdowns": ratios,
                       "passes_per_s": r["passes_per_s"],
                       **{k: st.get(k) for k in ("faults", "zero_faults", "faults_per_s", "fault_latency_median_us",
                                                 "fault_latency_p99_us", "pages_evicted", "pages_sent",
                                                 "pages_dropped_clean", "bytes_sent", "bytes_fetched",
                                                 "resident_after_evict_max_bytes", "faults_waited_for_room",
                                                 "faults_over_budget", "store_round_trips", "prefetched",
                                                 "prefetch_hits", "prefetch_accuracy", "evicted_by_reason",
                                                 "fault_loop", "max_usage_bytes", "swap_bytes",
                                                 "pgmajfault", "oom_killed", "resident_scan_max_bytes",
                                                 "faults_pager_own", "evict_batches", "evict_seconds",
                                                 "evict_read_seconds", "evict_put_seconds",
                                                 "evict_drop_seconds", "readahead")}}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if redis:
                redis.terminate()
                redis.wait()
                redis = None
            if swap_on:
                zram_swap_off()
                swap_on = False
    finally:
        if redis:
            redis.kill()
        if swap_on:
            zram_swap_off()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    with open(a.json, "w") as f:
        json.dump({"heap_bytes": heap, "unpaged_passes_per_s": base["passes_per_s"], "args": vars(a),
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
