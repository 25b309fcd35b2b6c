"""Leak check of a live heap across a real link: wall, pause, bytes moved; gdb's gcore as reference.

Usage (root)::

    python benchmarks/remote/link_bench.py [--mib N] [--runs R] [--no-gcore] [--baseline TREE]
        [--servers lldb,gdbserver-fork,gdbserver-stop-copy] [RTT_MS:RATE …]

(default: 256 MiB, 2 runs, links 0.2:1gbit 0.2:100mbit 2:1gbit 2:100mbit)

Builds samples/snap_heap.c and builds a heap of N MiB in 256-byte objects, then:

* ``local``: ``mappedtrace leaks PID`` on the same machine (process_vm_readv after a
  fork, the default), the baseline; after one run that fills the caches, one local
  run beside each remote run (paired: the machine's load moves both alike).
* for each link: two network namespaces joined through a third one where
  ``tests/tun_delay.py`` holds every packet for half the round trip (this kernel
  has no ``sch_netem``; the hold is calibrated until the measured TCP round trip's
  median is near RTT_MS), ``tc tbf`` on both ends for the rate;
  ``lldb-server-22 gdbserver`` attached in one namespace, ``mappedtrace leaks PID
  --remote`` in the other, R runs: wall, bytes moved (the tracer's own count) and the
  pause.
* the server is started with no process (``lldb-server-22 gdbserver HOST:PORT``) and
  the tracer attaches it (``vAttach``) once it has started and read the maps; with
  ``--server-attach`` the server attaches first (``--attach PID``), as before.
* ``--servers``: which remote rows (default ``lldb``): ``lldb`` (lldb-server-22, the tracer's
  default mode: stop-copy there), ``gdbserver-fork`` (``gdbserver --once --multi``,
  ``--mode fork``: a copy-on-write child on the far side, the parent detached before the
  copy), ``gdbserver-stop-copy`` (same server, ``--mode stop-copy``).
* ``--baseline TREE``: beside each remote run, the same check by the tracer of another
  checkout (``PYTHONPATH=TREE``, server-attached: the version before this change), so the
  two are compared under the same load.
* ``gcore``: ``gdbserver --attach`` in one namespace, ``gdb -batch -ex 'target
  remote …' -ex gcore`` in the other (gdb 13 reads with hex ``m`` packets).

The pause is measured from outside: a thread samples ``/proc/PID/stat`` every
millisecond and adds up the time the target spends stopped (state ``t``): for a
remote run that is from the server's attach to our detach.  The tracer's own
figure (from its connect to its detach) is printed beside it.

CPU seconds of the tracer (user + system, from ``getrusage``) are printed beside
wall times: on a shared machine they move less.  Prints one JSON line per
measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_remote import Link  # noqa: E402

MT = [sys.executable, "-m", "mappedtrace"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), DEBUGINFOD_URLS="")
REPORT = re.compile(r"read ([\d.]+) MiB in (\d+) round trips.*pause (\d+) ms")


class StopSampler:
    """Time a process spends stopped (``/proc/PID/stat`` state t or T), sampled every ms."""

    def __init__(self, pid: int):
        self.pid, self.total_ns, self.longest_ns = pid, 0, 0
        self._run = True
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()

    def _state(self) -> str:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return ""

    def _loop(self) -> None:
        since = None
        last = time.perf_counter_ns()
        while self._run:
            now = time.perf_counter_ns()
            stopped = self._state() in ("t", "T")
            if stopped:
                self.total_ns += now - last
                since = since or last
                self.longest_ns = max(self.longest_ns, now - since)
            else:
                since = None
            last = now
            time.sleep(0.001)

    def stop(self) -> dict:
        self._run = False
        self._th.join()
        return {"stopped_ms": round(self.total_ns / 1e6), "longest_stop_ms": round(self.longest_ns / 1e6)}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished children (the tracer; not the server,
    which ``ip netns exec`` leaves to the Popen that started it)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))    # clean up the namespaces on kill
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-gcore", action="store_true")
    ap.add_argument("--server-attach", action="store_true")
    ap.add_argument("--baseline", metavar="TREE")
    ap.add_argument("--servers", default="lldb")
    ap.add_argument("links", nargs="*", default=["0.2:1gbit", "0.2:100mbit", "2:1gbit", "2:100mbit"])
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    exe = d / "snap_heap"
    subprocess.run([*MT, "cc", "-O2", "-o", str(exe), str(ROOT / "samples" / "snap_heap.c")], check=True,
                   env=ENV, cwd=ROOT)
    t = subprocess.Popen([str(exe), str(a.mib), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.stdout.readline()
    def run_local(tag) -> dict:
        s = StopSampler(t.pid)
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run([*MT, "leaks", str(t.pid), "--json", str(d / "local.json")], env=ENV,
                       capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        rep = json.loads((d / "local.json").read_text())
        print(json.dumps({"what": "local", "mib": a.mib, "pair": tag, "wall_s": round(wall, 2),
                          "cpu_s": round(cpu, 2), **s.stop(),
                          "tracer_pause_ms": (rep.get("capture") or {}).get("pause_ms"),
                          "heap_in_use": rep["precision"]["heap_bytes"],
                          "leaked": rep["summary"]["leaked_objects"], "load": os.getloadavg()[0]}), flush=True)
        return rep

    try:
        # a first run fills the caches (decoded maps, glibc's debug file): not counted
        subprocess.run([*MT, "leaks", str(t.pid), "--json", str(d / "local.json")], env=ENV, capture_output=True)
        local = json.loads((d / "local.json").read_text())
        heap = local["precision"]["heap_bytes"]
        for spec in a.links:
            rtt_ms, rate = spec.split(":")
            lk = Link(random.randrange(1, 1 << 14))
            subprocess.run(["ip", "netns", "add", lk.srv], check=True)
            try:
                lk.up()
                lk.delay(int(float(rtt_ms) * 500))
                qdisc = lk.shape(rate)
                rtt = lk.calibrate(float(rtt_ms))
                print(json.dumps({"what": "link", "rtt_goal_ms": float(rtt_ms), "rate": rate, "qdisc": qdisc,
                                  **rtt}), flush=True)
                def run_remote(tag, tree: str | None = None, kind: str = "lldb") -> None:
                    s = StopSampler(t.pid)
                    late = tree is None and not a.server_attach
                    server, _, mode = kind.partition("-")
                    srv, addr = lk.server(None if late else t.pid, "lldb" if server == "lldb" else "gdbserver",
                                          once=server == "gdbserver")
                    env = dict(ENV, PYTHONPATH=tree) if tree else ENV
                    c0, t0 = _children_cpu(), time.perf_counter()
                    r = lk.tracer("leaks", str(t.pid), "--remote", addr, "--json", str(d / "remote.json"),
                                  *(["--mode", mode] if mode else []), env=env, timeout=1800)
                    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
                    srv.wait(timeout=60)
                    stops = s.stop()
                    m = REPORT.search(r.stderr)
                    remote = json.loads((d / "remote.json").read_text()) if r.returncode in (0, 23) else {}
                    cap = remote.get("capture") or {}
                    print(json.dumps({"what": "baseline" if tree else "remote", "server": kind,
                                      "capture": cap.get("capture"), "fork_ms": cap.get("fork_ms"),
                                      "rtt_ms": float(rtt_ms),
                                      "rate": rate, "pair": tag, "attach": "tracer" if late else "server",
                                      "wall_s": round(wall, 2), "tracer_cpu_s": round(cpu, 2), **stops,
                                      "tracer_pause_ms": int(m[3]) if m else None,
                                      "moved_MiB": float(m[1]) if m else None,
                                      "moved_vs_heap_in_use": round(float(m[1]) * 2**20 / heap, 3) if m else None,
                                      "round_trips": int(m[2]) if m else None,
                                      "same_leaks": remote.get("leaks") == local["leaks"],
                                      "error": None if m else r.stderr.strip()[-300:],
                                      "load": os.getloadavg()[0]}), flush=True)

                for i in range(a.runs):
                    # local and remote alternate: each remote run has a local one beside it
                    local = run_local(f"{spec}/{i}")
                    for kind in a.servers.split(","):
                        run_remote(f"{spec}/{i}", kind=kind)
                    if a.baseline:
                        run_remote(f"{spec}/{i}", a.baseline)
                if a.no_gcore:
                    continue
                s = StopSampler(t.pid)
                srv, addr = lk.server(t.pid, "gdbserver")
                core = d / "gcore.core"
                t0 = time.perf_counter()
                g = subprocess.run(["ip", "netns", "exec", lk.trc, "gdb", "-nx", "-batch", "-ex", f"file {exe}",
                                    "-ex", f"target remote {addr}", "-ex", f"gcore {core}", "-ex", "detach"],
                                   capture_output=True, text=True, timeout=3600)
                wall = time.perf_counter() - t0
                srv.kill()
                srv.wait()
                print(json.dumps({"what": "gcore", "rtt_ms": float(rtt_ms), "rate": rate,
                                  "wall_s": round(wall, 2), **s.stop(),
                                  "core_MiB": round(core.stat().st_size / 2**20, 1) if core.exists() else None,
                                  "ok": g.returncode == 0}), flush=True)
                core.unlink(missing_ok=True)
            finally:
                lk.down()
        t.stdin.write("c\n")
        t.stdin.flush()
        print(json.dumps({"what": "target-after", "answers": bool(t.stdout.readline().strip())}), flush=True)
    finally:
        t.kill()


if __name__ == "__main__":
    main()
