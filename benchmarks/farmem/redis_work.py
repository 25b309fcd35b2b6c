"""Workload (d) of issue 15: a real Debian program, Redis 7.0.15, with its heap paged.

Why Redis: it is the program far memory is most often asked for (a cache or store whose
data set outgrows the machine), its heap is nothing but the data set (values, the dict,
its entries), it is shipped by Debian (``apt-get source redis``), and it forks for
``BGSAVE``: the case where the program's own ``fork`` must be followed.

The server is built from the Debian sources (``scripts/fetch_sources.sh redis``) with
clang-22 and ``MALLOC=libc`` (the soundness suite's recipe: Debian's own binary uses
jemalloc, whose extents are not glibc's heap, and the pager pages glibc's heap), without
the maps: it is paged page by page, the graph (conservative, no exact edges) gives the
leaked-first policy only.  Cached in ``~/.cache/mappedtrace/real`` like the soundness builds.

What a run does (every answer is checked):

1. start the server (alone, under ``mappedtrace farmem run``, or in a memory cgroup with
   zram swap), on 127.0.0.1 at a free port, persistence off, in its own directory;
2. load ``keys`` keys ``k:I`` of ``vsize`` bytes each: ``shake_256("I:G")`` with G the
   key's generation (0 at the load), pipelined;
3. a window of ``seconds``: batches of 100 commands, 95 % ``GET`` and 5 % ``SET`` (the
   next generation), keys drawn from a Zipf distribution (θ = 0.99 over ranks scrambled
   over the keys, as workload (a)); every ``GET`` is compared with what was set last;
4. every key read back with ``MGET`` and compared;
5. optionally ``BGSAVE`` (Redis forks; the child writes every key) and the RDB file
   loaded into Debian's own ``redis-server`` and every key compared.

A wrong value ends the run with an error: the figures come only from right answers.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MT = [sys.executable, "-m", "mappedtrace"]
BATCH = 100


class WrongValue(Exception):
    """Redis answered a value that is not the one last set (the run is void)."""


def redis_exe(log=lambda m: print(m, file=sys.stderr)) -> Path:
    """redis-server built from the Debian sources with clang-22 and ``MALLOC=libc`` (cached).

    :raises soundness.Unavailable: no sources or no clang-22 here
    """
    sys.path.insert(0, str(ROOT / "benchmarks" / "soundness"))
    import programs
    import soundness
    src = soundness.source_tree("redis")
    return soundness.build("redis", "plain", programs._redis_recipe, src, programs.REDIS_RECIPE, log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def value(i: int, gen: int, vsize: int) -> bytes:
    return hashlib.shake_256(b"%d:%d" % (i, gen)).digest(vsize)


def _connect(port: int, proc: subprocess.Popen, timeout: float = 60):
    import redis
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            r.ping()
            return r
        except redis.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before it answered") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis on port {port} did not answer in {timeout:.0f} s") from None
            time.sleep(0.05)


class Server:
    """A Redis server under test: alone (``budget`` None), paged by ``mappedtrace farmem run
    --local budget --store store`` (``extra`` more options), or in the cgroup ``cgroup``."""

    def __init__(self, exe: Path, workdir: str, *, budget: int | None = None, store: str | None = None,
                 extra: list[str] = (), cgroup: str | None = None):
        self.port = free_port()
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        cmd = [str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--protected-mode", "no", "--dir", workdir, "--dbfilename", "dump.rdb"]
        if cgroup:
            cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$0" "$@"', *cmd]
        elif budget is not None:
            cmd = [*MT, "farmem", "run", "--local", str(budget), "--store", store, *extra, "--", *cmd]
        self.log = open(os.path.join(workdir, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.r = _connect(self.port, self.proc)
        self.pid = int(self.r.info("server")["process_id"])

    def status(self) -> dict | None:
        """``farmem status --json`` of the server (None when not paged)."""
        import json
        r = subprocess.run([*MT, "farmem", "status", str(self.pid), "--json"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        return json.loads(r.stdout) if r.returncode == 0 else None

    def stop(self) -> int:
        """Shut the server down (no save); the exit code of what was started."""
        try:
            self.r.execute_command("SHUTDOWN", "NOSAVE")
        except Exception:        # the connection closes under the command: that is the answer
            pass
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


class Data:
    """What the client set: the generation of every key (the expected values follow)."""

    def __init__(self, keys: int, vsize: int, seed: int = 1):
        self.keys, self.vsize = keys, vsize
        self.gen = np.zeros(keys, np.int64)
        rng = np.random.default_rng(seed)
        self.rng = rng
        # Zipf, theta 0.99, over ranks scrambled over the keys (workload (a)'s skew)
        w = 1.0 / np.arange(1, keys + 1) ** 0.99
        self.cdf = np.cumsum(w / w.sum())
        self.perm = rng.permutation(keys)

    def load(self, r) -> None:
        p = r.pipeline(transaction=False)
        for i in range(self.keys):
            p.set(b"k:%d" % i, value(i, 0, self.vsize))
            if i % 1000 == 999:
                p.execute()
        p.execute()

    def check_all(self, r) -> int:
        """Every key read back and compared; returns how many were checked.

        :raises WrongValue: one differs"""
        for i0 in range(0, self.keys, 1000):
            idx = range(i0, min(self.keys, i0 + 1000))
            got = r.mget([b"k:%d" % i for i in idx])
            for i, g in zip(idx, got):
                if g != value(i, int(self.gen[i]), self.vsize):
                    raise WrongValue(f"k:{i}: {None if g is None else len(g)} bytes, not generation {self.gen[i]}")
        return self.keys

    def window(self, r, seconds: float) -> dict:
        """GET/SET batches for ``seconds``; every GET checked.  Returns ops and time."""
        ops = gets = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            ks = self.perm[np.searchsorted(self.cdf, self.rng.random(BATCH))]
            sets = self.rng.random(BATCH) < 0.05
            p = r.pipeline(transaction=False)
            expect = []             # the generation each GET must see (a key may come twice a batch)
            for k, s in zip(ks.tolist(), sets.tolist()):
                if s:
                    self.gen[k] += 1
                    p.set(b"k:%d" % k, value(k, int(self.gen[k]), self.vsize))
                else:
                    p.get(b"k:%d" % k)
                expect.append(int(self.gen[k]))
            out = p.execute()
            for k, s, g, e in zip(ks.tolist(), sets.tolist(), out, expect):
                if not s:
                    gets += 1
                    if g != value(k, e, self.vsize):
                        raise WrongValue(f"k:{k}: GET gave {None if g is None else len(g)} bytes, "
                                         f"not generation {e}")
            ops += BATCH
        t = time.monotonic() - t0
        return {"ops": ops, "gets_checked": gets, "window_s": t, "ops_per_s": ops / t}


def bgsave(srv: Server, timeout: float = 300) -> float:
    """BGSAVE (Redis forks, the child writes the RDB) and wait for it; seconds taken.

    :raises RuntimeError: the save failed (the child died, or wrote an error)"""
    before = srv.r.lastsave()
    t0 = time.monotonic()
    srv.r.bgsave()
    while True:
        p = srv.r.info("persistence")
        if not p["rdb_bgsave_in_progress"] and srv.r.lastsave() != before:
            break
        if not p["rdb_bgsave_in_progress"] and p["rdb_last_bgsave_status"] != "ok":
            raise RuntimeError(f"BGSAVE failed (rdb_last_bgsave_status {p['rdb_last_bgsave_status']}); "
                               f"see {srv.dir}/server.log")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"BGSAVE did not end in {timeout:.0f} s")
        time.sleep(0.05)
    if srv.r.info("persistence")["rdb_last_bgsave_status"] != "ok":
        raise RuntimeError(f"BGSAVE failed; see {srv.dir}/server.log")
    return time.monotonic() - t0


def check_rdb(rdb: str, data: Data, workdir: str) -> int:
    """Load ``rdb`` into Debian's own redis-server and compare every key; returns the key count.

    :raises WrongValue: a key differs or is missing"""
    d = os.path.join(workdir, "load")
    os.makedirs(d, exist_ok=True)
    shutil.copy(rdb, os.path.join(d, "dump.rdb"))
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", d, "--dbfilename", "dump.rdb"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = _connect(port, p)
        while r.info("persistence").get("loading"):
            time.sleep(0.05)
        n = r.dbsize()
        if n != data.keys:
            raise WrongValue(f"the RDB holds {n} keys, not {data.keys}")
        return data.check_all(r)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def heap_bytes(pid: int) -> int:
    """Bytes of the mappings the pager pages (glibc's heap: main, arenas, mmapped chunks)."""
    sys.path.insert(0, str(ROOT))
    from mappedtrace.farmem.ranges import HeapRanges
    return sum(hi - lo for lo, hi, _ in HeapRanges(pid).current())


def rss_anon(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0
