"""Bulk TCP rate and round trip of the delay links of link_bench.py, to tell the
link's limits from the tracer's.

Usage (root): python benchmarks/remote/link_rate.py RTT_MS:RATE …    (e.g. 0.2:1gbit 2:100mbit)

For each link (tests/test_remote.py ``Link`` through tests/tun_delay.py): calibrate
the hold to the round trip, then send 64 MiB over one TCP connection from the
server's namespace to the tracer's.  One JSON line per link.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from test_remote import Link  # noqa: E402

#: sender (s) and receiver (r) of the bulk transfer, run in the two namespaces
PROG = r'''
import socket, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), 64 << 20
if mode == "s":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    print("up", flush=True)
    c, _ = s.accept()
    c.recv(1)
    c.sendall(b"x" * n)
    time.sleep(1)
else:
    c = socket.create_connection((host, port))
    t = time.perf_counter()
    c.sendall(b"g")
    got = 0
    while got < n:
        d = c.recv(1 << 20)
        if not d:
            break
        got += len(d)
    print("%.1f" % (got / (time.perf_counter() - t) / 1e6))
'''


def main() -> None:
    for spec in sys.argv[1:] or ["0.2:1gbit", "2:100mbit"]:
        rtt, rate = spec.split(":")
        lk = Link(random.randrange(1, 1 << 14))
        subprocess.run(["ip", "netns", "add", lk.srv], check=True)
        try:
            lk.up()
            lk.delay(int(float(rtt) * 500))
            lk.shape(rate)
            m = lk.calibrate(float(rtt))
            port = random.randrange(20000, 60000)
            srv = subprocess.Popen(["ip", "netns", "exec", lk.srv, sys.executable, "-c", PROG, "s", lk.srv_ip,
                                    str(port)], stdout=subprocess.PIPE, text=True)
            try:
                srv.stdout.readline()
                r = subprocess.run(["ip", "netns", "exec", lk.trc, sys.executable, "-c", PROG, "r", lk.srv_ip,
                                    str(port)], capture_output=True, text=True, timeout=300)
            finally:
                srv.kill()
                srv.wait()
            print(json.dumps({"link": spec, **m, "bulk_MBps": float(r.stdout.strip() or 0)}), flush=True)
        finally:
            lk.down()


if __name__ == "__main__":
    main()
