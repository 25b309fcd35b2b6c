"""Read a live heap through lldb-server: our gdb-remote client vs LLDB's Python API.

Usage: python benchmarks/remote/read_compare.py [MIB]   (default 64)

Builds samples/snap_heap.c with ``mappedtrace cc``, builds a heap of MIB MiB,
starts ``lldb-server-22 gdbserver 127.0.0.1:PORT --attach PID`` twice (the
server exits at each detach) and reads the ``[heap]`` mapping whole:

* ``ours``: :class:`mappedtrace.target.gdbremote.GdbRemote` (binary ``x``
  packets of the server's 128 KiB packet size, 8 in flight);
* ``lldb``: ``SBTarget.ConnectRemote`` (``connect://``) then
  ``SBProcess.ReadMemory`` in 1 MiB pieces.

Prints one JSON line per client: bytes, seconds, MB/s, bytes on the wire (ours).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mappedtrace.target.gdbremote import GdbRemote  # noqa: E402
from mappedtrace.target.live import parse_maps  # noqa: E402


def server(pid: int) -> tuple[subprocess.Popen, str]:
    port = random.randrange(20000, 60000)
    p = subprocess.Popen(["lldb-server-22", "gdbserver", f"127.0.0.1:{port}", "--attach", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
            return p, f"127.0.0.1:{port}"
        time.sleep(0.05)
    raise SystemExit("lldb-server did not listen")


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "samples" / "snap_heap.c")], check=True, cwd=ROOT)
    t = subprocess.Popen([str(exe), str(mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.stdout.readline()
    heap = next(m for m in parse_maps(open(f"/proc/{t.pid}/maps").read()) if m.path == "[heap]")
    try:
        s, addr = server(t.pid)
        c = GdbRemote(addr)
        buf = bytearray(heap.size)
        t0 = time.perf_counter()
        bad = c.read_memory([(heap.start, heap.size)], [buf])
        dt = time.perf_counter() - t0
        c.detach()
        c.close()
        s.wait(timeout=30)
        print(json.dumps({"client": "ours", "bytes": heap.size, "s": round(dt, 3),
                          "MB_s": round(heap.size / dt / 1e6, 1), "wire_bytes": c.bytes_in, "failed": len(bad)}))

        from mappedtrace.toolchain import import_lldb
        lldb = import_lldb()
        s, addr = server(t.pid)
        dbg = lldb.SBDebugger.Create()
        dbg.SetAsync(False)
        err = lldb.SBError()
        tgt = dbg.CreateTarget("")
        t1 = time.perf_counter()
        proc = tgt.ConnectRemote(dbg.GetListener(), f"connect://{addr}", "gdb-remote", err)
        t_conn = time.perf_counter() - t1
        assert err.Success(), err.GetCString()
        t0 = time.perf_counter()
        got = 0
        for off in range(0, heap.size, 1 << 20):
            n = min(1 << 20, heap.size - off)
            e = lldb.SBError()
            data = proc.ReadMemory(heap.start + off, n, e)
            got += len(data or b"")
        dt = time.perf_counter() - t0
        proc.Detach()
        lldb.SBDebugger.Destroy(dbg)
        s.wait(timeout=30)
        print(json.dumps({"client": "lldb", "bytes": got, "s": round(dt, 3), "MB_s": round(got / dt / 1e6, 1),
                          "connect_s": round(t_conn, 3)}))
    finally:
        t.kill()


if __name__ == "__main__":
    main()
