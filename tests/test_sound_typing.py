"""Sound typing (issue #11 item 1): a type makes the tracer skip a word only
where the program provably never stores a pointer there.

Each program in ``tests/sound_typing/`` keeps pointers where a type, or a
guess from a chunk's size, says there are none, and leaks something beside
them; it prints the truth (``truth leak|kept ADDR``, ``leak_corpus/truth.h``).
Built at test time at -O0 and -O2 and run under ``mappedtrace run``: zero
false leaks, the real leaks found.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, addr as _addr, run_traced

SRC = ROOT / "tests" / "sound_typing"
TRUTH_H = ROOT / "tests" / "leak_corpus"
PROGRAMS = ["radix_node", "size_match", "union_array", "trailing"]


def build(name: str, opt: str, out: Path, *extra: str) -> Path:
    exe = out / f"{name}{opt}"
    srcs = [str(SRC / f"{name}.c")] + list(extra)
    r = subprocess.run([MAPPEDTRACE, "cc", opt, f"-I{TRUTH_H}", "-o", str(exe), *srcs],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def check_exact(exe: Path, tmp: Path) -> dict:
    r, report, truth, kept = run_traced(exe, tmp)
    assert truth and kept, r.stderr[-2000:]
    reported = {_addr(l["address"]): l for l in report["leaks"]}
    missed = sorted(set(truth) - set(reported))
    false = sorted(set(reported) - set(truth))
    assert not missed and not false, (
        f"missed {[hex(a) for a in missed]}, false reports "
        f"{[(hex(a), reported[a]['size'], reported[a]['type']) for a in false]}\n{r.stderr[-3000:]}")
    for a, (size, how) in truth.items():
        assert reported[a]["kind"] == how, (hex(a), reported[a], how)
        assert reported[a]["size"] == size
    assert r.returncode == 23, r.stderr[-2000:]
    return report


@pytest.mark.parametrize("name,opt", [(n, o) for n in PROGRAMS for o in ("-O0", "-O2")])
def test_no_false_leaks(name: str, opt: str, tmp_path: Path) -> None:
    check_exact(build(name, opt, tmp_path), tmp_path)
