"""The programs of the soundness suite: how each is built, loaded and checked.

Each ``check_<program>(work, log)`` yields :class:`soundness.Case` results, one
per scenario, every tool on the same binary (MappedTrace and valgrind) or the
same sources (LeakSanitizer) and the same workload.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

from soundness import (JOBS, MT, Case, ToolCount, build, free_port, lsan_env, lsan_result, mt_count, mt_leaks,
                       mt_run, need, parse_valgrind, run, source_tree, stop, vg_cmd, vgdb_leak_check, wait_port)

Log = Callable[[str], None]


def _builds(program: str, prefix: str, recipe, recipe_id: str, log: Log) -> dict[str, Path]:
    src = source_tree(prefix)
    return {v: build(program, v, recipe, src, recipe_id, log) for v in ("mt", "lsan")}


def _mt_case(case: Case, report: dict) -> None:
    case.mt, case.mt_groups = mt_count(report)


# -- Redis ---------------------------------------------------------------------

REDIS_RECIPE = "make MALLOC=libc OPTIMIZATION=-O2 BUILD_TLS=no USE_SYSTEMD=no v1"


def _redis_recipe(tree: Path, cc: str, logf: Path) -> Path:
    run(["make", f"-j{JOBS}", "MALLOC=libc", f"CC={cc}", "OPTIMIZATION=-O2", "BUILD_TLS=no", "USE_SYSTEMD=no"],
        tree, logf)
    return tree / "src" / "redis-server"


def _resp(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)


def redis_load(keys: int) -> bytes:
    """``keys`` keys of each of six types (string, list, hash, set, sorted set,
    stream), a tenth of them with a TTL: the RESP stream for ``redis-cli --pipe``."""
    out = []
    for i in range(keys):
        out.append(_resp("SET", f"s:{i}", f"value-{i}-" + "x" * (i % 50)))
        out.append(_resp("RPUSH", f"l:{i}", "a", f"b{i}", "c" * (i % 30)))
        out.append(_resp("HSET", f"h:{i}", "f1", str(i), "f2", f"v{i}"))
        out.append(_resp("SADD", f"t:{i}", "m1", f"m{i}", str(i * 7)))
        out.append(_resp("ZADD", f"z:{i}", str(i), f"m{i}", "1.5", "x"))
        out.append(_resp("XADD", f"x:{i % 997}", "*", "k", str(i)))
        if i % 10 == 0:
            out.append(_resp("EXPIRE", f"s:{i}", "100000"))
    return b"".join(out)


def _redis_cli(exe: Path, port: int, *args: str, stdin: bytes | None = None, timeout: float = 900) -> str:
    r = subprocess.run([str(exe.with_name("redis-cli")), "-p", str(port), *args], input=stdin,
                       capture_output=True, timeout=timeout)
    if r.returncode != 0 and args[:1] != ("SHUTDOWN",):
        raise RuntimeError(f"redis-cli {' '.join(args)}: {r.stderr.decode(errors='replace')[-500:]}")
    return r.stdout.decode(errors="replace")


def _redis_start(cmd: list[str], exe: Path, port: int, keys: int, **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd + ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    wait_port(port, p, timeout=300)
    out = _redis_cli(exe, port, "--pipe", stdin=redis_load(keys))
    if "errors: 0" not in out:
        raise RuntimeError(f"loading Redis failed: {out[-500:]}")
    return p


class _Pinger:
    """PING Redis every 5 ms on its own connection while the block runs: the
    longest wait for an answer is how long the tracer stopped the server."""

    def __init__(self, port: int):
        import threading
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.longest = 0.0
        self.elapsed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.sock.sendall(b"PING\r\n")
            self.sock.recv(64)
            self.longest = max(self.longest, time.monotonic() - t0)
            time.sleep(0.005)

    def __enter__(self) -> "_Pinger":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.monotonic() - self._t0
        time.sleep(0.05)
        self._stop.set()
        self._thread.join(600)
        self.sock.close()


def check_redis(work: Path, log: Log, keys: int = 20000, tools=("mt", "valgrind", "lsan")) -> Iterator[Case]:
    b = _builds("redis", "redis", _redis_recipe, REDIS_RECIPE, log)
    exe = b["mt"]
    live, snap, atexit = Case("redis", "live"), Case("redis", "snapshot"), Case("redis", "exit")
    dbsize = None
    if "mt" in tools:
        port = free_port()
        p = _redis_start([str(exe)], exe, port, keys)
        try:
            dbsize = _redis_cli(exe, port, "DBSIZE").strip()
            with _Pinger(port) as ping:
                _mt_case(live, mt_leaks(str(p.pid), work, "redis-live"))
            live.notes.append(f"Redis answered no PING for {ping.longest * 1000:.0f} ms during `leaks PID` "
                              f"({ping.elapsed:.1f} s)")
            core = work / "redis.core"
            with _Pinger(port) as ping:
                r = subprocess.run([MT, "snapshot", str(p.pid), "-o", str(core)], capture_output=True,
                                   text=True, timeout=900)
            snap.notes.append(f"Redis answered no PING for {ping.longest * 1000:.0f} ms during `snapshot PID` "
                              f"({ping.elapsed:.1f} s)")
            if r.returncode != 0:
                snap.notes.append(f"snapshot failed: {r.stderr[-300:]}")
            else:
                _mt_case(snap, mt_leaks(str(core), work, "redis-snapshot"))
                cons = mt_leaks(str(core), work, "redis-conservative", ("--roots", "conservative"))
                snap.notes.append(f"mappedtrace --roots conservative on the same snapshot: "
                                  f"{cons['summary']['leaked_objects']} leaks")
                core.unlink()
            assert _redis_cli(exe, port, "DBSIZE").strip() == dbsize, "Redis changed under the tracer"
        finally:
            _redis_cli(exe, port, "SHUTDOWN", "NOSAVE")
            stop(p)
        # at exit: under `mappedtrace run`, then SHUTDOWN NOSAVE
        port = free_port()
        js = work / "redis-exit.mt.json"
        p = _redis_start([MT, "run", "--json", str(js), "--", str(exe)], exe, port, keys)
        _redis_cli(exe, port, "SHUTDOWN", "NOSAVE")
        stop(p, timeout=900)
        if js.exists():
            import json
            _mt_case(atexit, json.loads(js.read_text()))
        else:
            atexit.notes.append("mappedtrace run wrote no report")
    if "valgrind" in tools:
        port = free_port()
        vlog = work / "redis.vg.log"
        p = _redis_start(vg_cmd([str(exe)], vlog), exe, port, keys)
        try:
            text = vgdb_leak_check(p.pid)
            (work / "redis.vgdb.log").write_text(text)
            live.valgrind = snap.valgrind = parse_valgrind(text)
        finally:
            _redis_cli(exe, port, "SHUTDOWN", "NOSAVE")
            stop(p, timeout=900)
        atexit.valgrind = parse_valgrind(vlog.read_text())
    if "lsan" in tools:
        port = free_port()
        p = _redis_start([str(b["lsan"])], exe, port, keys, env=lsan_env(work / "redis.lsan"))
        _redis_cli(exe, port, "SHUTDOWN", "NOSAVE")
        stop(p, timeout=900)
        atexit.lsan = lsan_result(work / "redis.lsan")
    for c in (live, snap, atexit):
        c.notes.append(f"{keys} keys of each of 6 types loaded (DBSIZE {dbsize})")
    yield from (live, snap, atexit)
    if "mt" in tools:
        yield _redis_commands(exe, work)


#: commands the main load leaves out because they parse a long double (string2ld ->
#: strtold), then a few that leave state behind (scripts, a pending MULTI, pub/sub)
REDIS_COMMANDS = [("SET", "f", "1.5"), ("INCRBYFLOAT", "f", "2"), ("BLPOP", "nolist", "0.01"),
                  ("EVAL", "local t = {} for i=1,20 do t[i] = i end return #t", "0"),
                  ("SET", "k", "v"), ("GETRANGE", "k", "0", "-1")]


def _redis_commands(exe: Path, work: Path) -> Case:
    """The Redis build serves more commands than the main load sends: each must get
    an answer (the server must not die), then a live check."""
    case = Case("redis", "commands")
    port = free_port()
    p = _redis_start([str(exe)], exe, port, 100)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for cmd in REDIS_COMMANDS:
                try:
                    s.sendall(_resp(*cmd))
                    if not s.recv(4096):
                        raise ConnectionError("connection closed")
                except OSError as e:
                    time.sleep(0.5)
                    case.notes.append(f"redis-server died on {' '.join(cmd)}: {e} (exit status {p.poll()})")
                    return case
        _mt_case(case, mt_leaks(str(p.pid), work, "redis-commands"))
        case.notes.append("every command answered; live check after them")
    finally:
        if p.poll() is None:
            _redis_cli(exe, port, "SHUTDOWN", "NOSAVE")
        stop(p)
    return case


# -- jq ------------------------------------------------------------------------

JQ_RECIPE = "autoreconf -fi; configure --disable-shared --disable-docs --with-oniguruma=yes CFLAGS=-O2; make jq v1"


def _jq_recipe(tree: Path, cc: str, logf: Path) -> Path:
    need("autoreconf", "libtoolize")
    run(["autoreconf", "-fi"], tree, logf)
    run(["./configure", "--disable-shared", "--enable-static", "--disable-docs", "--disable-maintainer-mode",
         "--disable-valgrind", "--with-oniguruma=yes", f"CC={cc}", "CFLAGS=-O2"], tree, logf)
    # the generated headers first: `make jq` alone does not build BUILT_SOURCES
    run(["make", f"-j{JOBS}", "src/builtin.inc", "src/version.h"], tree, logf)
    run(["make", f"-j{JOBS}", "jq"], tree, logf)
    return tree / "jq"


def jq_scenarios() -> dict[str, tuple[list[str], str | None]]:
    """name -> (jq arguments, file for stdin), run in the source tree.  The test
    suite read from stdin without ``-L tests/modules`` (as ``jq --run-tests <
    tests/jq.test``): the tests that import modules fail to compile, and each
    failure leaks its program (jq_test.c:140, 48 objects) — a real leak that
    valgrind and LeakSanitizer agree on."""
    return {"run-tests": (["--run-tests"], "tests/jq.test"),
            "n1": (["-n", "1"], None),
            "badopt": (["--nosuchoption", "."], None)}


def check_jq(work: Path, log: Log, tools=("mt", "valgrind", "lsan"), system: bool = True,
             quick: bool = False) -> Iterator[Case]:
    """jq's scenarios; ``quick``: no valgrind on the test suite (minutes under valgrind)."""
    b = _builds("jq", "jq", _jq_recipe, JQ_RECIPE, log)
    tree = b["mt"].parent
    runs = {name: (b["mt"], b["lsan"], args, stdin) for name, (args, stdin) in jq_scenarios().items()}
    if system and Path("/usr/bin/jq").exists():
        # Debian's own jq: no maps anywhere, libjq.so.1 -> libjq.so.1.0.4 (TLS through a versioned symlink)
        runs["system-n1"] = (Path("/usr/bin/jq"), None, ["-n", "1"], None)
    for name, (mt_exe, lsan_exe, args, stdin) in runs.items():
        case = Case("jq", name)

        def inp():
            return open(tree / stdin, "rb") if stdin else subprocess.DEVNULL
        if "mt" in tools:
            r, report = mt_run([str(mt_exe), *args], work, f"jq-{name}", stdin=inp(), cwd=tree)
            (work / f"jq-{name}.mt.stderr").write_text(r.stderr)
            _mt_case(case, report)
        if "valgrind" in tools and not (quick and name == "run-tests"):
            vlog = work / f"jq-{name}.vg.log"
            subprocess.run(vg_cmd([str(mt_exe), *args], vlog), cwd=tree, stdin=inp(),
                           capture_output=True, timeout=3600)
            case.valgrind = parse_valgrind(vlog.read_text())
        if "lsan" in tools and lsan_exe is not None:
            subprocess.run([str(lsan_exe), *args], cwd=tree, stdin=inp(),
                           capture_output=True, timeout=1800, env=lsan_env(work / f"jq-{name}.lsan"))
            case.lsan = lsan_result(work / f"jq-{name}.lsan")
        yield case
    yield _jq_live(b["mt"], work, tools)


def jq_partial_input(items: int = 20000) -> bytes:
    """The first ``items`` elements of a JSON array, not closed: jq holds them all
    while it waits for the rest."""
    import json
    return b"[" + b",".join(json.dumps({f"k{i}": [i, "s" * (i % 40), {"x": i * 1.5, "y": None}]}).encode()
                           for i in range(items)) + b","


def _jq_live(exe: Path, work: Path, tools) -> Case:
    """jq in the middle of parsing a big array (blocked reading stdin): a live
    check of a heap of ~140 000 jv objects, then the rest of the input."""
    case = Case("jq", "live-parse")

    def start(cmd: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(cmd + ["-c", ".[0]"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        p.stdin.write(jq_partial_input())
        p.stdin.flush()
        return p

    def finish(p: subprocess.Popen) -> None:
        out, _ = p.communicate(b"1]\n", timeout=600)
        if not out.startswith(b'{"k0":'):
            case.notes.append(f"jq's output after the check is wrong: {out[:80]!r}")

    if "mt" in tools:
        p = start([str(exe)])
        time.sleep(2)           # the parser consumes what it has, then blocks in read()
        try:
            _mt_case(case, mt_leaks(str(p.pid), work, "jq-live"))
        finally:
            finish(p)
    if "valgrind" in tools:
        vlog = work / "jq-live.vg.log"
        p = start(vg_cmd([str(exe)], vlog))
        time.sleep(30)          # under valgrind the parse takes a while; vgdb waits for the read()
        try:
            text = vgdb_leak_check(p.pid)
            (work / "jq-live.vgdb.log").write_text(text)
            case.valgrind = parse_valgrind(text)
        finally:
            finish(p)
    return case


# -- memcached -----------------------------------------------------------------

MEMCACHED_RECIPE = "configure CFLAGS=-O2; make memcached v1"


def _memcached_recipe(tree: Path, cc: str, logf: Path) -> Path:
    run(["./configure", f"CC={cc}", "CFLAGS=-O2"], tree, logf)
    run(["make", f"-j{JOBS}", "memcached"], tree, logf)
    return tree / "memcached"


def memcached_load(port: int, items: int) -> None:
    """``items`` sets of assorted sizes, a few gets and deletes, over one connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        f = s.makefile("rwb")
        for i in range(items):
            v = b"v%d-" % i + b"x" * (i % 700)
            f.write(b"set k:%d 0 0 %d noreply\r\n%s\r\n" % (i, len(v), v))
            if i % 100 == 99:
                f.write(b"get k:%d\r\n" % (i - 50))
                f.write(b"delete k:%d noreply\r\n" % (i - 60))
        f.write(b"version\r\n")
        f.flush()
        while True:
            line = f.readline()
            if not line or line.startswith(b"VERSION"):
                break


def _nofile_1024() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def check_memcached(work: Path, log: Log, keys: int = 20000, tools=("mt", "valgrind", "lsan")) -> Iterator[Case]:
    b = _builds("memcached", "memcached", _memcached_recipe, MEMCACHED_RECIPE, log)
    exe = b["mt"]
    # memcached sets RLIMIT_NOFILE to -c both soft and hard; valgrind, which keeps the top 12
    # descriptors for itself, refuses a hard limit other than its own (hard - 12): so every
    # tool runs with a 1024 hard limit and -c 1012
    args = ["-U", "0", "-t", "4", "-m", "64", "-c", "1012", "-l", "127.0.0.1", "-u", "root"]
    live, atexit = Case("memcached", "live"), Case("memcached", "exit")

    def start(cmd: list[str], **kw) -> tuple[subprocess.Popen, int]:
        port = free_port()
        p = subprocess.Popen(cmd + args + ["-p", str(port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, preexec_fn=_nofile_1024, **kw)
        wait_port(port, p, timeout=300)
        memcached_load(port, keys)
        return p, port

    if "mt" in tools:
        p, _ = start([str(exe)])
        try:
            _mt_case(live, mt_leaks(str(p.pid), work, "memcached-live"))
        finally:
            stop(p)
        js = work / "memcached-exit.mt.json"
        p, _ = start([MT, "run", "--json", str(js), "--", str(exe)])
        # SIGTERM to memcached itself (memcached leaves its event loop and returns from
        # main): `mappedtrace run` does not pass a SIGTERM it receives on to its program
        for c in _children(p.pid):
            os.kill(c, signal.SIGTERM)
        try:
            p.wait(600)         # the tracer reports, then exits
        finally:
            stop(p)
        if js.exists():
            import json
            _mt_case(atexit, json.loads(js.read_text()))
        else:
            atexit.notes.append("mappedtrace run wrote no report")
    if "valgrind" in tools:
        vlog = work / "memcached.vg.log"
        p, _ = start(vg_cmd([str(exe)], vlog))
        try:
            text = vgdb_leak_check(p.pid)
            (work / "memcached.vgdb.log").write_text(text)
            live.valgrind = parse_valgrind(text)
        finally:
            stop(p)
        atexit.valgrind = parse_valgrind(vlog.read_text())
    if "lsan" in tools:
        p, _ = start([str(b["lsan"])], env=lsan_env(work / "memcached.lsan"))
        stop(p)
        atexit.lsan = lsan_result(work / "memcached.lsan")
    if atexit.valgrind is not None and atexit.lsan is not None and atexit.valgrind.objects == atexit.lsan.objects:
        # memcached's leaks happen at start-up (storage_init_config), so what both tools
        # find at exit is the truth live too; valgrind's live check misses it while main's
        # dead local still holds the pointer
        live.truth, live.truth_from = atexit.lsan.objects, "valgrind and LSan at exit"
    yield from (live, atexit)


# -- nginx ---------------------------------------------------------------------

NGINX_RECIPE = "configure --with-cc-opt=-O2 (default modules); make v1"
#: workers stay root (``user root``): they read the private work directory, and vgdb
#: reaches them without crossing users
NGINX_CONF = """\
user root;
daemon off;
master_process on;
worker_processes 2;
error_log logs/error.log;
pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root html;
        location / {{ }}
        location /r {{ return 302 /index.html; }}
    }}
}}
"""


def _nginx_recipe(tree: Path, cc: str, logf: Path) -> Path:
    run(["./configure", f"--with-cc={cc}", "--with-cc-opt=-O2", "--prefix=/nonexistent"], tree, logf)
    run(["make", f"-j{JOBS}"], tree, logf)
    return tree / "objs" / "nginx"


def _nginx_prefix(work: Path, name: str, port: int) -> Path:
    d = work / name
    (d / "logs").mkdir(parents=True)
    (d / "html").mkdir()
    (d / "html" / "index.html").write_text("<p>hello</p>\n" * 100)
    (d / "nginx.conf").write_text(NGINX_CONF.format(port=port))
    return d


def nginx_load(port: int, requests: int, hold: int = 300) -> list[socket.socket]:
    """``requests`` HTTP/1.1 requests over four keep-alive connections, then
    ``hold`` connections opened at once, each served one request and left open
    (returned: the caller closes them after the checks).  The open connections
    keep their pools and buffers, so the workers' heaps grow after the fork."""
    paths = [b"/index.html", b"/missing", b"/r", b"/"]
    for c in range(4):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            f = s.makefile("rwb")
            n = requests // 4
            for i in range(n):
                close = b"close" if i == n - 1 else b"keep-alive"
                f.write(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: %s\r\n\r\n" % (paths[i % 4], close))
            f.flush()
            while f.read(65536):
                pass
    held = []
    for i in range(hold):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(b"GET /index.html?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        held.append(s)
    for s in held:      # each response read whole: the request is done, the connection idle
        want, got = None, b""
        while want is None or len(got) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if want is None and b"\r\n\r\n" in got:
                head, _, _ = got.partition(b"\r\n\r\n")
                m = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                want = len(head) + 4 + (int(m[0].split(b":")[1]) if m else 0)
    return held


def _children(pid: int) -> list[int]:
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (t / "children").read_text().split()]
    return sorted(out)


def _nginx_start(cmd: list[str], work: Path, name: str, requests: int, hold: int = 300,
                 **kw) -> tuple[subprocess.Popen, list[int]]:
    port = free_port()
    d = _nginx_prefix(work, name, port)
    p = subprocess.Popen(cmd + ["-p", str(d), "-c", "nginx.conf"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, **kw)
    wait_port(port, p, timeout=300)
    held = nginx_load(port, requests, hold)
    end = time.time() + 60
    while len(_children(p.pid)) < 2 and time.time() < end:
        time.sleep(0.2)
    p.held = held       # closed by _nginx_stop
    return p, _children(p.pid)


def _nginx_stop(p: subprocess.Popen) -> None:
    for s in getattr(p, "held", []):
        s.close()
    stop(p, signal.SIGQUIT)


def check_nginx(work: Path, log: Log, keys: int = 2000, tools=("mt", "valgrind", "lsan")) -> Iterator[Case]:
    """nginx master + 2 workers under ``keys`` requests, every process checked live
    (MappedTrace and valgrind's vgdb) twice: with no connection open (the
    workers' heaps have not grown since the fork) and with 300 connections held
    open (they have).  LeakSanitizer only at exit (SIGQUIT), as a note."""
    b = _builds("nginx", "nginx", _nginx_recipe, NGINX_RECIPE, log)
    names = ["master", "worker0", "worker1"]
    holds = {0: "live", 300: "live-300-connections"}
    cases = {(n, h): Case("nginx", f"{n}-{label}") for h, label in holds.items() for n in names}
    atexit = Case("nginx", "exit-all-processes")
    for hold in holds:
        if "mt" in tools:
            p, workers = _nginx_start([str(b["mt"])], work, f"mt{hold}", keys, hold)
            try:
                for n, pid in zip(names, [p.pid, *workers]):
                    try:
                        _mt_case(cases[n, hold], mt_leaks(str(pid), work, f"nginx-{n}-{hold}"))
                    except RuntimeError as e:
                        cases[n, hold].notes.append(f"mappedtrace failed: {str(e)[-300:]}")
            finally:
                _nginx_stop(p)
        if "valgrind" in tools:
            need("valgrind")
            vlog = work / f"nginx.vg{hold}.%p.log"
            cmd = ["valgrind", "--trace-children=yes", "--leak-check=full", "--errors-for-leak-kinds=none",
                   f"--log-file={vlog}", str(b["mt"])]
            p, workers = _nginx_start(cmd, work, f"vg{hold}", keys // 4, hold)
            try:
                for n, pid in zip(names, [p.pid, *workers]):
                    text = vgdb_leak_check(pid)
                    (work / f"nginx-{n}-{hold}.vgdb.log").write_text(text)
                    cases[n, hold].valgrind = parse_valgrind(text)
            finally:
                _nginx_stop(p)
            atexit.valgrind = _sum(parse_valgrind(f.read_text()) for f in work.glob(f"nginx.vg{hold}.*.log"))
    if "lsan" in tools:
        p, _ = _nginx_start([str(b["lsan"])], work, "lsan", keys, env=lsan_env(work / "nginx.lsan"))
        _nginx_stop(p)
        atexit.lsan = lsan_result(work / "nginx.lsan")
    # At exit only valgrind and LSan take part (`mappedtrace run` follows no fork): their
    # counts go with the master's line as a note, not as a case of their own
    cases["master", 0].notes.append(
        "at exit (SIGQUIT, 300 connections), summed over all processes: valgrind definitely+indirect "
        f"{'-' if atexit.valgrind is None else atexit.valgrind.objects}, LSan "
        f"{'-' if atexit.lsan is None else atexit.lsan.objects} (LSan wrote "
        f"{len(list(work.glob('nginx.lsan.*')))} report(s))")
    yield from cases.values()


def _sum(counts) -> ToolCount:
    t = ToolCount(0, 0, 0)
    for c in counts:
        t.objects += c.objects
        t.bytes += c.bytes
        t.direct += c.direct or 0
    return t


# -- the Debian programs shared with the overhead suite (debian.py) -------------

#: the programs of debian.py that the soundness suite checks (each with a live scenario)
DEBIAN_SOUND = ("bzip2", "gzip", "xz", "zstd", "lz4", "ncompress", "gawk", "bc")
#: corpus bytes of the soundness workloads (valgrind runs them ~50× slower)
DEBIAN_SIZE = 512 << 10


#: ``/proc/PID/syscall`` of a process waiting for its input: read(2) on fd 0, or
#: poll(2)/ppoll(2) (xz polls its stdin before it reads)
_WAITING = (["0", "0x0"], ["7"], ["271"])


def _waiting(pid: int) -> bool:
    """Some thread of ``pid`` waits for input (zstd reads in a thread of its own)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for t in tasks:
        try:
            fields = (t / "syscall").read_text().split()
        except OSError:
            continue
        if any(fields[:len(w)] == w for w in _WAITING):
            return True
    return False


def _wait_reading(pid: int, timeout: float = 120) -> None:
    """Wait until a thread of ``pid`` sleeps in read(2) on its stdin (or polls
    it): it has consumed what it was given and waits for the rest
    (``/proc/PID/task/*/syscall``)."""
    end = time.time() + timeout
    while time.time() < end:
        if _waiting(pid):
            time.sleep(0.2)     # and it stays there
            if _waiting(pid):
                return
        time.sleep(0.1)
    raise RuntimeError(f"process {pid} did not block reading its input within {timeout} s")


def _live_pipe(cmd: list[str], data: bytes, check: Callable[[int], None], case: Case, **kw) -> None:
    """Run ``cmd`` with half of ``data`` on a pipe, ``check(pid)`` once it waits
    for the rest, then the rest: the program must finish as it would have (exit 0)."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    try:
        half = len(data) // 2
        p.stdin.write(data[:half])
        p.stdin.flush()
        _wait_reading(p.pid, timeout=300)
        check(p.pid)
    finally:
        try:
            p.stdin.write(data[half:])
            p.stdin.close()
        except BrokenPipeError:
            pass
        rc = p.wait(900)
        err = p.stderr.read().decode(errors="replace")
        if rc != 0:
            case.notes.append(f"{Path(cmd[0]).name} exited {rc} after the live check: {err[-300:]}")


def check_debian(name: str, work: Path, log: Log, tools=("mt", "valgrind", "lsan"),
                 size: int = DEBIAN_SIZE, scenarios: tuple[str, ...] | None = None) -> Iterator[Case]:
    """A program of debian.py: each workload at exit (``mappedtrace run``, valgrind
    on the same maps build, LSan on its own build), then its live scenario
    (``leaks PID`` and valgrind's vgdb while it waits on a half-fed pipe)."""
    import debian
    prog = debian.PROGRAMS[name]
    b = {v: prog.build(v, log) for v in ("plain", "mt") + (("lsan",) if "lsan" in tools else ())}
    files = debian.inputs(prog, size, work / "inputs", b["plain"])
    for wl in prog.workloads:
        if scenarios is not None and wl.name not in scenarios:
            continue
        case = Case(name, wl.name, known=prog.known.get(wl.name))
        cmd, stdin = wl.command(b["mt"], files)

        def inp():
            return open(stdin, "rb") if stdin else subprocess.DEVNULL
        if "mt" in tools:
            r, report = mt_run(cmd, work, f"{name}-{wl.name}", stdin=inp())
            (work / f"{name}-{wl.name}.mt.stderr").write_text(r.stderr)
            _mt_case(case, report)
        if "valgrind" in tools:
            vlog = work / f"{name}-{wl.name}.vg.log"
            subprocess.run(vg_cmd(cmd, vlog), stdin=inp(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=3600)
            case.valgrind = parse_valgrind(vlog.read_text())
        if "lsan" in tools:
            lcmd, _ = wl.command(b["lsan"], files)
            subprocess.run(lcmd, stdin=inp(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=1800, env=lsan_env(work / f"{name}-{wl.name}.lsan"))
            case.lsan = lsan_result(work / f"{name}-{wl.name}.lsan")
        case.notes.append(f"{' '.join(Path(c).name for c in cmd)}" + (f" < {Path(stdin).name}" if stdin else ""))
        yield case
    if prog.live is not None and (scenarios is None or f"live-{prog.live.name}" in scenarios):
        yield _debian_live(prog, b["mt"], files, work, tools)


def _debian_live(prog, exe: Path, files: dict[str, Path], work: Path, tools) -> Case:
    case = Case(prog.name, f"live-{prog.live.name}", known=prog.known.get(f"live-{prog.live.name}"))
    cmd, stdin = prog.live.command(exe, files)
    data = Path(stdin).read_bytes()
    if "mt" in tools:
        def mt(pid: int) -> None:
            _mt_case(case, mt_leaks(str(pid), work, f"{prog.name}-live"))
        _live_pipe(cmd, data, mt, case)
    if "valgrind" in tools:
        vlog = work / f"{prog.name}-live.vg.log"

        def vg(pid: int) -> None:
            text = vgdb_leak_check(pid)
            (work / f"{prog.name}-live.vgdb.log").write_text(text)
            case.valgrind = parse_valgrind(text)
        _live_pipe(vg_cmd(cmd, vlog), data, vg, case)
    case.notes.append(f"{' '.join(Path(c).name for c in cmd)} < half of {Path(stdin).name} "
                      f"({len(data) // 2} of {len(data)} bytes), checked while it waits for the rest")
    return case
