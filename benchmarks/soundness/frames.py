#!/usr/bin/env python3
"""Frames exact per live snapshot (issue #11's goal: >= 95 % of all frames exact
on Lua and Redis live), frame by frame.

    PYTHONPATH=. .venv/bin/python benchmarks/soundness/frames.py lua LUA_EXE [--snapshots N]
    PYTHONPATH=. .venv/bin/python benchmarks/soundness/frames.py redis-idle REDIS_SERVER [--snapshots N]
    PYTHONPATH=. .venv/bin/python benchmarks/soundness/frames.py redis-eval REDIS_SERVER [--snapshots N]

``lua``: ``LUA_EXE tests/real_programs/hold.lua workload.lua`` blocked in
``io.read`` (the executable of tests/test_real_programs.py's Lua build, in
$MAPPEDTRACE_REAL or the test cache).  ``redis-idle``: ``redis-server --save ""``
with its bio threads.  ``redis-eval``: the same server running
``EVAL "for i=1,6000000 do redis.call('SET','k',i) end" 0`` (the builds of
``benchmarks/soundness/run.py redis``; redis-cli beside the server).  Each
snapshot is a fork capture (``session.capture_live``) analysed with and without
the glibc model (``glibc_model=False`` is what the relocator sees); the first
snapshot's frames are printed with their kinds, then one line per snapshot and
the worst and median of all.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mappedtrace import session  # noqa: E402

EVAL = "for i=1,6000000 do redis.call('SET','k',i) end"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def measure(pid: int) -> dict:
    t = session.capture_live(pid)
    try:
        out = {}
        for name, gm in (("model", True), ("scanned", False)):
            a = session.analyse(t, glibc_model=gm)
            p = a.precision
            out[name] = {"exact": p["frames_exact"], "all": p["frames_exact"] + p["frames_conservative"],
                         "by_model": p.get("frames_by_model", {}), "leaks": a.leaks.summary["leaked_objects"]}
            if gm:
                out["frames"] = {tid: [(f.function, k) for f, k in zip(fs, a.roots.frame_kinds.get(tid, []))]
                                 for tid, fs in sorted(a.roots.frames.items())}
        return out
    finally:
        t.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=["lua", "redis-idle", "redis-eval"])
    ap.add_argument("exe", type=Path)
    ap.add_argument("--snapshots", type=int, default=5)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between snapshots")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    procs = []
    try:
        if a.scenario == "lua":
            here = ROOT / "tests" / "real_programs"
            p = subprocess.Popen([str(a.exe), str(here / "hold.lua"), str(here / "workload.lua")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            for _ in range(10):
                if p.stdout.readline().startswith("ready"):
                    break
            else:
                raise RuntimeError("Lua did not say ready")
        else:
            port = _port()
            p = subprocess.Popen([str(a.exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--protected-mode", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            _wait_port(port)
            if a.scenario == "redis-eval":
                procs.append(subprocess.Popen([str(a.exe.with_name("redis-cli")), "-p", str(port), "EVAL", EVAL, "0"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.5)
        runs = []
        for i in range(a.snapshots):
            m = measure(p.pid)
            runs.append(m)
            if i == 0:
                for tid, fr in m["frames"].items():
                    print(f"thread {tid}")
                    for fn, k in fr:
                        print(f"    {fn or '??':40s} {k}")
            print(f"snapshot {i + 1}: frames exact {m['model']['exact']}/{m['model']['all']} "
                  f"(glibc model {m['model']['by_model']}), leaks {m['model']['leaks']}; "
                  f"without the model {m['scanned']['exact']}/{m['scanned']['all']}, leaks {m['scanned']['leaks']}",
                  flush=True)
            time.sleep(a.every)
        share = [r["model"]["exact"] / r["model"]["all"] for r in runs]
        share0 = [r["scanned"]["exact"] / r["scanned"]["all"] for r in runs]
        print(f"{a.scenario}: frames exact with the model: worst {min(share):.1%}, median "
              f"{statistics.median(share):.1%}; without: worst {min(share0):.1%}, median {statistics.median(share0):.1%} "
              f"({len(runs)} snapshots)")
        if a.json:
            a.json.write_text(json.dumps(runs, indent=1, default=str) + "\n")
    finally:
        for q in reversed(procs):
            if q.poll() is None:
                q.kill()
                q.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
