"""Leak check of a live heap across a real link: wall, pause, bytes moved; gdb's gcore as reference.

Usage (root): python benchmarks/remote/link_bench.py [MIB] [RATE…]   (default 32 MiB, 1gbit 100mbit)

Builds samples/snap_heap.c, builds a heap of MIB MiB in small objects, makes two
network namespaces joined by a veth pair (tests/test_remote.py's ``Link``),
shapes it (netem delay 0.1 ms or 1 ms each way where the kernel has netem,
else tbf: the rate alone), and for each rate measures:

* ``local``: ``mappedtrace leaks PID`` on the same machine (process_vm_readv), the baseline;
* ``remote``: ``lldb-server-22 gdbserver`` in one namespace, ``mappedtrace leaks PID
  --remote`` in the other: wall, the pause and the bytes it reports;
* ``gcore``: ``gdbserver`` in one namespace, ``gdb -batch -ex 'target remote …' -ex gcore``
  in the other.

Prints one JSON line per measurement.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_remote import Link  # noqa: E402

MT = [sys.executable, "-m", "mappedtrace"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
REPORT = re.compile(r"read ([\d.]+) MiB in (\d+) round trips.*pause (\d+) ms")


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    rates = sys.argv[2:] or ["1gbit", "100mbit"]
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([*MT, "cc", "-O2", "-o", str(exe), str(ROOT / "samples" / "snap_heap.c")], check=True,
                   env=ENV, cwd=ROOT)
    t = subprocess.Popen([str(exe), str(mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.stdout.readline()
    t0 = time.perf_counter()
    r = subprocess.run([*MT, "leaks", str(t.pid), "--json", str(d / "local.json")], env=ENV,
                       capture_output=True, text=True)
    local = json.loads((d / "local.json").read_text())
    heap = local["precision"]["heap_bytes"]
    print(json.dumps({"what": "local", "mib": mib, "wall_s": round(time.perf_counter() - t0, 2),
                      "heap_in_use": heap, "leaked": local["summary"]["leaked_objects"]}), flush=True)
    lk = Link(random.randrange(1, 1 << 14))
    subprocess.run(["ip", "netns", "add", lk.srv], check=True)
    try:
        lk.up()
        for rate in rates:
            qdisc = lk.shape(rate)
            srv, addr = lk.server(t.pid)
            t0 = time.perf_counter()
            r = lk.tracer("leaks", str(t.pid), "--remote", addr, "--json", str(d / "remote.json"), env=ENV)
            wall = time.perf_counter() - t0
            srv.wait(timeout=30)
            m = REPORT.search(r.stderr)
            remote = json.loads((d / "remote.json").read_text())
            print(json.dumps({"what": "remote", "rate": rate, "qdisc": qdisc, "wall_s": round(wall, 2),
                              "pause_ms": int(m[3]) if m else None,
                              "moved_MiB": float(m[1]) if m else None,
                              "moved_vs_heap_in_use": round(float(m[1]) * 2**20 / heap, 2) if m else None,
                              "round_trips": int(m[2]) if m else None,
                              "same_leaks": remote["leaks"] == local["leaks"]}), flush=True)
            srv, addr = lk.server(t.pid, "gdbserver")
            core = d / "gcore.core"
            t0 = time.perf_counter()
            g = subprocess.run(["ip", "netns", "exec", lk.trc, "gdb", "-nx", "-batch", "-ex", f"file {exe}",
                                "-ex", f"target remote {addr}", "-ex", f"gcore {core}", "-ex", "detach"],
                               capture_output=True, text=True, timeout=1800)
            wall = time.perf_counter() - t0
            srv.kill()
            srv.wait()
            print(json.dumps({"what": "gcore", "rate": rate, "qdisc": qdisc, "wall_s": round(wall, 2),
                              "core_MiB": round(core.stat().st_size / 2**20, 1) if core.exists() else None,
                              "ok": g.returncode == 0}), flush=True)
    finally:
        lk.down()
        t.kill()


if __name__ == "__main__":
    main()
