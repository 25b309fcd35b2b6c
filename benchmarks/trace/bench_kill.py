"""Kill-safety: SIGKILL the tracer at random points of a snapshot, count target deaths.

    .venv/bin/python benchmarks/trace/bench_kill.py --kills 200 [--mode fork] [--variant spin|idle]

Builds samples/regs_heartbeat.c (a target that checks its own registers,
vector registers, heap pattern and input, and counts heartbeats) and runs a
tracer process that loads everything first, says ``go``, then stops,
captures (``--mode``) and writes a core file.  The tracer is SIGKILLed
after a random delay within the span a whole capture takes (measured
first), so the kills land across attach, the fork injection, the copy and
the write.  After each kill: the target must still run, not be left
stopped, and no copy of it may run on (a fork child must have exited); the
output file must be absent or a complete snapshot, and no other file may be
left in the directory.  At the end the target is asked to stop and must
report every check passed (``ok``).  tests/test_kill_safety.py runs 40 of these.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
from mappedtrace.target.live import process_state  # noqa: E402

#: the tracer: everything imported and loaded first, then one snapshot
TRACER = """
import sys, time
from mappedtrace.target.capture import snapshot_process
from mappedtrace.target.core import write_core
pid, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print("go", flush=True)
t0 = time.perf_counter()
ct = snapshot_process(pid, mode)
write_core(ct, out)
ct.close()
print("done", time.perf_counter() - t0, flush=True)
"""


def build(out: Path) -> Path:
    """regs_heartbeat, built with the C compiler (with AVX2 where the CPU has it)."""
    import shutil
    cc = next(c for c in ("cc", "gcc", "clang-22", "clang") if shutil.which(c))
    flags = ["-mavx2"] if "avx2" in Path("/proc/cpuinfo").read_text() else []
    subprocess.run([cc, "-O2", "-pthread", *flags, "-o", str(out), str(ROOT / "samples" / "regs_heartbeat.c")],
                   check=True)
    return out




def live_copies(exe: Path, keep: int) -> list[int]:
    """Processes running ``exe`` other than ``keep`` (zombies do not count)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != keep:
            try:
                if os.readlink(f"/proc/{d}/exe") == str(exe) and process_state(int(d)) not in ("Z", "X", ""):
                    out.append(int(d))
            except OSError:
                pass
    return out


def _tracer(pid: int, mode: str, out: Path, tree: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", TRACER, str(pid), mode, str(out)], cwd=str(tree),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tree)))
    line = p.stdout.readline()
    if line.strip() != "go":
        p.kill()
        raise RuntimeError(f"the tracer did not start: {line!r} {p.stderr.read()[-500:]}")
    return p


def kill_rounds(exe: Path, variant: str, mode: str, kills: int, seed: int, work: Path,
                tree: Path = ROOT) -> dict:
    """Start the target, kill ``kills`` tracers at random points; returns the tallies.

    ``problems`` lists every check that failed (a dead or stopped target, a
    copy left running, a partial or stray file); empty is the only pass.
    """
    from mappedtrace.errors import MappedTraceError
    from mappedtrace.target.core import open_core
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen:
        p = subprocess.Popen([str(exe), variant], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("ready")
        return p

    target = start()
    problems: list[str] = []
    spans = []
    killed_done = 0
    deaths = 0
    try:
        for _ in range(3):                       # calibrate: a whole capture + write
            t = _tracer(target.pid, mode, work / "cal.core", tree)
            out, err = t.communicate(timeout=120)
            if t.returncode != 0:
                raise RuntimeError(f"a calibration snapshot failed: {err.strip()[-500:]}")
            spans.append(float(out.split()[1]))
        span = statistics.median(spans)
        os.unlink(work / "cal.core")
        for i in range(kills):
            out = work / f"k{i}.core"
            t = _tracer(target.pid, mode, out, tree)
            time.sleep(rng.uniform(0, 1.2 * span))
            t.send_signal(signal.SIGKILL)
            t.wait()
            killed_done += t.returncode == 0
            time.sleep(0.01)
            if target.poll() is not None:
                problems.append(f"kill {i}: the target died ({target.returncode}: "
                                f"{target.stdout.read().strip()!r})")
                deaths += 1
                target = start()            # count every death: go on with a new one
                continue
            st = process_state(target.pid)
            if st in ("t", "T"):
                problems.append(f"kill {i}: the target was left stopped ({st})")
                target.kill()
                target.wait()
                target = start()
                continue
            for _ in range(50):                  # a child without its tracer exits by itself
                copies = live_copies(exe, target.pid)
                if not copies:
                    break
                time.sleep(0.01)
            if copies:
                problems.append(f"kill {i}: copies of the target still run: {copies}")
            stray = [n for n in os.listdir(work) if n != out.name and not n.startswith("k")]
            if stray:
                problems.append(f"kill {i}: files left behind: {stray}")
            if out.exists():
                try:
                    open_core(str(out)).close()
                except MappedTraceError as e:
                    problems.append(f"kill {i}: {out.name} is not a complete snapshot ({e.message})")
                out.unlink()
        target.stdin.write("stop\n")
        target.stdin.close()
        final = target.stdout.read()
        target.wait(timeout=60)
        if target.returncode != 0 or not final.startswith("ok "):
            problems.append(f"the target's own checks failed: {final.strip()!r} (exit {target.returncode})")
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    return {"kills": kills, "span_ms": span * 1e3, "completed_before_kill": killed_done, "deaths": deaths,
            "problems": problems, "final": final.strip() if "final" in locals() else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--mode", choices=["fork", "stop-copy"], default="fork")
    ap.add_argument("--variant", choices=["spin", "idle"], default="spin")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the code to trace with (e.g. an older checkout)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="bench_kill."))
    exe = build(work / "regs_heartbeat")
    r = kill_rounds(exe, args.variant, args.mode, args.kills, args.seed, work / "out", args.tree)
    print(f"{args.kills} tracers SIGKILLed at random within {r['span_ms']:.1f} ms ({args.mode}, "
          f"{args.variant}); {r['completed_before_kill']} had finished first; target: {r['final']}")
    for p in r["problems"]:
        print("PROBLEM:", p)
    print(f"target deaths: {r['deaths']} of {args.kills}")
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
