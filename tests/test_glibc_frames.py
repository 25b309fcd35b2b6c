"""glibc frames exact by the glibc model (mappedtrace/glibc_model.py, issue #11).

tests/root_areas/glibc_frames.c waits inside glibc in three ways and prints
what it keeps and what it leaks (tests/leak_corpus/truth.h):

- ``read``: main blocks in read(0, buf) with buf dead in main after the call:
  read()'s frame is a checked syscall wrapper, the start-up frames are
  modelled, every frame is exact, and buf is found leaked (the program's own
  liveness: nothing reaches it once read returns); a conservative scan, and
  the relocator's view (``glibc_model=False``), keep it;
- ``threads``: a thread in pthread_cond_wait (wrapper + blocking wait + thread
  start), a thread in read(pipe, buf) with buf dead after (leaked), main in
  read: every frame exact, the waiter and the start arguments kept;
- ``fgets``: fgets gives its buffer back (ownership): the glibc frames from
  read() up to fgets stay scanned (a caller outside the model), and the buffer,
  dead in main after the call, stays reachable.

- ``readlive``: main blocks in read(0, buf) with buf live after the call: the
  relocator (which does not use the model) pins buf, held by read()'s
  argument register, while leak finding sees it only through main's map.

A libc whose build-id is not modelled makes every glibc frame conservative
and the report says so.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, TRUTH, missing_llvm

from mappedtrace import glibc_model, session
from mappedtrace.formats import elf

SRC = ROOT / "tests" / "root_areas" / "glibc_frames.c"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

pytestmark = [pytest.mark.skipif(missing_llvm() is not None,
                                 reason=f"the host cannot build the maps: {missing_llvm()}"),
              pytest.mark.skipif(not Path(LIBC).exists() or elf.build_id(LIBC) not in glibc_model.MODELLED,
                                 reason="this host's glibc is not a modelled build (the model is off: "
                                        "every glibc frame is scanned)")]


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("glibc") / "glibc_frames"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-pthread", f"-I{ROOT / 'tests' / 'leak_corpus'}",
                        "-o", str(out), str(SRC)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _blocked(pid: int, threads: int, timeout: float = 30) -> None:
    """Until every thread of ``pid`` sleeps in a system call (read or futex)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        calls = [(t / "syscall").read_text().split()[0] for t in tasks]
        if len(tasks) == threads and all(c in ("0", "202") for c in calls):
            return
        time.sleep(0.02)
    pytest.fail(f"process {pid} did not block in {threads} threads")


def analyses(exe: Path, mode: str, threads: int, **variants) -> tuple[dict, set[int], set[int]]:
    """``{name: Analysis}`` of one capture of ``exe MODE`` for each set of
    :func:`session.analyse` options, and the (leaked, kept) addresses it printed."""
    p = subprocess.Popen([str(exe), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        _blocked(p.pid, threads)
        target = session.capture_live(p.pid)
        try:
            out = {name: session.analyse(target, **kw) for name, kw in variants.items()}
        finally:
            target.close()
    finally:
        p.stdin.close()
        p.stdout.read()
        rc = p.wait(timeout=60)
        err = p.stderr.read()
    assert rc == 0, err
    found = TRUTH.findall(err)
    return (out, {int(a, 16) for k, a, _s, _h in found if k == "leak"},
            {int(a, 16) for k, a, _s, _h in found if k == "kept"})


def kinds(a: session.Analysis) -> list[list[tuple[str, str]]]:
    """Per thread: (function, kind) of every frame, innermost first."""
    return [[(f.function, k) for f, k in zip(fs, a.roots.frame_kinds[tid])]
            for tid, fs in sorted(a.roots.frames.items())]


def leaked(a: session.Analysis) -> set[int]:
    return {l.address for l in a.leaks.leaks}


def test_read_wrapper_and_start_up_are_exact_and_the_dead_buffer_is_a_leak(exe: Path) -> None:
    out, leak, kept = analyses(exe, "read", 1, model={}, scanned={"glibc_model": False},
                               conservative={"roots_mode": "conservative"})
    a = out["model"]
    [frames] = kinds(a)
    assert frames[0] == ("read", "glibc model: syscall wrapper"), frames
    assert [k for _f, k in frames[-3:]] == ["glibc model: start-up"] * 3, frames
    assert all(k in ("maps", "glibc model: syscall wrapper", "glibc model: start-up") for _f, k in frames), frames
    p = a.precision
    assert p["frames_conservative"] == 0 and p["frames_exact_by_glibc_model"] == 4, p
    assert p["frames_by_model"] == {"syscall wrapper": 1, "start-up": 3}, p
    assert p["glibc_model"] == glibc_model.MODELLED[elf.build_id(LIBC)]
    assert len(leak) == 1 and len(kept) == 1
    assert leaked(a) == leak
    # without the model (the relocator's view) and conservatively: read()'s
    # argument register holds the buffer, so it is reachable; the kept one too
    for name in ("scanned", "conservative"):
        b = out[name]
        assert not leaked(b), (name, leaked(b))
        assert b.precision["frames_exact_by_glibc_model"] == 0
    assert out["scanned"].precision["frames_conservative"] == 4


def test_threads_waiting_in_glibc_are_exact(exe: Path) -> None:
    out, leak, kept = analyses(exe, "threads", 3, model={}, scanned={"glibc_model": False})
    a = out["model"]
    by_thread = kinds(a)
    assert all(k != "scanned" for fr in by_thread for _f, k in fr), by_thread
    waiter = next(fr for fr in by_thread if any(f == "pthread_cond_wait" for f, _k in fr))
    assert ("pthread_cond_wait", "glibc model: blocking wait") in waiter, waiter
    assert waiter[0][1] == "glibc model: syscall wrapper", waiter
    assert [k for _f, k in waiter[-2:]] == ["glibc model: thread start"] * 2, waiter
    p = a.precision
    assert p["frames_conservative"] == 0, p
    assert p["frames_by_model"]["thread start"] == 4 and p["frames_by_model"]["blocking wait"] == 1, p
    assert len(leak) == 1 and len(kept) == 2
    assert leaked(a) == leak, ([hex(x) for x in leaked(a)], [hex(x) for x in leak])
    b = out["scanned"]
    assert not leaked(b), leaked(b)      # the relocator's view: read()'s frame holds the buffer


def test_fread_path_is_exact_and_its_dead_buffer_a_leak(exe: Path) -> None:
    out, leak, _kept = analyses(exe, "fread", 1, model={})
    a = out["model"]
    [frames] = kinds(a)
    assert [k for _f, k in frames[:3]] == ["glibc model: syscall wrapper"] + ["glibc model: stdio read"] * 2, frames
    assert a.precision["frames_conservative"] == 0, a.precision
    assert len(leak) == 1 and leaked(a) == leak


def test_a_glibc_function_outside_the_model_stays_conservative(exe: Path) -> None:
    out, leak, kept = analyses(exe, "fgets", 1, model={})
    a = out["model"]
    [frames] = kinds(a)
    i = next(i for i, (f, _k) in enumerate(frames) if f == "fgets")
    # fgets and every glibc frame above it: scanned (fgets is not modelled, so the
    # frames it called have a caller outside the model)
    assert all(k == "scanned" for _f, k in frames[:i + 1]), frames
    assert not leak and len(kept) == 1
    assert not leaked(a) & kept, leaked(a)


def test_an_unmodelled_glibc_build_is_scanned_and_said(exe: Path, monkeypatch) -> None:
    monkeypatch.setattr(glibc_model, "MODELLED", {})
    glibc_model._model_for.cache_clear()
    try:
        out, leak, _kept = analyses(exe, "read", 1, model={})
    finally:
        glibc_model._model_for.cache_clear()
    a = out["model"]
    p = a.precision
    assert p["frames_exact_by_glibc_model"] == 0 and p["frames_conservative"] == 4, p
    assert p["glibc_model"].startswith("off: libc.so.6 build-id "), p["glibc_model"]
    assert any("not a modelled glibc build" in w for w in a.warnings), a.warnings
    assert not leaked(a) & leak          # the buffer is in read()'s scanned argument register


def test_wrapper_check_rejects_functions_that_call_out() -> None:
    m = glibc_model.model_for(LIBC)
    sym = lambda n: (elf.symbol(elf.debug_file_for(LIBC) or LIBC, n) or elf.symbol(LIBC, n)).addr
    assert m.wrapper(sym("read"))                 # syscall; calls only the cancellation helpers
    assert m.wrapper(sym("nanosleep"))            # calls clock_nanosleep, itself checked
    assert m.wrapper(sym("pthread_cond_wait")) is None     # not a listed wrapper
    assert m.wrapper(sym("malloc")) is None


def test_maps_of_libc_lists_the_model() -> None:
    import json
    r = subprocess.run([MAPPEDTRACE, "maps", LIBC, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr          # still no maps in libc
    m = json.loads(r.stdout)["glibc_model"]
    assert m["version"] == glibc_model.MODELLED[elf.build_id(LIBC)] and m["off"] is None
    assert m["wrappers"]["read"] == "checked" and m["wrappers"]["epoll_wait"] == "checked", m
    assert "pthread_cond_wait" in m["waiters"] and "start_thread" in m["thread_start"], m
    t = subprocess.run([MAPPEDTRACE, "maps", LIBC], capture_output=True, text=True, timeout=120)
    assert "glibc model: " in t.stdout and "syscall wrappers checked by disassembly" in t.stdout, t.stdout


def test_the_relocator_pins_a_buffer_read_is_filling(exe: Path, tmp_path: Path) -> None:
    import json
    import re
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"select": "all"}))
    p = subprocess.Popen([str(exe), "readlive"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        _blocked(p.pid, 1)
        r = subprocess.run([MAPPEDTRACE, "relocate", str(p.pid), "--plan", str(plan), "--json", "--dry-run"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        d = json.loads(r.stdout)
        # leak finding: the same process, the frames exact by the model
        t = session.capture_live(p.pid)
        try:
            a = session.analyse(t)
        finally:
            t.close()
        out, err = p.communicate("hello", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and out.split() == ["5", str(ord("h"))], (out, err)
    buf = int(re.search(r"buffer (0x[0-9a-f]+)", err).group(1), 16)
    pins = {int(x["address"], 16): x["reason"] for x in d["pinned"]}
    assert buf in pins and "conservative root" in pins[buf], (hex(buf), pins)
    assert a.precision["frames_conservative"] == 0 and not a.leaks.leaks, a.precision
