#!/usr/bin/env python3
"""Far memory, first measurement: the checksum workload at 100/75/50/25 % local memory.

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
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)
    m = re.search(r"passes=(\d+) mismatches=(\d+) checksum=(\w+) expected=(\w+)", out)
    if cg and p.returncode == -signal.SIGKILL:
        # the kernel's memory-cgroup OOM killer: reclaim into swap did not keep up (a result, not an error)
        return {"passes": 0, "seconds": wall, "passes_per_s": 0.0, "status": {**(st or {}), "oom_killed": True}}
    if not m or m.group(2) != "0" or m.group(3) != m.group(4) or p.returncode:
        raise SystemExit(f"wrong result under {cmd}: {out} {err}")
    return {"passes": int(m.group(1)), "seconds": wall, "passes_per_s": int(m.group(1)) / wall, "status": st}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--stores", default="redis,file")
    ap.add_argument("--json", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--shares", default="1,0.75,0.5,0.25", help="local memory, as shares of the heap")
    ap.add_argument("--repeat", type=int, default=1, help="paired runs per row (median slowdown)")
    a = ap.parse_args()
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
