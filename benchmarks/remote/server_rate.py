"""How fast lldb-server serves memory, in CPU seconds: the ceiling of a remote leak check.

Usage (root): python benchmarks/remote/server_rate.py [MIB] [ROUNDS]   (default 64 MiB, 3 rounds)

Builds samples/snap_heap.c, builds a heap of MIB MiB, attaches
``lldb-server-22 gdbserver`` on loopback and reads the ``[heap]`` mapping whole
with our client (binary ``x``, pipelined), ROUNDS times for each packet size
(128 KiB, the size lldb-server announces, and 1 MiB).  For each read it prints
wall MB/s and the CPU seconds the server and the client spent (from
``/proc/PID/stat`` and ``getrusage``): MB per server CPU second is what a link
can carry at most through this server, whatever its rate.
"""
from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mappedtrace.target.gdbremote import GdbRemote  # noqa: E402
from mappedtrace.target.live import parse_maps  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / TICK


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "samples" / "snap_heap.c")], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    t = subprocess.Popen([str(exe), str(mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    srv = None
    try:
        t.stdout.readline()
        with open(f"/proc/{t.pid}/maps") as f:
            heap = next(m for m in parse_maps(f.read()) if m.path == "[heap]")
        port = random.randrange(20000, 60000)
        srv = subprocess.Popen(["lldb-server-22", "gdbserver", f"127.0.0.1:{port}", "--attach", str(t.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                c = GdbRemote(f"127.0.0.1:{port}")
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise SystemExit("lldb-server did not answer")
        for _ in range(rounds):
            for size in (128 << 10, 1 << 20):
                c.packet_size = size + 64
                buf = bytearray(heap.size)
                s0, c0, t0 = _cpu(srv.pid), _self_cpu(), time.perf_counter()
                bad = c.read_memory([(heap.start, heap.size)], [buf])
                wall = time.perf_counter() - t0
                s1, c1 = _cpu(srv.pid), _self_cpu()
                print(json.dumps({"packet_KiB": size >> 10, "MiB": round(heap.size / 2**20, 1),
                                  "wall_MBps": round(heap.size / wall / 1e6, 1),
                                  "server_cpu_s": round(s1 - s0, 2), "client_cpu_s": round(c1 - c0, 2),
                                  "MB_per_server_cpu_s": round(heap.size / max(s1 - s0, 1e-3) / 1e6, 1),
                                  "failed_blocks": len(bad), "load": round(os.getloadavg()[0], 1)}), flush=True)
        c.detach(t.pid)
        c.close()
    finally:
        t.kill()
        if srv is not None:
            srv.kill()


if __name__ == "__main__":
    main()
