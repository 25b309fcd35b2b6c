#!/usr/bin/env python3
"""Far memory, first measurement: the checksum workload at 100/75/50/25 % local memory.

    PYTHONPATH=. .venv/bin/python benchmarks/farmem/run.py [--mib 32] [--threads 2] [--seconds 12]
                                                            [--stores redis,file] [--json out.json]

Builds samples/farmem_checksum.c with cc, runs it once unpaged and then under
``mappedtrace farmem run --local X`` for X = 100, 75, 50, 25 % of its heap (as
the program reports it) with each store: Redis started here on 127.0.0.1 at a
free port (persistence off, stopped at the end) and ``file:`` on tmpfs
(/dev/shm).  Each run lasts ``--seconds``; the pager's status is read just
before the run is ended with SIGUSR1.  Throughput is the program's checking
passes per second, so slowdown = unpaged passes/s ÷ paged passes/s.  Every run
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


def one_run(exe: str, args: list[str], seconds: float, budget: int | None, store: str | None) -> dict:
    cmd = [exe, *args]
    if budget is not None:
        cmd = [*MT, "farmem", "run", "--local", str(budget), "--store", store, "--", *cmd]
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
    os.kill(pid, signal.SIGUSR1)
    out, err = p.communicate(timeout=300)
    wall = time.monotonic() - t0
    m = re.search(r"passes=(\d+) mismatches=(\d+) checksum=(\w+) expected=(\w+)", out)
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
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="farmem-bench-")
    shm = tempfile.mkdtemp(prefix="farmem-pages-", dir="/dev/shm")
    exe = os.path.join(tmp, "farmem_checksum")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, str(ROOT / "samples" / "farmem_checksum.c")], check=True)
    args = [str(a.mib), str(a.threads), str(a.seconds * 10)]
    heap = int(re.search(r"heap=(\d+)", subprocess.run([exe, str(a.mib), str(a.threads), "0"], capture_output=True,
                                                          text=True).stdout).group(1))
    redis = None
    rows = []
    try:
        base = one_run(exe, args, a.seconds, None, None)
        print(f"unpaged: {base['passes_per_s']:.1f} passes/s, heap {heap / 2**20:.1f} MiB", flush=True)
        for store_kind in a.stores.split(","):
            if store_kind == "redis":
                redis, store = start_redis(tmp)
            else:
                store = f"file:{shm}"
            for share in (1.0, 0.75, 0.5, 0.25):
                r = one_run(exe, args, a.seconds, int(heap * share), store)
                st = r["status"] or {}
                row = {"store": store_kind, "local_share": share, "local_bytes": int(heap * share),
                       "slowdown": base["passes_per_s"] / max(r["passes_per_s"], 1e-9),
                       "passes_per_s": r["passes_per_s"],
                       **{k: st.get(k) for k in ("faults", "zero_faults", "faults_per_s", "fault_latency_median_us",
                                                 "fault_latency_p99_us", "pages_evicted", "pages_sent",
                                                 "pages_dropped_clean", "bytes_sent", "bytes_fetched",
                                                 "resident_after_evict_max_bytes", "faults_waited_for_room",
                                                 "faults_over_budget", "store_round_trips", "prefetched",
                                                 "prefetch_hits", "prefetch_accuracy", "evicted_by_reason",
                                                 "fault_loop")}}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if redis:
                redis.terminate()
                redis.wait()
                redis = None
    finally:
        if redis:
            redis.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    with open(a.json, "w") as f:
        json.dump({"heap_bytes": heap, "unpaged_passes_per_s": base["passes_per_s"], "args": vars(a),
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
