"""Two small Debian programs of the shared overhead/soundness list
(benchmarks/soundness/debian.py), built from their Debian sources at test time
with the maps, checked against valgrind and LeakSanitizer on a short workload
(issue #11's real-program suite, issue #18's program list).  The rest of the
list runs in the heavy part: ``benchmarks/soundness/run.py bzip2 gzip ncompress
gawk bc`` and ``benchmarks/overhead/run.py --suite``.

- bzip2 1.0.8: its own ``make test`` on the maps build; compress, decompress and a
  live check while it decompresses from a half-fed pipe: every tool's count equal.
- ncompress 4.2.4.6: its own ``make check`` on the maps build; MappedTrace finds
  one object more than valgrind and LSan (``filelist``, compress42.c:732,
  never freed): its only copies are ``main``'s callee-saved registers, saved by
  ``decompress()``'s prologue, which the maps call dead on the stdin path (the
  class of tests/leak_corpus/stale_slot.c).  Asserted from the snapshot, not
  from a number: the conservative root scan of the same snapshot agrees with
  valgrind, and every word that points into each precise-only leak is a stack
  word (or glibc's pointer to the next chunk's header).

Sources: scripts/fetch_sources.sh bzip2 ncompress (skips when absent).  The
whole file, both programs built cold with three compilers: 14 s at load 3.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, need

sys.path.insert(0, str(ROOT / "benchmarks" / "soundness"))   # soundness, programs, debian, diagnose

import debian  # noqa: E402
import programs  # noqa: E402
import soundness  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

#: corpus bytes: short workloads (valgrind runs them ~50× slower)
SIZE = 128 << 10


def _cases(name: str) -> dict[str, soundness.Case]:
    need("clang-22", "valgrind", "vgdb")
    work = Path(tempfile.mkdtemp(prefix=f"debian-ci-{name}-"))
    try:
        debian.selftest(debian.PROGRAMS[name], "mt", lambda m: print(m, file=sys.stderr))
        return {c.scenario: c for c in programs.check_debian(name, work, lambda m: print(m, file=sys.stderr),
                                                             size=SIZE)}
    except soundness.Unavailable as e:
        pytest.skip(f"this host cannot take part: {e}")


@pytest.fixture(scope="module")
def bzip2_cases() -> dict[str, soundness.Case]:
    return _cases("bzip2")


@pytest.fixture(scope="module")
def ncompress_cases() -> dict[str, soundness.Case]:
    return _cases("ncompress")


@pytest.mark.parametrize("scenario", ["compress", "decompress", "live-decompress"])
def test_bzip2_agrees_with_valgrind_and_lsan(bzip2_cases, scenario: str) -> None:
    case = bzip2_cases[scenario]
    print(case.line())
    assert case.mt is not None and case.valgrind is not None, case.notes
    assert not [n for n in case.notes if "exited" in n], case.notes     # the program finished as before
    assert case.agree(), case.line()
    assert case.mt.extra["frames_exact"] >= 1, case.mt.extra


@pytest.mark.parametrize("scenario", ["compress", "decompress", "live-decompress"])
def test_ncompress_differs_only_by_dead_registers(ncompress_cases, scenario: str) -> None:
    """Valgrind and LSan agree with each other; MappedTrace's extra objects are
    explained by the snapshot of the live scenario (test below)."""
    case = ncompress_cases[scenario]
    print(case.line())
    assert case.mt is not None and case.valgrind is not None, case.notes
    assert not [n for n in case.notes if "exited" in n], case.notes
    if case.lsan is not None:
        assert case.lsan.objects == case.valgrind.objects, case.line()
    assert case.mt.objects >= case.valgrind.objects, case.line()    # nothing they find is missed


def test_ncompress_precise_only_leaks_are_held_by_stack_words_alone(ncompress_cases, tmp_path: Path) -> None:
    import diagnose
    prog = debian.PROGRAMS["ncompress"]
    exe, plain = prog.build("mt"), prog.build("plain")
    files = debian.inputs(prog, SIZE, tmp_path, plain)
    cmd, stdin = prog.live.command(exe, files)
    data = Path(stdin).read_bytes()
    core = tmp_path / "nc.core"
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        p.stdin.write(data[: len(data) // 2])
        p.stdin.flush()
        programs._wait_reading(p.pid)
        subprocess.run([MAPPEDTRACE, "snapshot", str(p.pid), "-o", str(core)], check=True, capture_output=True,
                       timeout=300)
    finally:
        p.stdin.write(data[len(data) // 2:])
        p.stdin.close()
        assert p.wait(300) == 0         # decompressed to the end after the snapshot
    precise = soundness.mt_leaks(str(core), tmp_path, "precise")
    conservative = soundness.mt_leaks(str(core), tmp_path, "conservative", ("--roots", "conservative"))
    vg = ncompress_cases["live-decompress"].valgrind
    assert conservative["summary"]["leaked_objects"] == vg.objects
    extra = precise["summary"]["leaked_objects"] - vg.objects
    assert extra >= 0
    rows = [r for r in diagnose.referrers(str(core), limit=16) if r["kind"] == "direct"]
    assert len(rows) == precise["summary"]["direct_objects"]
    for r in rows:
        assert r["nrefs"] <= 16 and r["refs"], r      # something held it once: it is not a lost pointer
        for ref in r["refs"]:
            assert "[stack]" in ref or ref.startswith("allocator metadata"), r
