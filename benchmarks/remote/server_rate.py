"""How fast lldb-server serves memory, in CPU seconds: the ceiling of a remote leak check.

Usage (root): python benchmarks/remote/server_rate.py [MIB] [ROUNDS]   (default 64 MiB, 3 rounds)

Builds samples/snap_heap.c, builds a heap of MIB MiB, attaches
``lldb-server-22 gdbserver`` on loopback and reads the ``[heap]`` mapping whole
with our client (binary ``x``, pipelined), ROUNDS times for each packet size
(128 KiB, the size lldb-server announces, and 1 MiB), and once through
``vFile:pread`` of ``/proc/PID/mem``.  For each read it prints
wall MB/s and the CPU seconds the server and the client spent (from
``/proc/PID/stat`` and ``getrusage``): MB per server CPU second is what a link
can carry at most through this server, whatever its rate.

First it prints what the server grants of the other ways to move memory faster or
with a shorter pause: ``multiprocess``/``fork-events`` in ``qSupported`` (a fork of
the target held by the server), ``QEnableCompression``, and ``vFile:pread`` of
``/proc/PID/mem`` at the heap's address.
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
        feats = c.request("qSupported:multiprocess+;fork-events+;vfork-events+").decode("latin-1")
        fd = c.request(f"vFile:open:{f'/proc/{t.pid}/mem'.encode().hex()},0,0").decode("latin-1")
        fd = int(fd[1:].split(";")[0], 16) if fd.startswith("F") and not fd.startswith("F-") else None
        pread = c.request(f"vFile:pread:{fd:x},1000,{heap.start:x}")[:12] if fd is not None else b"no fd"
        print(json.dumps({"multiprocess": "multiprocess+" in feats, "fork_events": "fork-events+" in feats,
                          "QEnableCompression": c.request("QEnableCompression:type:zlib-deflate;").decode("latin-1"),
                          "x_at_heap": len(c.read(heap.start, 0x1000)),
                          "vFile_pread_mem_at_heap": pread.split(b";")[0].decode("latin-1"),
                          "heap_start": hex(heap.start)}), flush=True)
        for _ in range(rounds):
            if fd is not None and pread.startswith(b"F") and not pread.startswith(b"F-"):
                s0, t0 = _cpu(srv.pid), time.perf_counter()
                got = 0
                offs = list(range(heap.start, heap.end, 128 << 10))
                for o, rep in zip(offs, c.pipeline([f"vFile:pread:{fd:x},{128 << 10:x},{o:x}" for o in offs])):
                    got += len(rep)
                wall = time.perf_counter() - t0
                print(json.dumps({"vFile_pread_MBps": round(got / wall / 1e6, 1),
                                  "server_cpu_s": round(_cpu(srv.pid) - s0, 2)}), flush=True)
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
