"""Bulk TCP rate and round trip of the delay links of link_bench.py (tests/test_remote.py Link +
tests/tun_delay.py), to tell the link's limits from the tracer's.

Usage (root): python benchmarks/remote/link_rate.py RTT_MS:RATE …    e.g. 0.2:1gbit 2:100mbit

For each link: calibrate the hold, then 64 MiB over one TCP connection; one JSON line each.
"""
import sys, random, subprocess, time, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_remote import Link
prog = r'''
import socket,sys,time
m,h,p=sys.argv[1],sys.argv[2],int(sys.argv[3])
n=64<<20
if m=="s":
    s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((h,p));s.listen(1);print("up",flush=True)
    c,_=s.accept();c.recv(1);c.sendall(b"x"*n);time.sleep(1)
else:
    c=socket.create_connection((h,p));t=time.perf_counter();c.sendall(b"g");got=0
    while got<n:
        d=c.recv(1<<20)
        if not d: break
        got+=len(d)
    print("%.1f"%(got/(time.perf_counter()-t)/1e6))
'''
for spec in sys.argv[1:]:
    rtt, rate = spec.split(":")
    lk = Link(random.randrange(1, 1 << 14))
    subprocess.run(["ip", "netns", "add", lk.srv], check=True)
    try:
        lk.up(); lk.delay(int(float(rtt) * 500)); lk.shape(rate); m = lk.calibrate(float(rtt))
        port = random.randrange(20000, 60000)
        srv = subprocess.Popen(["ip", "netns", "exec", lk.srv, sys.executable, "-c", prog, "s", lk.srv_ip, str(port)], stdout=subprocess.PIPE, text=True)
        srv.stdout.readline()
        r = subprocess.run(["ip", "netns", "exec", lk.trc, sys.executable, "-c", prog, "c", lk.srv_ip, str(port)], capture_output=True, text=True, timeout=300)
        srv.kill()
        print(json.dumps({"link": spec, **m, "bulk_MBps": float(r.stdout.strip() or 0)}), flush=True)
    finally:
        lk.down()
