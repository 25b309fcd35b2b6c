"""Real-program soundness harness: MappedTrace against valgrind and LeakSanitizer
on the same program and the same workload (issues #11 and #20).

Each program is built twice from its Debian source (scripts/fetch_sources.sh):

- ``mt``: ``mappedtrace cc -gdwarf-4`` at -O2.  The same binary runs under
  MappedTrace and under valgrind (Debian's valgrind 3.19 cannot read DWARF 5),
  so those two see one program;
- ``lsan``: ``clang-22 -fsanitize=leak -gdwarf-4`` at -O2.

Builds live outside the repository in ``$MAPPEDTRACE_REAL`` (default
~/.cache/mappedtrace/real/<program>-<variant>-<key>/), the key hashing the
recipe and the pass plugin, so a changed pass rebuilds and an unchanged one
reuses.  This module only builds, runs and compares; benchmarks/soundness/run.py
is the command line and tests/test_real_programs_soundness.py the CI part.

The three tools are compared by object counts: MappedTrace's leaked objects
(direct + indirect), valgrind's "definitely lost" + "indirectly lost" blocks,
LeakSanitizer's direct + indirect objects.  Valgrind's "possibly lost" (only
interior pointers reach the block) is printed apart: LeakSanitizer and
MappedTrace call such blocks reachable.
"""
from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("MAPPEDTRACE_SRC", Path.home() / ".cache" / "mappedtrace" / "src"))
CACHE = Path(os.environ.get("MAPPEDTRACE_REAL", Path.home() / ".cache" / "mappedtrace" / "real"))
#: the mappedtrace command: the one beside this Python (the venv), else PATH
MT = str(Path(sys.executable).with_name("mappedtrace")) if Path(sys.executable).with_name("mappedtrace").exists() \
    else (shutil.which("mappedtrace") or "mappedtrace")
JOBS = os.environ.get("MAPPEDTRACE_JOBS", "2")
# A relative PYTHONPATH (`PYTHONPATH=. … run.py`) names another tree once a
# build runs in its source directory: the wrapper's `mappedtrace cc` then
# loads the installed checkout's pass, not the one plugin_id() named in the
# cache key (a jq build cached under this tree's plugin had main's code).
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) if p else p
                                               for p in os.environ["PYTHONPATH"].split(os.pathsep))

#: one line of a valgrind leak summary; a monitor command's answer adds deltas: "0 (+0) bytes in 0 (+0) blocks"
VG_LINE = re.compile(r"(definitely lost|indirectly lost|possibly lost|still reachable):\s+([\d,]+)(?: \([+-][\d,]+\))?"
                     r" bytes in ([\d,]+)(?: \([+-][\d,]+\))? blocks")
LSAN_LEAK = re.compile(r"(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\)")


class Unavailable(Exception):
    """This host cannot run the case (a tool or a source is missing): a skip."""


# -- results -------------------------------------------------------------------

@dataclass
class ToolCount:
    """One tool's verdict on one scenario: leaked objects and bytes."""
    objects: int
    bytes: int
    direct: int | None = None       # MappedTrace: direct objects; valgrind: definitely lost
    extra: dict = field(default_factory=dict)   # valgrind's possibly/still reachable, …

    def brief(self) -> str:
        return f"{self.objects}"


@dataclass(frozen=True)
class Known:
    """A documented disagreement: on this scenario MappedTrace reports ``mt_minus_others``
    objects more (negative: fewer) than valgrind and LSan, which agree with each other,
    for ``reason`` (where it is written up and tested).  Any other difference is still
    a DISAGREE: the explanation covers this count and nothing else."""
    mt_minus_others: int
    reason: str


@dataclass
class Case:
    """One scenario of one program, every tool's count, and MappedTrace's leaks
    grouped by (type, size) for the disagreement list."""
    program: str
    scenario: str
    mt: ToolCount | None = None
    valgrind: ToolCount | None = None
    lsan: ToolCount | None = None
    mt_groups: list = field(default_factory=list)   # [(count, type, size, kind)]
    notes: list = field(default_factory=list)

    #: the right count when no tool's own count on this scenario is (e.g. live, where a
    #: conservative check keeps objects whose last pointer sits in a dead stack slot),
    #: and where it comes from
    truth: int | None = None
    truth_from: str = ""
    #: a documented disagreement of this scenario (None: none is known)
    known: Known | None = None

    def agree(self) -> bool:
        if self.truth is not None:
            return self.mt is not None and self.mt.objects == self.truth
        counts = [c.objects for c in (self.mt, self.valgrind, self.lsan) if c is not None]
        return len(counts) >= 2 and len(set(counts)) == 1

    def line(self) -> str:
        def n(c: ToolCount | None) -> str:
            return "-" if c is None else str(c.objects)
        mt = "-" if self.mt is None else f"{self.mt.objects} leaks ({self.mt.direct} direct)"
        vg = n(self.valgrind)
        if self.valgrind is not None and self.valgrind.extra.get("possibly_blocks"):
            vg += f" (+{self.valgrind.extra['possibly_blocks']} possibly)"
        return (f"{self.program}/{self.scenario}: mappedtrace {mt}, valgrind definitely+indirect {vg}, "
                f"LSan {n(self.lsan)}"
                + (f", truth {self.truth} ({self.truth_from})" if self.truth is not None else "")
                + f", {self.verdict()}")

    def explained(self) -> bool:
        """The tools differ exactly as :attr:`known` documents: valgrind and LSan (those
        that ran) agree with each other, and MappedTrace differs from them by the
        documented count."""
        if self.known is None or self.mt is None or self.truth is not None:
            return False
        others = {c.objects for c in (self.valgrind, self.lsan) if c is not None}
        return len(others) == 1 and self.mt.objects - others.pop() == self.known.mt_minus_others

    def verdict(self) -> str:
        """``agree``, ``explained`` (a documented disagreement, :class:`Known`),
        ``DISAGREE``, or ``not compared`` (one tool ran, and no truth)."""
        compared = self.truth is not None or sum(c is not None for c in (self.mt, self.valgrind, self.lsan)) >= 2
        if not compared:
            return "not compared"
        return "agree" if self.agree() else "explained" if self.explained() else "DISAGREE"

    def to_json(self) -> dict:
        def d(c: ToolCount | None):
            return None if c is None else {"objects": c.objects, "bytes": c.bytes, "direct": c.direct, **c.extra}
        return {"program": self.program, "scenario": self.scenario, "agree": self.agree(),
                "verdict": self.verdict(), "known": None if self.known is None else self.known.reason,
                "truth": self.truth, "truth_from": self.truth_from,
                "mappedtrace": d(self.mt), "valgrind": d(self.valgrind), "lsan": d(self.lsan),
                "mappedtrace_leaks_by_type": [list(g) for g in self.mt_groups], "notes": self.notes}


def mt_count(report: dict) -> tuple[ToolCount, list]:
    """A MappedTrace leak JSON as a count, and its leaks grouped by (type, size, kind)."""
    s = report["summary"]
    groups = collections.Counter((l.get("type") or "?", l["size"], l["kind"]) for l in report["leaks"])
    g = sorted(((n, t, sz, k) for (t, sz, k), n in groups.items()), key=lambda x: (-x[0], x[1]))
    p = report.get("precision", {})
    extra = {k: p.get(k) for k in ("frames_exact", "frames_conservative", "roots_exact",
                                   "roots_conservative", "heap_bytes_typed", "heap_bytes_conservative")}
    return ToolCount(s["leaked_objects"], s["leaked_bytes"], s["direct_objects"], extra), g


def parse_valgrind(text: str) -> ToolCount:
    """The last leak summary in valgrind's output (memcheck's ``LEAK SUMMARY``
    at exit, or a ``leak_check`` monitor command's answer)."""
    if "All heap blocks were freed" in text and "LEAK SUMMARY" not in text:
        return ToolCount(0, 0, 0)
    last = text.rfind("LEAK SUMMARY")
    if last < 0:
        raise RuntimeError(f"no leak summary in valgrind's output: {text[-800:]}")
    vals = {k: (int(b.replace(",", "")), int(n.replace(",", ""))) for k, b, n in VG_LINE.findall(text[last:])}
    d = vals.get("definitely lost", (0, 0))
    i = vals.get("indirectly lost", (0, 0))
    p = vals.get("possibly lost", (0, 0))
    r = vals.get("still reachable", (0, 0))
    return ToolCount(d[1] + i[1], d[0] + i[0], d[1],
                     {"indirect": i[1], "possibly_blocks": p[1], "possibly_bytes": p[0],
                      "reachable_blocks": r[1], "reachable_bytes": r[0]})


def parse_lsan(text: str) -> ToolCount:
    if "LeakSanitizer has encountered a fatal error" in text or "does not work under ptrace" in text:
        raise Unavailable(f"LeakSanitizer cannot run here: {text[-300:]}")
    objs = byts = direct = 0
    for kind, b, n in LSAN_LEAK.findall(text):
        objs += int(n)
        byts += int(b)
        if kind == "Direct":
            direct += int(n)
    return ToolCount(objs, byts, direct)


# -- building ------------------------------------------------------------------

def source_tree(prefix: str) -> Path:
    found = sorted(d for d in SRC.glob(f"{prefix}-*/") if (d / "debian").is_dir()) if SRC.is_dir() else []
    if not found:
        raise Unavailable(f"{prefix} sources not in {SRC}: run scripts/fetch_sources.sh {prefix}")
    return found[-1]


def plugin_id() -> str:
    """The pass plugin's path (its name holds the hash of the pass sources)."""
    r = subprocess.run([sys.executable, "-c", "from mappedtrace import toolchain; print(toolchain.plugin_path())"],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"the pass plugin cannot be built: {r.stderr[-500:]}")
    return r.stdout.strip()


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)}")


def compilers() -> dict[str, str]:
    """The C compiler command of each variant (a wrapper script for each:
    nginx's configure wants one executable): ``mt`` (the maps), ``lsan`` and
    ``plain`` (clang-22 alone, the overhead suite's baseline)."""
    need("clang-22")
    CACHE.mkdir(parents=True, exist_ok=True)
    w = CACHE / "bin" / "mtcc"
    w.parent.mkdir(exist_ok=True)
    text = f"#!/bin/sh\nexec {shlex.quote(MT)} cc -gdwarf-4 \"$@\"\n"
    if not w.exists() or w.read_text() != text:
        w.write_text(text)
        w.chmod(0o755)
    lw = CACHE / "bin" / "lsancc"
    ltext = "#!/bin/sh\nexec clang-22 -fsanitize=leak -gdwarf-4 \"$@\"\n"
    if not lw.exists() or lw.read_text() != ltext:
        lw.write_text(ltext)
        lw.chmod(0o755)
    pw = CACHE / "bin" / "plaincc"
    ptext = "#!/bin/sh\nexec clang-22 -gdwarf-4 \"$@\"\n"
    if not pw.exists() or pw.read_text() != ptext:
        pw.write_text(ptext)
        pw.chmod(0o755)
    return {"mt": str(w), "lsan": str(lw), "plain": str(pw)}


def run(cmd: list[str] | str, cwd: Path, log: Path, timeout: float = 3600, env: dict | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {cmd if isinstance(cmd, str) else shlex.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                           shell=isinstance(cmd, str), env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"build step failed in {cwd} (see {log}): {cmd if isinstance(cmd, str) else shlex.join(cmd)}\n"
                           + log.read_text()[-2000:])


def build_dir(program: str, variant: str, src: Path, recipe_id: str) -> Path:
    """Where ``program`` built with ``variant`` is cached (the key: recipe, sources, compiler, plugin)."""
    cc = compilers()[variant]
    h = hashlib.sha256(f"{recipe_id}|{src.name}|{Path(cc).read_text()}|".encode())
    if variant == "mt":
        h.update(plugin_id().encode())
    return CACHE / f"{program}-{variant}-{h.hexdigest()[:12]}"


def build(program: str, variant: str, recipe: Callable[[Path, str, Path], Path], src: Path,
          recipe_id: str, log=print) -> Path:
    """Build ``program`` with ``variant``'s compiler by ``recipe(tree, cc, logfile)``
    (returns the executable) in a copy of ``src``; cached by a key over the
    recipe, the compiler and the plugin.  An exclusive lock keeps two callers
    from building one tree at once."""
    cc = compilers()[variant]
    d = build_dir(program, variant, src, recipe_id)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = d / ".built"
        if stamp.exists():
            return Path(stamp.read_text().strip())
        tree = d / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        log(f"building {program} ({variant}) in {d} …")
        t0 = time.time()
        shutil.copytree(src, tree, symlinks=True)
        exe = recipe(tree, cc, d / "build.log")
        stamp.write_text(str(exe))
        log(f"built {program} ({variant}) in {time.time() - t0:.0f} s")
        return exe


# -- running -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def mt_run(cmd: list[str], work: Path, name: str, stdin=None, timeout: float = 900,
           env: dict | None = None, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """``mappedtrace run --json`` on a command that exits by itself."""
    js = work / f"{name}.mt.json"
    r = subprocess.run([MT, "run", "--json", str(js), "--", *cmd], stdin=stdin, capture_output=True,
                       text=True, errors="replace", timeout=timeout, env=env, cwd=cwd)
    if not js.exists():
        raise RuntimeError(f"mappedtrace run wrote no report ({r.returncode}): {r.stderr[-1500:]}")
    return r, json.loads(js.read_text())


def mt_leaks(target: str, work: Path, name: str, extra: tuple[str, ...] = ()) -> dict:
    """``mappedtrace leaks PID|FILE --json``."""
    js = work / f"{name}.mt.json"
    r = subprocess.run([MT, "leaks", *extra, str(target), "--json", str(js)], capture_output=True,
                       text=True, errors="replace", timeout=900)
    if not js.exists():
        raise RuntimeError(f"mappedtrace leaks {target}: no report ({r.returncode}): {r.stderr[-1500:]}")
    (work / f"{name}.mt.stderr").write_text(r.stderr)
    return json.loads(js.read_text())


VALGRIND = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=none", "--num-callers=12"]


def vg_cmd(cmd: list[str], logfile: Path) -> list[str]:
    need("valgrind")
    return [*VALGRIND, f"--log-file={logfile}", *cmd]


def vgdb_leak_check(pid: int) -> str:
    """valgrind's own live leak check of a running process (memcheck's
    ``leak_check`` monitor command through vgdb)."""
    need("vgdb")
    r = subprocess.run(["vgdb", f"--pid={pid}", "leak_check", "full", "kinds", "definite,indirect", "any"],
                       capture_output=True, text=True, timeout=900)
    return r.stdout + r.stderr


def lsan_env(prefix: Path) -> dict:
    """The environment of a LeakSanitizer run whose report goes to ``prefix.PID``."""
    return dict(os.environ, LSAN_OPTIONS=f"report_objects=1:detect_leaks=1:exitcode=23:log_path={prefix}")


def lsan_result(prefix: Path) -> ToolCount:
    """LeakSanitizer's report of a run with :func:`lsan_env` (none written: no leak)."""
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    return parse_lsan("\n".join(f.read_text(errors="replace") for f in files))


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 300) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def workdir(program: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"soundness-{program}-"))
    return d
