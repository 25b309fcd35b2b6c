"""Where the tracer's memory goes, phase by phase (issue #13 item 3).

    .venv/bin/python benchmarks/trace/mem_phases.py --objects 4000000 [--roots conservative]
        [--snapshot] [--tree DIR]

Builds samples/scale_heap.c with ``mappedtrace cc -O2``, runs it with N
objects, and analyses it in this process as ``mappedtrace leaks PID`` does
(fork capture, then :func:`mappedtrace.session.analyse`).  Each phase is
wrapped: at its start the peak RSS of this process is reset
(``/proc/self/clear_refs``, value 5) and at its end ``VmHWM`` is read, so the
table gives, per phase, the RSS at its start and end and its own peak, each
also as bytes per heap chunk beyond the captured copy and the interpreter's
memory before the capture.  ``--tree`` measures the code of another checkout
(the phases it does not have are left out).  Nested phases (the
marker's steps) are indented; an outer phase's peak is the largest of its
own and its inner phases'.  Memory, not time, is what this measures.
"""
from __future__ import annotations

import argparse
import functools
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def start_ready(cmd: list[str], timeout: float) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` and wait for its ``ready`` line (as bench_mark.py does, whose
    import would load this checkout's mappedtrace before ``--tree`` is on the path)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"ready\n" not in buf and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            buf += os.read(proc.stdout.fileno(), 4096)
    if b"ready\n" not in buf:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{cmd[0]} did not get ready")
    return proc, buf.decode()


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Phases:
    """Wraps functions; records (depth, name, rss at start, rss at end, peak)."""

    def __init__(self) -> None:
        self.rows: list[list] = []
        self._stack: list[list] = []        # open rows; [.., peak so far]

    def wrap(self, owner, attr: str, name: str | None = None) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def run(*a, **kw):
            # the open phases' peak so far, before this phase resets it
            hwm = _status("VmHWM")
            for r in self._stack:
                r[4] = max(r[4], hwm)
            row = [len(self._stack), name or attr, _status("VmRSS"), 0, 0]
            self.rows.append(row)
            self._stack.append(row)
            _reset_peak()
            try:
                return fn(*a, **kw)
            finally:
                self._stack.pop()
                hwm = _status("VmHWM")
                row[3] = _status("VmRSS")
                row[4] = max(row[4], hwm)
                for r in self._stack:
                    r[4] = max(r[4], hwm, row[4])
        setattr(owner, attr, run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=4_000_000)
    ap.add_argument("--roots", default="precise", choices=("precise", "conservative"))
    ap.add_argument("--snapshot", action="store_true", help="analyse a snapshot file instead of a fork capture")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the code to measure (default: this checkout)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree))
    work = Path(tempfile.mkdtemp(prefix="mem_phases."))
    exe = work / "scale_heap"
    subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", str(exe),
                    str(ROOT / "samples" / "scale_heap.c")], check=True,
                   env=dict(os.environ, PYTHONPATH=str(args.tree)))
    proc, out = start_ready([str(exe), str(args.objects)], 1800)
    info = {l.split()[0]: int(l.split()[1]) for l in out.splitlines() if len(l.split()) == 2}

    import mappedtrace
    import mappedtrace.session as session
    import mappedtrace.trace as trace
    import mappedtrace.heap.glibc as glibc
    import mappedtrace.analyses.leaks as leaks
    import mappedtrace.analyses.containers as containers
    from mappedtrace.roots import RootCollector
    ph = Phases()
    ph.wrap(session, "analyse")
    ph.wrap(glibc.GlibcHeap, "__init__", "heap walk (GlibcHeap)")
    ph.wrap(glibc.GlibcHeap, "_walk_all", "chunk chain (_walk_all)")
    ph.wrap(RootCollector, "collect", "roots")
    ph.wrap(trace, "mark")
    for f in ("_load_heap", "_compile_types", "_scan_roots", "_run_c", "_build_graph"):
        if hasattr(trace, f):
            ph.wrap(trace, f)
    ph.wrap(containers, "derive_types")
    ph.wrap(leaks, "find_leaks")
    base = _status("VmRSS")
    try:
        target_rss = _status_of(proc.pid)
        if args.snapshot:
            from mappedtrace.target.core import open_core
            snap = work / "scale.core"
            subprocess.run([sys.executable, "-m", "mappedtrace", "snapshot", "--mode", "fork", str(proc.pid),
                            "-o", str(snap)], check=True)
            ph.wrap(sys.modules[__name__], "_open", "open snapshot")
            target = _open(open_core, snap)
        else:
            ph.wrap(session, "capture_live", "capture (fork)")
            target = session.capture_live(proc.pid, "fork")
        with target:
            a = session.analyse(target, roots_mode=args.roots)
            copy = int(getattr(target, "captured_bytes", 0) or 0) or (snap.stat().st_size if args.snapshot else 0)
            nchunks = len(a.heap.headers)
            leaked = a.leaks.summary["leaked_objects"]
    finally:
        proc.kill()
        proc.wait()
    mib = lambda b: f"{b / 2**20:8.0f}"
    per = lambda b: f"{(b - base - copy) / nchunks:6.1f}"
    print(f"mem_phases ({mappedtrace.__file__}): {info['objects']} objects, {nchunks} chunks, target RSS {target_rss / 2**20:.0f} MiB, "
          f"copy {copy / 2**20:.0f} MiB, interpreter before {base / 2**20:.0f} MiB, roots {args.roots}"
          f"{', snapshot file' if args.snapshot else ''}; {leaked} leaked (the program: "
          f"{info['leaked_objects']}); load {os.getloadavg()[0]:.1f}")
    print(f"| phase | RSS at start MiB | at end MiB | peak MiB | peak B/chunk beyond copy+base |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for depth, name, r0, r1, peak in ph.rows:
        print(f"| {'  ' * depth}{name} | {mib(r0)} | {mib(r1)} | {mib(peak)} | {per(peak)} |")
    top = max(r[4] for r in ph.rows)
    print(f"peak {top / 2**20:.0f} MiB = {top / target_rss:.2f}× the target's RSS")
    return 0


def _open(open_core, path):
    return open_core(str(path))


def _status_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024


if __name__ == "__main__":
    sys.exit(main())
