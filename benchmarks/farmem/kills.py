#!/usr/bin/env python3
"""The pager SIGKILLed at random points, N times, and taken over each time (issue 15).

    PYTHONPATH=. .venv/bin/python benchmarks/farmem/kills.py [--kills 50] [--store redis|file]
                                                             [--mib 32] [--share 0.33] [--seed S]

samples/farmem_checksum.c (main and two threads, each checking every record of its list
on every full pass, a quarter of them rewritten each time) runs under ``mappedtrace farmem
run --local SHARE×heap``.  Then, N times: wait a random 0-1 s, SIGKILL the pager (the
first one, then each ``farmem attach`` that took over), start ``farmem attach PID``, and
count the kill as *resumed* once the new pager's status shows it serving the program's
faults again (100 of them).  One kill in five lands at a random 0-0.3 s after the
``attach`` started instead, while the new pager is still connecting (its descriptor taken
or not, the helper greeted or not, its first eviction round begun or not); the next attach
then takes over from it.  At the end ``farmem detach`` brings every page home and the
program reports its mismatches and checksum: every byte it read over the whole run must be
right (mismatches=0, checksum == expected), or the run fails.

Prints one JSON object (also written to ``--json``): kills, resumed, start-up kills,
seconds from each kill to the resumed status (median, worst), the program's passes and
mismatches.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MT = [sys.executable, "-m", "mappedtrace"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _status(pid: int) -> dict | None:
    r = subprocess.run([*MT, "farmem", "status", str(pid), "--json"], capture_output=True, text=True, env=ENV)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _wait(pid: int, pager: int, faults: int, timeout: float) -> dict:
    """The status once pager ``pager`` has served ``faults`` faults of the program."""
    deadline = time.monotonic() + timeout
    while True:
        st = _status(pid) or {}
        if st.get("pager_pid") == pager and st.get("faults", 0) >= faults and st.get("state") == "running":
            return st
        if time.monotonic() > deadline:
            raise RuntimeError(f"pager {pager} did not serve {faults} faults of {pid} in {timeout:.0f} s: "
                               f"{ {k: st.get(k) for k in ('pager_pid', 'state', 'faults', 'blocked', 'warnings')} }")
        time.sleep(0.1)


def kill_run(exe: str, store: str, *, mib: int, share: float, kills: int, rng: random.Random,
             log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Run farmem_checksum paged, SIGKILL its pager ``kills`` times (each taken over by
    ``farmem attach``), detach, and return the counts; raises RuntimeError on a wrong byte
    or a program that did not resume."""
    heap = int(re.search(r"heap=(\d+)", subprocess.run([exe, str(mib), "2", "0"], capture_output=True,
                                                        text=True).stdout).group(1))
    budget = int(heap * share)
    first = subprocess.Popen([*MT, "farmem", "run", "--local", str(budget), "--store", store, "--",
                              exe, str(mib), "2", "3600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    pagers = [first]
    pid = None
    out = {"heap_bytes": heap, "budget": budget, "kills": 0, "resumed": 0, "startup_kills": 0,
           "resume_seconds": []}
    try:
        m = re.search(r"pid=(\d+)", first.stdout.readline())
        if not m:
            raise RuntimeError(f"no ready line: {first.stderr.read()}")
        pid = int(m.group(1))
        _wait(pid, first.pid, 200, 120)
        cur = first
        startup = False                 # this kill lands while the pager is starting up
        for k in range(kills):
            time.sleep(rng.uniform(0, 0.3) if startup else rng.uniform(0, 1.0))
            cur.send_signal(signal.SIGKILL)
            cur.wait()
            t_kill = time.monotonic()
            out["kills"] += 1
            out["startup_kills"] += startup
            cur = subprocess.Popen([*MT, "farmem", "attach", str(pid), "--local", str(budget)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
            pagers.append(cur)
            startup = k + 1 < kills and rng.random() < 0.2
            if startup:
                continue                # the next kill lands while this pager is starting up
            _wait(pid, cur.pid, 100, 120)
            out["resumed"] += 1
            out["resume_seconds"].append(time.monotonic() - t_kill)
            if (k + 1) % 10 == 0:
                log(f"{k + 1} kills, {out['resumed']} resumed")
        if out["kills"]:
            _wait(pid, cur.pid, 100, 120)       # the last pager serves (a kill at start-up included)
        r = subprocess.run([*MT, "farmem", "detach", str(pid)], capture_output=True, text=True, env=ENV,
                           timeout=300)
        if r.returncode:
            raise RuntimeError(f"detach failed: {r.stderr}")
        time.sleep(0.5)
        os.kill(pid, signal.SIGUSR1)
        stdout, _ = first.communicate(timeout=300)        # the program's stdout is the first pager's pipe
        res = re.search(r"passes=(\d+) mismatches=(\d+) checksum=(\w+) expected=(\w+)", stdout)
        if not res:
            raise RuntimeError(f"no result line from the program: {stdout!r}")
        out.update(passes=int(res.group(1)), mismatches=int(res.group(2)),
                   checksum_ok=res.group(3) == res.group(4))
        if out["mismatches"] or not out["checksum_ok"]:
            raise RuntimeError(f"the program read wrong bytes after {out['kills']} kills: {stdout.strip()}")
    finally:
        for p in pagers:
            if p.poll() is None:
                p.kill()
                p.wait()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    rs = out.pop("resume_seconds")
    out["resume_seconds_median"] = statistics.median(rs) if rs else None
    out["resume_seconds_worst"] = max(rs) if rs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--store", default="redis", choices=["redis", "file"])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--share", type=float, default=0.33)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", default=str(Path(__file__).with_name("results_kills.json")))
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    tmp = tempfile.mkdtemp(prefix="farmem-kills-")
    exe = os.path.join(tmp, "farmem_checksum")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, str(ROOT / "samples" / "farmem_checksum.c")], check=True)
    redis = None
    try:
        if a.store == "redis":
            sys.path.insert(0, str(Path(__file__).parent))
            from run import start_redis
            redis, store = start_redis(tmp)
        else:
            store = f"file:{tempfile.mkdtemp(prefix='farmem-kill-pages-', dir='/dev/shm')}"
        t0 = time.monotonic()
        res = kill_run(exe, store, mib=a.mib, share=a.share, kills=a.kills, rng=random.Random(seed))
        res.update(seed=seed, store=a.store, mib=a.mib, share=a.share, seconds=time.monotonic() - t0,
                   load=os.getloadavg(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    finally:
        if redis:
            redis.terminate()
            redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        if a.store == "file":
            shutil.rmtree(store[len("file:"):], ignore_errors=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
