"""Tracing over the gdb-remote protocol, across a real network link.

Each test makes two network namespaces joined by a veth pair (addresses
10.200.x.y/30 only inside them), shapes the link with ``tc netem`` (1 ms each
way, 100 Mbit/s; where the kernel has no netem, ``tbf`` limits the rate alone;
``Link.delay`` routes it through ``tun_delay.py`` instead, which holds each packet
in a third namespace: the benchmarks use it for the round-trip table), runs the debug server (``lldb-server-22 gdbserver`` or
``gdbserver``) in one namespace attached to the target, and the tracer in the
other.  The right answers come from the programs (their "truth" lines) and
from the local tracer on the same process; the target must run on unharmed.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, SAMPLES, build_sample, need, require_plugin

TRUTH = re.compile(r"truth leak (0x[0-9a-f]+) (\d+) (\w+)")
#: precision figures that are timings, not results
TIMINGS = ("read_s", "mark_s", "total_s")


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Link:
    """Two namespaces, ``srv`` (the target's machine) and ``trc`` (the tracer's)."""

    def __init__(self, n: int):
        self.srv, self.trc = f"mt-srv-{n}", f"mt-trc-{n}"
        self.va, self.vb = f"mtv{n}a", f"mtv{n}b"
        x, y = (n >> 6) & 255, (n & 63) * 4
        self.srv_ip, self.trc_ip = f"10.200.{x}.{y + 1}", f"10.200.{x}.{y + 2}"
        #: the devices the link's traffic leaves by, one per end (shaped by :meth:`shape`)
        self.devs = [(self.srv, self.va), (self.trc, self.vb)]
        self.mid = f"mt-mid-{n}"
        self.relay: subprocess.Popen | None = None
        self.qdisc = ""

    def up(self) -> None:
        _run("ip", "netns", "add", self.trc)
        _run("ip", "link", "add", self.va, "netns", self.srv, "type", "veth", "peer", "name", self.vb,
             "netns", self.trc)
        for ns, dev, ip in ((self.srv, self.va, self.srv_ip), (self.trc, self.vb, self.trc_ip)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def shape(self, rate: str, delay: str = "1ms") -> str:
        """Limit both directions to ``rate`` with ``delay`` each way (netem); where the
        kernel has no netem, the rate alone (tbf).  Returns the qdisc used."""
        for qdisc in (["netem", "delay", delay, "rate", rate],
                      ["tbf", "rate", rate, "burst", "64kb", "latency", "100ms"]):
            if qdisc[0] == "netem" and self.relay is not None:
                continue            # the delay is the relay's; the rate is tbf's
            ok = True
            for ns, dev in self.devs:
                r = _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *qdisc,
                         check=False)
                ok = ok and r.returncode == 0
            if ok:
                self.qdisc = qdisc[0]
                return qdisc[0]
        pytest.skip("neither tc netem nor tbf is available here")

    def drop(self) -> None:
        """Drop every packet (netem loss 100 %, else both ends of the link down)."""
        if self.qdisc == "netem":
            for ns, dev in self.devs:
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                     "loss", "100%")
        else:
            for ns, dev in self.devs:
                _run("ip", "-n", ns, "link", "set", dev, "down")

    def restore(self) -> None:
        if self.qdisc != "netem":
            for ns, dev in self.devs:
                _run("ip", "-n", ns, "link", "set", dev, "up")
        self.shape("100mbit")

    def down(self) -> None:
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait()
        for ns in (self.srv, self.trc, self.mid):
            _run("ip", "netns", "del", ns, check=False)

    def delay(self, one_way_us: int) -> None:
        """Route the link through ``tests/tun_delay.py`` in a third namespace, which holds
        every packet ``one_way_us`` µs each way (the kernel here has no ``sch_netem``):
        two TUN devices, one moved into each end, with addresses 10.201.x.y of their own
        (``srv_ip``/``trc_ip`` change to them; :meth:`shape` then limits the TUN devices)."""
        _run("ip", "netns", "add", self.mid)
        self.relay = subprocess.Popen(["ip", "netns", "exec", self.mid, sys.executable,
                                       str(Path(__file__).with_name("tun_delay.py")),
                                       f"{self.va}t", f"{self.vb}t", str(one_way_us)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.relay.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"tun_delay.py did not start: {line!r}")
        x, y = self.srv_ip.split(".")[2:]
        srv_ip, trc_ip = f"10.201.{x}.{int(y)}", f"10.201.{x}.{int(y) + 1}"
        for ns, dev, ip, peer in ((self.srv, f"{self.va}t", srv_ip, trc_ip),
                                  (self.trc, f"{self.vb}t", trc_ip, srv_ip)):
            _run("ip", "-n", self.mid, "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", ip, "peer", peer, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "mtu", "65000", "up")
        self.srv_ip, self.trc_ip = srv_ip, trc_ip
        self.devs = [(self.srv, f"{self.va}t"), (self.trc, f"{self.vb}t")]

    def set_delay(self, one_way_us: int) -> None:
        """A new hold for the relay of :meth:`delay` (µs each way)."""
        self.relay.stdin.write(f"{int(one_way_us)}\n")
        self.relay.stdin.flush()
        assert self.relay.stdout.readline().strip() == "ok"

    def calibrate(self, rtt_ms: float, rounds: int = 3) -> dict:
        """Set the relay's hold so that the median TCP round trip (:meth:`rtt`) comes near
        ``rtt_ms``; returns the last measurement with the hold used."""
        hold = rtt_ms * 500
        for _ in range(rounds):
            self.set_delay(max(0, round(hold)))
            m = self.rtt()
            hold -= (m["median_ms"] - rtt_ms) * 500
        self.set_delay(max(0, round(hold)))
        return dict(self.rtt(), hold_us=max(0, round(hold)))

    def rtt(self, count: int = 200) -> dict:
        """Round trips of one byte over TCP across the link (ms): median, p90, max."""
        port = random.randrange(20000, 60000)
        prog = (
            "import socket,sys,time\n"
            "m,h,p,n=sys.argv[1],sys.argv[2],int(sys.argv[3]),int(sys.argv[4])\n"
            "if m=='s':\n"
            " s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((h,p));s.listen(1)\n"
            " print('up',flush=True);c,_=s.accept();c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
            " while c.recv(1):c.sendall(b'p')\n"
            "else:\n"
            " c=socket.create_connection((h,p));c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1);t=[]\n"
            " for i in range(n):\n"
            "  a=time.perf_counter();c.sendall(b'p');c.recv(1);t.append(time.perf_counter()-a)\n"
            " print(' '.join('%.6f'%x for x in t))\n")
        srv = subprocess.Popen(["ip", "netns", "exec", self.srv, sys.executable, "-c", prog, "s", self.srv_ip,
                                str(port), "0"], stdout=subprocess.PIPE, text=True)
        try:
            srv.stdout.readline()
            r = _run("ip", "netns", "exec", self.trc, sys.executable, "-c", prog, "c", self.srv_ip, str(port),
                     str(count))
        finally:
            srv.kill()
            srv.wait()
        t = sorted(float(x) * 1e3 for x in r.stdout.split())
        return {"median_ms": round(t[len(t) // 2], 3), "p90_ms": round(t[len(t) * 9 // 10], 3),
                "max_ms": round(t[-1], 3)}

    def server(self, pid: int | None, kind: str = "lldb", launch: list[str] | None = None,
               stderr=subprocess.DEVNULL, once: bool = False) -> tuple[subprocess.Popen, str]:
        """A debug server in ``srv`` attached to ``pid`` (or gdbserver launching
        ``launch``; or, for ``pid`` None, attached to nothing until the tracer asks),
        listening; (process, HOST:PORT).  ``once``: gdbserver ``--once`` (it detaches
        its processes and exits when the connection closes, rather than hold them)."""
        port = random.randrange(20000, 60000)
        addr = f"{self.srv_ip}:{port}"
        o = ["--once"] if once else []
        cmd = ["gdbserver", addr, *launch] if launch else \
            (["lldb-server-22", "gdbserver", addr] if kind == "lldb" else ["gdbserver", *o, "--multi", addr]) \
            if pid is None else \
            ["lldb-server-22", "gdbserver", addr, "--attach", str(pid)] if kind == "lldb" else \
            ["gdbserver", *o, "--attach", addr, str(pid)]
        p = subprocess.Popen(["ip", "netns", "exec", self.srv, *cmd], stdout=subprocess.DEVNULL,
                             stderr=stderr)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = _run("ip", "netns", "exec", self.srv, "ss", "-Hltn", f"sport = :{port}", check=False)
            if r.stdout.strip():
                return p, addr
            if p.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited ({p.returncode}) before listening")
            time.sleep(0.1)
        p.kill()
        raise AssertionError(f"{cmd[0]} did not listen on {addr} within 20 s")

    def tracer(self, *args: str, env: dict | None = None, timeout: float = 300,
               wait: bool = True):
        """``mappedtrace ARGS`` in the tracer's namespace."""
        e = dict(os.environ, COLUMNS="120", **(env or {}))
        cmd = ["ip", "netns", "exec", self.trc, MAPPEDTRACE, *args]
        if not wait:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture
def link():
    need("ip", "tc", "ss", "lldb-server-22")
    n = random.randrange(1, 1 << 14)
    lk = Link(n)
    r = _run("ip", "netns", "add", lk.srv, check=False)
    if r.returncode != 0:
        pytest.skip(f"ip netns is not permitted here: {r.stderr.strip()}")
    try:
        lk.up()
        lk.shape("100mbit")     # 2 ms round trip (netem), 100 Mbit/s
        yield lk
    finally:
        lk.down()


@pytest.fixture
def cache_env(tmp_path: Path) -> dict:
    """A private binary cache (no answer left over from an earlier run)."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "DEBUGINFOD_URLS": ""}


@pytest.fixture(scope="module")
def exes(tmp_path_factory) -> dict[str, Path]:
    require_plugin()
    d = tmp_path_factory.mktemp("remote")
    return {name: Path(build_sample(SAMPLES / f"{name}.c", "-O2", d / name))
            for name in ("leaky_server", "unwind_threads", "snap_heap")}


def _start(exe: Path, *args: str, ready: str = "ready", errfile: Path | None = None) -> subprocess.Popen:
    p = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=open(errfile, "w") if errfile else subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    assert line.startswith(ready), line
    return p


def _finish(p: subprocess.Popen) -> str:
    p.stdin.write("xxx")
    p.stdin.close()
    out = p.stdout.read()
    assert p.wait(timeout=60) == 0
    return out


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _running_within(pid: int, seconds: float) -> bool:
    """The target is out of every ptrace/group stop within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _state(pid) not in ("t", "T"):
            return True
        time.sleep(0.2)
    return False


def _local_leaks(pid: int, out: Path) -> dict:
    r = subprocess.run([MAPPEDTRACE, "leaks", str(pid), "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in (0, 23), r.stderr
    return _norm(json.loads(out.read_text()))


def _norm(report: dict) -> dict:
    for k in TIMINGS:
        report.get("precision", {}).pop(k, None)
    report.pop("capture", None)         # how it was captured: a fork here, the link there
    return report


@pytest.mark.parametrize("kind", ["lldb", "gdbserver"])
def test_remote_leaks_same_as_local(link: Link, exes, cache_env, tmp_path: Path, kind: str) -> None:
    if kind == "gdbserver":
        need("gdbserver")
    ref = _start(exes["leaky_server"])
    expected = _finish(ref)
    p = _start(exes["leaky_server"], errfile=tmp_path / "err")
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(p.pid, kind)
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "remote.json"),
                        env=cache_env)
        assert r.returncode == 23, r.stderr
        remote = _norm(json.loads((tmp_path / "remote.json").read_text()))
        assert remote == local
        truth = {int(a, 16) for a, _, _ in TRUTH.findall((tmp_path / "err").read_text())}
        assert truth and {x["address"] for x in remote["leaks"]} == truth
        code = srv.wait(timeout=20)             # both servers exit after our D
        assert code == 0 or kind == "gdbserver"
        assert _running_within(p.pid, 10)
        assert _finish(p) == expected           # the target ran on exactly as before
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


@pytest.mark.parametrize("kind", ["lldb", "gdbserver"])
def test_remote_attach_on_demand(link: Link, exes, cache_env, tmp_path: Path, kind: str) -> None:
    """A server started with no process (``lldb-server-22 gdbserver HOST:PORT``,
    ``gdbserver --multi HOST:PORT``): the target runs while the tracer starts and
    decodes the maps, is stopped by the tracer's ``vAttach``, gives the local report,
    and runs on.  A PID that does not exist is a one-line error."""
    if kind == "gdbserver":
        need("gdbserver")
    ref = _start(exes["leaky_server"])
    expected = _finish(ref)
    p = _start(exes["leaky_server"], errfile=tmp_path / "err")
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(None, kind)
        time.sleep(0.3)
        assert _state(p.pid) not in ("t", "T")          # nothing stopped it yet
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "remote.json"),
                        env=cache_env)
        assert r.returncode == 23, r.stderr
        assert _norm(json.loads((tmp_path / "remote.json").read_text())) == local
        assert _running_within(p.pid, 10)
        srv.wait(timeout=20)
        srv, addr = link.server(None, kind)
        gone = max(int(x) for x in os.listdir("/proc") if x.isdigit()) + 100000
        r = link.tracer("leaks", str(gone), "--remote", addr, timeout=60)
        assert r.returncode not in (0, 23) and f"no process {gone} to attach to" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
        srv.kill()
        # a process another server traces already: the attach is refused, nothing is touched
        held, _ = link.server(p.pid, "lldb")
        try:
            srv, addr = link.server(None, kind)
            r = link.tracer("leaks", str(p.pid), "--remote", addr, timeout=60)
            assert r.returncode not in (0, 23) and f"could not attach to process {p.pid}" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
        finally:
            held.kill()
        assert _running_within(p.pid, 10)
        assert _finish(p) == expected           # the target ran on exactly as before
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_remote_threads_graph_and_leaks(link: Link, exes, cache_env, tmp_path: Path) -> None:
    p = _start(exes["unwind_threads"])
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(p.pid)
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "remote.json"),
                        env=cache_env)
        assert r.returncode in (0, 23), r.stderr
        remote = _norm(json.loads((tmp_path / "remote.json").read_text()))
        assert remote["precision"]["threads"] > 1
        assert remote == local
        assert _running_within(p.pid, 10)
        # the object graph too: nodes, edges, roots with their provenance
        r = subprocess.run([MAPPEDTRACE, "graph", str(p.pid), "-o", str(tmp_path / "local_graph.json")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        srv, addr = link.server(p.pid)
        r = link.tracer("graph", str(p.pid), "--remote", addr, "-o", str(tmp_path / "remote_graph.json"),
                        env=cache_env)
        assert r.returncode == 0, r.stderr
        lg, rg = (_norm(json.loads((tmp_path / f"{w}_graph.json").read_text())) for w in ("local", "remote"))
        assert lg["roots"] and rg == lg
        assert _running_within(p.pid, 10)
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_remote_rust_same_as_local(link: Link, cache_env, tmp_path: Path) -> None:
    require_plugin()
    exe = Path(build_sample(SAMPLES / "rust" / "live_leaks.rs", "-O2", tmp_path / "live_leaks"))
    p = _start(exe, errfile=tmp_path / "err")
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(p.pid)
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "remote.json"),
                        env=cache_env)
        assert r.returncode == 23, r.stderr
        remote = _norm(json.loads((tmp_path / "remote.json").read_text()))
        assert remote == local
        head = int(re.search(r"truth leak (0x[0-9a-f]+)", (tmp_path / "err").read_text())[1], 16)
        assert any(x["address"] == head and x["kind"] == "direct" for x in remote["leaks"])
        assert remote["precision"]["modules_with_maps"] == ["live_leaks"]
        assert _running_within(p.pid, 10)
        assert _finish(p).split()[0] == "28"        # sum of its kept boxes: it ran on intact
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_bundle_analysed_without_the_binaries(link: Link, exes, cache_env, tmp_path: Path) -> None:
    own = tmp_path / "bin" / "leaky_server"
    own.parent.mkdir()
    shutil.copy(exes["leaky_server"], own)
    p = _start(own)
    srv = None
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        srv, addr = link.server(p.pid)
        bundle = tmp_path / "snap.bundle"
        r = link.tracer("snapshot", str(p.pid), "--remote", addr, "-o", str(bundle), "--bundle", env=cache_env)
        assert r.returncode == 0, r.stderr
        assert _running_within(p.pid, 10)
    finally:
        p.kill()
        if srv is not None:
            srv.kill()
    assert bundle.stat().st_mode & 0o777 == 0o600
    with tarfile.open(bundle) as tar:
        index = json.load(tar.extractfile("bundle.json"))
    assert any(b["path"].endswith("/leaky_server") and b["build_id"] for b in index["binaries"])
    own.unlink()                                # the third machine has no copy of the program
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    r = subprocess.run([MAPPEDTRACE, "leaks", str(bundle), "--json", str(tmp_path / "offline.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 23, r.stderr
    offline = _norm(json.loads((tmp_path / "offline.json").read_text()))
    assert offline["leaks"] == local["leaks"] and offline["summary"] == local["summary"]
    assert offline["precision"]["modules_with_maps"] == ["leaky_server"]


def test_binaries_by_build_id(link: Link, exes, cache_env, tmp_path: Path) -> None:
    """A binary deleted on the target's machine: a one-line error naming it and its
    build-id; then found in a --sysroot build-id tree, and from a debuginfod server."""
    from mappedtrace.formats.elf import build_id
    own = tmp_path / "bin" / "leaky_server"
    own.parent.mkdir()
    shutil.copy(exes["leaky_server"], own)
    bid = build_id(str(own))
    sysroot = tmp_path / "sysroot" / ".build-id" / bid[:2]
    sysroot.mkdir(parents=True)
    shutil.copy(own, sysroot / bid[2:])
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(own, served / "leaky_server")
    p = _start(own)
    srvs = []
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        own.unlink()
        srv, addr = link.server(p.pid)
        srvs.append(srv)
        r = link.tracer("leaks", str(p.pid), "--remote", addr, env=cache_env, timeout=60)
        assert r.returncode == 2, r.stderr
        err = r.stderr.strip().splitlines()
        assert bid in err[0] and "leaky_server" in err[0], err
        assert _running_within(p.pid, 10)

        srv, addr = link.server(p.pid)
        srvs.append(srv)
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--sysroot", str(tmp_path / "sysroot"),
                        "--json", str(tmp_path / "sysroot.json"), env=cache_env)
        assert r.returncode == 23, r.stderr
        assert _norm(json.loads((tmp_path / "sysroot.json").read_text())) == local

        if shutil.which("debuginfod"):
            port = random.randrange(20000, 60000)
            d = subprocess.Popen(["ip", "netns", "exec", link.srv, "debuginfod", "-F", str(served),
                                  "-p", str(port), "-d", str(tmp_path / "di.sqlite"), "-t", "0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            srvs.append(d)
            url = f"http://{link.srv_ip}:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:      # until it has indexed the directory
                r = _run("ip", "netns", "exec", link.trc, "python3", "-c",
                         f"import urllib.request as u; u.urlopen('{url}/buildid/{bid}/executable', timeout=5)",
                         check=False)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("debuginfod did not serve the binary within 60 s")
            srv, addr = link.server(p.pid)
            srvs.append(srv)
            env = dict(cache_env, DEBUGINFOD_URLS=url)
            shutil.rmtree(tmp_path / "cache", ignore_errors=True)
            r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "di.json"), env=env)
            assert r.returncode == 23, r.stderr
            assert _norm(json.loads((tmp_path / "di.json").read_text())) == local
            got = tmp_path / "cache" / "mappedtrace" / "binaries" / bid / "leaky_server"
            assert got.is_file() and got.stat().st_mode & 0o777 == 0o600
    finally:
        p.kill()
        for s in srvs:
            s.kill()


def _one_line_error(r, *words: str) -> None:
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("mappedtrace: hint")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_wrong_port_and_wrong_process(link: Link, exes, cache_env, tmp_path: Path) -> None:
    a = _start(exes["leaky_server"])
    b = _start(exes["leaky_server"])
    srv = None
    try:
        srv, addr = link.server(b.pid)
        host, port = addr.rsplit(":", 1)
        t0 = time.monotonic()
        r = link.tracer("leaks", str(a.pid), "--remote", f"{host}:{int(port) + 1}", env=cache_env, timeout=60)
        assert r.returncode == 2 and time.monotonic() - t0 < 15
        _one_line_error(r, "cannot connect")
        r = link.tracer("leaks", str(a.pid), "--remote", addr, env=cache_env, timeout=60)
        assert r.returncode == 2
        _one_line_error(r, f"attached to process {b.pid}, not {a.pid}")
        assert _running_within(a.pid, 10) and _running_within(b.pid, 20)
    finally:
        for x in (a, b, srv):
            if x is not None:
                x.kill()


@pytest.mark.parametrize("fault", ["server-killed", "link-dropped"])
def test_failure_mid_read(link: Link, exes, cache_env, tmp_path: Path, fault: str) -> None:
    """A 16 MiB heap over a 10 Mbit/s link takes seconds to read: break it meanwhile."""
    link.shape("10mbit")
    p = _start(exes["snap_heap"], "16", "serve")
    srv = None
    try:
        srv, addr = link.server(p.pid)
        t0 = time.monotonic()
        tr = link.tracer("leaks", str(p.pid), "--remote", addr, env=cache_env, wait=False)
        # break it mid-read: once the tracer is connected (its start-up takes seconds on a
        # loaded machine; a link dropped before the connect tests something else) and reading
        port = addr.rsplit(":", 1)[1]
        deadline = time.monotonic() + 60
        while not _run("ip", "netns", "exec", link.srv, "ss", "-Htn", "state", "established",
                       f"sport = :{port}", check=False).stdout.strip():
            assert time.monotonic() < deadline and tr.poll() is None, tr.communicate()
            time.sleep(0.1)
        time.sleep(1.0)
        assert tr.poll() is None, tr.communicate()
        if fault == "server-killed":
            os.kill(srv.pid, signal.SIGKILL)
        else:
            link.drop()
        _, err = tr.communicate(timeout=60)
        took = time.monotonic() - t0
        assert tr.returncode == 2 and took < 30, (took, err)
        _one_line_error(subprocess.CompletedProcess([], 2, "", err), addr)
        if fault == "link-dropped":
            link.restore()      # the queued detach gets through
        assert _running_within(p.pid, 60), _state(p.pid)
        p.stdin.write("c\n")
        p.stdin.flush()
        assert p.stdout.readline().strip()      # it still answers
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


def test_packet_framing_round_trip() -> None:
    """Binary payloads survive framing (escapes) and replies decode both escapes and
    run-length encoding, on generated bytes with every special character."""
    from mappedtrace.target.gdbremote import checksum, frame, unescape
    rng = random.Random(7)
    data = bytes(rng.choice(b"$#}*ab\x00\xff") for _ in range(4096))
    f = frame(data)
    body = f[1:f.rindex(b"#")]
    assert f.endswith(b"#" + checksum(body)) and b"$" not in body and b"#" not in body
    assert unescape(body) == data
    assert unescape(b"0* 1") == b"0" * 4 + b"1"         # ' ' is 32: three more repeats
    assert unescape(b"a}]b* ") == b"a}" + b"b" * 4


def test_warm_caches_decodes_the_files_not_the_memory(exes, tmp_path: Path, monkeypatch) -> None:
    """What a remote analysis decodes before it has the server attach (session.warm_caches):
    the maps of the program and libc's glibc model, from local files only: not one
    read of the target's memory (the process is not stopped yet)."""
    from mappedtrace import glibc_model
    from mappedtrace.session import MapsCache, warm_caches
    from mappedtrace.target.capture import CapturedTarget
    from mappedtrace.target.live import parse_maps
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    p = _start(exes["leaky_server"])
    try:
        with open(f"/proc/{p.pid}/maps") as f:
            mappings = parse_maps(f.read())
        libc = next(m.path for m in mappings if os.path.basename(m.path).startswith("libc.so"))
        # no memory at all: any read of it is counted
        t = CapturedTarget(pid=p.pid, threads=[], mappings=mappings, auxv=b"",
                           exe=str(exes["leaky_server"]), pieces=[])
        reads = []
        monkeypatch.setattr(t, "_read", lambda a, n: reads.append((a, n)) or b"\0" * n)
        monkeypatch.setattr(t, "_read_into", lambda a, v: reads.append((a, len(v))))
        glibc_model._model_for.cache_clear()
        cache = MapsCache()
        warm_caches(t, cache)
        assert reads == []
        bm = cache.maps.get(str(exes["leaky_server"]))
        assert bm is not None and bm.has_maps
        assert libc in cache.maps                       # decoded (no maps in libc: None)
        assert glibc_model._model_for.cache_info().currsize == 1
    finally:
        p.kill()


def test_bad_remote_arguments(tmp_path: Path) -> None:
    from conftest import run_mt
    for args, words in ((["leaks", "123", "--remote", "nonsense"], "is not HOST:PORT"),
                        (["graph", str(tmp_path / "x"), "-o", str(tmp_path / "g.json"), "--remote", "10.0.0.1:5"],
                         "give the PID"),
                        (["snapshot", "123", "-o", str(tmp_path / "s"), "--tree", "--remote", "10.0.0.1:5"],
                         "--tree and --remote do not go together"),
                        (["leaks", "123", "--tree", "--remote", "10.0.0.1:5"],
                         "--tree and --remote do not go together")):
        r = run_mt(*args, timeout=60)
        assert r.returncode == 2, r.stderr
        _one_line_error(r, words)
    (tmp_path / "fake.bundle").write_bytes(b"bundle.json".ljust(257, b"\0") + b"ustar" + bytes(250))
    r = run_mt("leaks", str(tmp_path / "fake.bundle"), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_snapshot_elsewhere_with_sysroot_or_bundle(exes, cache_env, tmp_path: Path) -> None:
    """A local snapshot analysed where its program is gone: a plain core with --sysroot
    (a tree mirroring the target's paths), and a --bundle with nothing else."""
    own = tmp_path / "bin" / "leaky_server"
    own.parent.mkdir()
    shutil.copy(exes["leaky_server"], own)
    mirror = tmp_path / "sysroot" / str(own).lstrip("/")
    mirror.parent.mkdir(parents=True)
    shutil.copy(own, mirror)
    env = dict(os.environ, COLUMNS="120", **cache_env)
    p = _start(own)
    try:
        local = _local_leaks(p.pid, tmp_path / "local.json")
        for out, extra in (("snap.core", []), ("snap.bundle", ["--bundle"])):
            r = subprocess.run([MAPPEDTRACE, "snapshot", str(p.pid), "-o", str(tmp_path / out), *extra],
                               capture_output=True, text=True, timeout=300, env=env)
            assert r.returncode == 0, r.stderr
    finally:
        p.kill()
    own.unlink()
    for what, extra in (("snap.core", ["--sysroot", str(tmp_path / "sysroot")]), ("snap.bundle", [])):
        js = tmp_path / f"{what}.json"
        r = subprocess.run([MAPPEDTRACE, "leaks", str(tmp_path / what), "--json", str(js), *extra],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 23, r.stderr
        got = _norm(json.loads(js.read_text()))
        assert got["leaks"] == local["leaks"] and got["summary"] == local["summary"], what
        assert got["precision"]["modules_with_maps"] == ["leaky_server"], what


@pytest.mark.parametrize("kind", ["lldb", "gdbserver"])
def test_remote_snapshot_registers_match_local(link: Link, exes, cache_env, tmp_path: Path, kind: str) -> None:
    """Every parked thread's general and FXSAVE registers, captured through the server,
    equal what ptrace gives locally (the differences each server has, excepted)."""
    from mappedtrace.target.core import open_core
    if kind == "gdbserver":
        need("gdbserver")
    p = _start(exes["unwind_threads"])
    srv = None
    try:
        r = subprocess.run([MAPPEDTRACE, "snapshot", str(p.pid), "-o", str(tmp_path / "local.core")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        srv, addr = link.server(p.pid, kind)
        r = link.tracer("snapshot", str(p.pid), "--remote", addr, "-o", str(tmp_path / "remote.core"), env=cache_env)
        assert r.returncode == 0, r.stderr
        assert _running_within(p.pid, 10)
    finally:
        p.kill()
        if srv is not None:
            srv.kill()
    loc, rem = open_core(str(tmp_path / "local.core")), open_core(str(tmp_path / "remote.core"))
    try:
        assert len(loc.threads) > 1 and [t.tid for t in rem.threads] == [t.tid for t in loc.threads]
        for a, b in zip(loc.threads, rem.threads):
            skip = {"orig_rax"} if kind == "lldb" else set()      # lldb-server does not show it
            if {a.regs["orig_rax"], b.regs["orig_rax"]} == {230, 219}:
                # a clock_nanosleep interrupted by the first capture goes on as restart_syscall
                skip.add("orig_rax")
            assert {k: v for k, v in a.regs.items() if k not in skip} == \
                {k: v for k, v in b.regs.items() if k not in skip}, a.tid
            fa, fb = bytearray(a.fpregs), bytearray(b.fpregs)
            if kind == "gdbserver":                 # gdb has no mxcsr_mask register
                fa[28:32] = fb[28:32] = bytes(4)
            assert fa == fb, a.tid
    finally:
        loc.close()
        rem.close()


CORPUS = Path(__file__).resolve().parent / "leak_corpus"


def test_leak_corpus_at_exit_remotely(link: Link, cache_env, tmp_path: Path) -> None:
    """Each corpus program launched by gdbserver on the far side, stopped at exit_group
    (QCatchSyscalls), analysed across the link: the leaks it names, as the local run."""
    need("gdbserver")
    require_plugin()
    names = sorted(p.stem for p in CORPUS.glob("*.c"))
    assert names
    for name in names:
        exe = Path(build_sample(CORPUS / f"{name}.c", "-O2", tmp_path / name))
        r = subprocess.run([MAPPEDTRACE, "run", "--json", str(tmp_path / f"{name}.local.json"), "--", str(exe)],
                           capture_output=True, text=True, timeout=300)
        local = _norm(json.loads((tmp_path / f"{name}.local.json").read_text()))
        errfile = tmp_path / f"{name}.err"
        srv, addr = link.server(0, launch=[str(exe)], stderr=open(errfile, "w"))
        try:
            r = link.tracer("run", "--remote", addr, "--json", str(tmp_path / f"{name}.remote.json"), env=cache_env)
            assert r.returncode in (0, 23), (name, r.stderr)
            srv.wait(timeout=30)
        finally:
            srv.kill()
        remote = _norm(json.loads((tmp_path / f"{name}.remote.json").read_text()))
        truth = {(int(a, 16), k) for a, _, k in TRUTH.findall(errfile.read_text())}
        assert {(x["address"], x["kind"]) for x in remote["leaks"]} == truth, name
        # the same report but for the addresses (the server runs it without ASLR)
        strip = lambda rep: sorted((x["size"], x["type"], x["kind"]) for x in rep["leaks"])  # noqa: E731
        assert strip(remote) == strip(local) and remote["summary"] == local["summary"], name
        assert remote["precision"]["frames_exact"] == local["precision"]["frames_exact"], name


@pytest.mark.parametrize("kind", ["lldb", "gdbserver"])
def test_remote_retry_when_malloc_lock_held(link: Link, cache_env, tmp_path: Path, kind: str) -> None:
    """A thread of heap_locked holds main_arena's lock (blocked inside malloc_stats) until the
    process has been stopped for over a second.  lldb-server: the tracer sees the lock, lets
    the process run a moment, stops it again and copies a heap with no lock held (the
    report has no lock warning).  gdbserver cannot stop it again (its interrupt signals the
    process group): one stop, a warning that says so.  Either way the target runs on."""
    if kind == "gdbserver":
        need("gdbserver")
    require_plugin()
    exe = Path(build_sample(SAMPLES / "heap_locked.c", "-O2", tmp_path / "heap_locked"))
    p = _start(exe)
    srv = None
    try:
        srv, addr = link.server(p.pid, kind)
        time.sleep(1.5)             # stopped for over a second: the target's watcher will let go
        r = link.tracer("leaks", str(p.pid), "--remote", addr, "--json", str(tmp_path / "r.json"), env=cache_env,
                        timeout=120)
        assert r.returncode in (0, 23), r.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["summary"]["reachable_objects"] >= 1000     # the list of 1000 nodes
        if kind == "lldb":
            m = re.search(r"stopped (\d+) times: an arena lock was held", r.stderr)
            assert m and int(m[1]) >= 2, r.stderr
            assert "is locked" not in r.stderr and "was locked" not in r.stderr, r.stderr
        else:
            assert "gdbserver cannot stop the process again" in r.stderr, r.stderr
        assert _running_within(p.pid, 10)
        p.stdin.write("x\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("ok 1")     # its heap works: the lock was released
    finally:
        p.kill()
        if srv is not None:
            srv.kill()


@pytest.mark.parametrize("kind", ["lldb", "gdbserver"])
def test_remote_settle(link: Link, cache_env, tmp_path: Path, kind: str) -> None:
    """``snapshot --settle --remote``: snap_threads' two workers spin in instrumented loops with
    loop map points; single-stepped through the server they reach record PCs (checked in the
    core against the maps), the threads waiting in libc are uninstrumented.  A run with a
    fixed number of rounds, settled remotely meanwhile, prints what it prints untouched."""
    from mappedtrace.target.core import open_core
    from mappedtrace.target.settle import load_bias, load_maps
    if kind == "gdbserver":
        need("gdbserver")
    require_plugin()
    exe = tmp_path / "snap_threads"
    r = subprocess.run([MAPPEDTRACE, "cc", "--settle-points", "-O2", "-pthread", "-o", str(exe),
                        str(SAMPLES / "snap_threads.c")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    maps = load_maps(str(exe))
    want = subprocess.run([str(exe), "2", "100000", "64"], capture_output=True, text=True, timeout=300,
                          check=True).stdout.split("\n", 1)[1]
    steps = []
    for rounds in ("0", "100000"):
        p = subprocess.Popen([str(exe), "2", rounds, "64"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        srv = None
        try:
            assert p.stdout.readline().startswith("ready")
            time.sleep(0.1)
            srv, addr = link.server(p.pid, kind)
            core = tmp_path / f"s{rounds}.core"
            r = link.tracer("snapshot", str(p.pid), "--remote", addr, "--settle", "--json", "-o", str(core),
                            env=cache_env, timeout=300)
            assert r.returncode == 0, r.stderr
            d = json.loads(r.stdout)
            assert _running_within(p.pid, 10)
            if rounds == "0":
                assert d["settle_states"].get("settled") == 2 and "unsettled" not in d["settle_states"], d
                c = open_core(str(core))
                try:
                    bias = load_bias(c, str(exe))
                    for t in c.threads:
                        if t.settle == "settled":
                            assert maps.record_at(t.pc - bias) is not None, hex(t.pc)
                            assert maps.function_at(t.pc - bias).name == "work"
                finally:
                    c.close()
                steps += [t["settle_steps"] for t in d["threads"]]
                p.stdin.close()
                assert p.wait(timeout=60) == 0 and p.stdout.read().count("worker") == 2
            else:
                out, _ = p.communicate(timeout=300)
                assert out == want          # the stepped program computed the same ("ready" was read)
        finally:
            p.kill()
            if srv is not None:
                srv.kill()
    assert max(steps) > 0          # the workers were stepped (none sits on a map point by chance twice)


def test_delay_link_holds_packets() -> None:
    """The benchmarks' delay link (tun_delay.py between the namespaces): a 1 ms hold each way
    gives a TCP round trip of at least 2 ms, and a new hold set through its stdin takes effect."""
    need("ip", "tc")
    lk = Link(random.randrange(1, 1 << 14))
    r = _run("ip", "netns", "add", lk.srv, check=False)
    if r.returncode != 0:
        pytest.skip(f"ip netns is not permitted here: {r.stderr.strip()}")
    try:
        lk.up()
        try:
            lk.delay(1000)
        except (AssertionError, subprocess.CalledProcessError) as e:
            if not os.path.exists("/dev/net/tun"):
                pytest.skip("no /dev/net/tun here")
            raise e
        slow = lk.rtt(50)
        assert slow["median_ms"] >= 2.0, slow
        lk.set_delay(0)
        fast = lk.rtt(50)
        assert fast["median_ms"] < slow["median_ms"] - 1.0, (fast, slow)
    finally:
        lk.down()
