"""The leak corpus: C programs with known leaks, each run under ``mappedtrace run``
and compared EXACTLY with the ground truth the program prints about itself
(``truth leak ADDR SIZE direct|indirect`` / ``truth kept ADDR`` on stderr)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, addr as _addr, assert_exact, have, run_traced

CORPUS = ROOT / "tests" / "leak_corpus"
PROGRAMS = ["dropped_list", "cycle", "tree_parent", "interior", "stale_slot", "threads_tls", "no_leaks",
            "tail_frame", "environ_copy", "fatal_exit"]
#: stale_slot needs the slot to stay a plain alloca: -O0 only
OPT_LEVELS = {"stale_slot": ["-O0"]}


def build(name: str, opt: str, out: Path, folder: Path = CORPUS) -> Path:
    exe = out / f"{name}{opt}"
    r = subprocess.run([MAPPEDTRACE, "cc", opt, "-pthread", f"-I{CORPUS}", "-o", str(exe),
                        str(folder / f"{name}.c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("name,opt", [(n, o) for n in PROGRAMS for o in OPT_LEVELS.get(n, ["-O0", "-O2"])])
def test_corpus_exact(name: str, opt: str, tmp_path: Path) -> None:
    exe = build(name, opt, tmp_path)
    r, report, truth, kept = run_traced(exe, tmp_path)
    assert_exact(report, truth, kept, r.stderr[-3000:])
    s = report["summary"]
    assert s["leaked_objects"] == len(truth)
    assert s["direct_objects"] == sum(1 for _, h in truth.values() if h == "direct")
    assert r.returncode == (23 if truth else 0), r.stderr[-2000:]
    p = report["precision"]
    assert p["frames_exact"] + p["frames_conservative"] > 0
    assert "roots_exact" in p and "heap_bytes_typed" in p


def test_frame_of_a_tail_call_is_exact(tmp_path: Path) -> None:
    """relay() calls finish() in tail position: the pass leaves the call plain
    (n_tail_calls), the backend cannot make it a jump (stack arguments), and at
    exit the tracer finds relay's frame at a return address with no record.
    The epilogue there shows nothing is live: the frame is exact, not scanned
    (also on the exit path, where a caller's frame would be scanned: main
    returns right after relay too)."""
    import json
    import capstone
    from mappedtrace.formats import elf
    exe = build("tail_frame", "-O2", tmp_path)
    m = json.loads(subprocess.run([MAPPEDTRACE, "maps", "--json", str(exe)], capture_output=True,
                                  text=True, check=True).stdout)
    relay = next(f for f in m["functions"] if f["name"] == "relay")
    assert relay["n_tail_calls"] == 1 and relay["n_callsites"] == 0, relay
    code = elf.code_at(str(exe), relay["address"], relay["size"])
    insns = [i.mnemonic for i in capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm(code, 0)]
    assert "call" in insns, f"the backend made the call a jump ({insns}): the case is not exercised"
    _r, report, truth, _kept = run_traced(exe, tmp_path)
    assert {_addr(l["address"]) for l in report["leaks"]} == set(truth)
    p = report["precision"]
    assert p["frames_conservative"] == 0 and p["frames_unsettled"] == 0, p
    assert p["frames_exit_path_scanned"] == 0, p


def test_epilogue_recognised() -> None:
    from mappedtrace.formats.maps import _is_epilogue
    yes = ["c3", "4883c408c3", "5b5dc3", "c9c3", "4883c4105b415c415ec3", "90c3", "488d65f05b5dc3"]
    no = ["", "4889c3c3", "85c0c3", "e800000000c3", "ff2500000000", "488b0424c3", "5b" * 9 + "c3"]
    for h in yes:
        assert _is_epilogue(bytes.fromhex(h), 0x1000), h
    for h in no:
        assert not _is_epilogue(bytes.fromhex(h), 0x1000), h


def test_typed_leaks_are_named(tmp_path: Path) -> None:
    exe = build("dropped_list", "-O2", tmp_path)
    _, report, truth, _ = run_traced(exe, tmp_path)
    assert {l["type"] for l in report["leaks"]} == {"struct node"}


def test_conservative_baseline_misses_the_stale_slot_leak(tmp_path: Path) -> None:
    """The leak hidden by a stale word in a dead stack slot of a live frame: the
    precise mode reports it, the conservative mode (LeakSanitizer-like) does not."""
    exe = build("stale_slot", "-O0", tmp_path)
    _, precise, truth, _ = run_traced(exe, tmp_path)
    _, cons, _, _ = run_traced(exe, tmp_path, "--roots", "conservative")
    assert precise["summary"]["leaked_objects"] == len(truth) == 1
    assert cons["summary"]["leaked_objects"] == 0


@pytest.mark.skipif(not have("clang-22"), reason="clang-22 missing")
def test_leaksanitizer_on_the_same_program(tmp_path: Path) -> None:
    """Record what LeakSanitizer says on stale_slot (-O0): it misses the leak."""
    exe = tmp_path / "stale_lsan"
    r = subprocess.run(["clang-22", "-O0", "-g", "-fsanitize=leak", f"-I{CORPUS}", "-o", str(exe),
                        str(CORPUS / "stale_slot.c")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"LeakSanitizer runtime unavailable: {r.stderr[-200:]}")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    print("LeakSanitizer on stale_slot -O0:", "no leak reported" if "SUMMARY" not in r.stderr else r.stderr)
    assert "SUMMARY: LeakSanitizer" not in r.stderr


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_thread_inside_abort(opt: str, tmp_path: Path) -> None:
    """A live process whose only thread is inside abort() (its SIGABRT handler
    waits): the caller of abort has no record at that call (the pass leaves
    calls of fatal functions plain), its frame is scanned conservatively, no
    leak is invented and the process runs on."""
    import json
    import select
    # (not in the corpus: it never ends on its own, and every corpus test runs its programs to the end)
    exe = build("in_abort", opt, tmp_path, ROOT / "tests" / "live_inputs")
    err = tmp_path / "err"
    with open(err, "w") as ef:
        p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=ef)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 30)
        assert ready and p.stdout.readline() == b"ready\n"
        js = tmp_path / "leaks.json"
        r = subprocess.run([MAPPEDTRACE, "leaks", str(p.pid), "--json", str(js)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 23) and "Traceback" not in r.stderr, r.stderr[-2000:]
        report = json.loads(js.read_text())
        from conftest import truth_of
        truth, kept = truth_of(err.read_text())
        assert len(truth) == 3 and len(kept) == 2
        # conservative frames (fail's, and libc's abort and raise) may hold stale
        # copies of the dropped list: a leak may be missed, none may be invented
        reported = {_addr(l["address"]): l for l in report["leaks"]}
        assert set(reported) <= set(truth) and not kept & set(reported), r.stdout[-3000:]
        assert all(reported[a]["size"] == truth[a][0] for a in reported)
        assert report["precision"]["frames_conservative"] >= 1
        assert p.poll() is None                      # still parked in its handler
    finally:
        p.kill()
        p.wait(timeout=10)
