"""The Rust leak corpus: programs in tests/leak_corpus_rust/ with known leaks, built
with ``mappedtrace rustc`` (-O and -C opt-level=0), run under ``mappedtrace run``
and compared EXACTLY with the ground truth each program prints about itself
(``truth leak ADDR SIZE direct|indirect|cycle`` / ``truth kept ADDR`` on stderr,
the format of tests/leak_corpus/truth.h; ``cycle`` marks the members of one
unreachable cycle: exactly one of them is its entry, reported direct, the others
indirect).

Rust's std is linked as precompiled machine code, not through the pass, so its
statics (e.g. std's THREAD_INFO, a BTreeMap allocated at start-up) are not in
``.mtmap``: the roots scan a mapped module's writable data outside its typed
globals conservatively, and such blocks are reachable, as Valgrind says
("still reachable").  ``test_global_of_code_without_maps_is_a_root`` is the
minimal C form of that case.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import MAPPEDTRACE, ROOT, addr as _addr, have, run_traced

CORPUS = ROOT / "tests" / "leak_corpus_rust"
PROGRAMS = ["box_leak_static", "forget_box", "rc_cycle", "forgotten_vec", "frees_all"]
OPTS = {"O": ["-O"], "O0": ["-C", "opt-level=0"]}

pytestmark = pytest.mark.skipif(not (have("rustc") and have("clang-22") and have("ld.lld-22")),
                                reason="rustc, clang-22 or ld.lld-22 not installed")


def build(name: str, opt: str, out: Path) -> Path:
    exe = out / f"{name}-{opt}"
    r = subprocess.run([MAPPEDTRACE, "rustc", *OPTS[opt], "--edition=2021", "-o", str(exe),
                        str(CORPUS / f"{name}.rs")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def compare(report: dict, truth: dict, kept: set) -> tuple[list[int], list[int], list[str]]:
    """(missed addresses, false reports, other mismatches) of a report against the truth."""
    reported = {_addr(l["address"]): l for l in report["leaks"]}
    missed = sorted(set(truth) - set(reported))
    false = sorted(set(reported) - set(truth))
    bad: list[str] = []
    cycle_direct = 0
    for a, (size, how) in truth.items():
        got = reported.get(a)
        if got is None:
            continue
        if got["size"] != size:
            bad.append(f"{a:#x}: size {got['size']} != {size}")
        if how == "cycle":
            cycle_direct += got["kind"] == "direct"
        elif got["kind"] != how:
            bad.append(f"{a:#x}: kind {got['kind']} != {how}")
    if any(h == "cycle" for _, h in truth.values()) and cycle_direct != 1:
        bad.append(f"{cycle_direct} direct members of the cycle, want exactly 1")
    if kept & set(reported):
        bad.append(f"kept objects reported: {[hex(a) for a in kept & set(reported)]}")
    return missed, false, bad


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Binaries built once for the module, lazily (a build failure fails only its own tests)."""
    return {"dir": tmp_path_factory.mktemp("rust_corpus")}


def _exe(built: dict, name: str, opt: str, tmp: Path) -> Path:
    if (name, opt) not in built:
        built[(name, opt)] = build(name, opt, built["dir"])
    return built[(name, opt)]


@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("name", PROGRAMS)
def test_rust_corpus_exact(name: str, opt: str, built, tmp_path: Path) -> None:
    exe = _exe(built, name, opt, tmp_path)
    r, report, truth, kept = run_traced(exe, tmp_path)
    assert "truth" in r.stderr or name == "frees_all", r.stderr[-2000:]
    missed, false, bad = compare(report, truth, kept)
    reported = {_addr(l["address"]): l for l in report["leaks"]}
    detail = (f"missed {[hex(a) for a in missed]}, false reports "
              f"{[(hex(a), reported[a]['size'], reported[a]['type']) for a in false]}, {bad}\n"
              f"{r.stderr[-3000:]}")
    assert not missed and not bad and not false, detail
    s = report["summary"]
    assert s["leaked_objects"] == len(truth)
    assert s["direct_objects"] == sum(1 for _, h in truth.values() if h in ("direct",)) + \
        (1 if any(h == "cycle" for _, h in truth.values()) else 0)
    assert r.returncode == (23 if truth else 0), r.stderr[-2000:]
    p = report["precision"]
    assert p["frames_exact"] > 0


@pytest.mark.parametrize("name", ["forget_box", "forgotten_vec", "rc_cycle"])
def test_rust_conservative_baseline_finds_the_truth(name: str, built, tmp_path: Path) -> None:
    """The LeakSanitizer-like baseline (every root word scanned) on the same
    binaries: these programs keep no stale copies of the leaked pointers at
    exit, so it too must report exactly the truth."""
    exe = _exe(built, name, "O", tmp_path)
    r, report, truth, kept = run_traced(exe, tmp_path, "--roots", "conservative")
    missed, false, bad = compare(report, truth, kept)
    assert not missed and not false and not bad, (missed, false, bad, r.stderr[-2000:])


def test_rust_leaks_are_typed(built, tmp_path: Path) -> None:
    """The forgotten Box<Record> is typed from the maps (its allocation site's
    type), its String buffer is not (a u8 array)."""
    exe = _exe(built, "forget_box", "O", tmp_path)
    _, report, truth, _ = run_traced(exe, tmp_path)
    direct = [l for l in report["leaks"] if _addr(l["address"]) in truth and l["kind"] == "direct"]
    assert len(direct) == 1
    assert "Record" in direct[0]["type"], direct[0]


MIXED_LIB = "static void *keep;               /* a global of code built WITHOUT the pass */\n" \
            "void stash(void *p) { keep = p; }\n" \
            "void *kept(void) { return keep; }  /* read somewhere, so -O2 keeps the static */\n"
MIXED_MAIN = "#include <stdlib.h>\nvoid stash(void *p);\nint main(void) { stash(malloc(100)); return 0; }\n"


def test_global_of_code_without_maps_is_a_root(tmp_path: Path) -> None:
    """The minimal C reproduction of the std-static false report: a heap block
    kept only in a static of an object compiled by plain clang, linked into a
    ``mappedtrace cc`` executable, is reachable (no leak must be reported)."""
    (tmp_path / "lib.c").write_text(MIXED_LIB)
    (tmp_path / "main.c").write_text(MIXED_MAIN)
    r = subprocess.run(["clang-22", "-O2", "-c", str(tmp_path / "lib.c"), "-o", str(tmp_path / "lib.o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "mixed"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", str(tmp_path / "main.c"), str(tmp_path / "lib.o"),
                        "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r, report, _, _ = run_traced(exe, tmp_path)
    assert report["summary"]["leaked_objects"] == 0, report["leaks"]
    assert r.returncode == 0


def test_rust_forgotten_vec_types_are_not_wrong(built, tmp_path: Path) -> None:
    """A leaked object's inferred type is right or absent (unk<size>): here the
    Box<Item> blocks may be 'Item' or unknown, the Vec buffer unknown (its Vec
    is gone), the String buffers unknown or named by their holder, an Item's
    String; never a vtable type, never '()'.  (Before 00d2c3d the size
    heuristic typed the Vec buffer as a closure's vtable type and then the
    Box<Item> blocks as '()'.)"""
    exe = _exe(built, "forgotten_vec", "O", tmp_path)
    _, report, truth, _ = run_traced(exe, tmp_path)
    wrong = [(hex(_addr(l["address"])), l["size"], l["type"], l.get("type_source"))
             for l in report["leaks"] if _addr(l["address"]) in truth
             and not (l["type"].startswith("unk") or l["type"].endswith("Item")
                      or (l["type"] == "alloc::string::String buffer" and l["type_source"] == "holder"))]
    assert not wrong, wrong


def test_rust_type_names_are_module_qualified(built, tmp_path: Path) -> None:
    """Rust type names in the map carry their module path (from the debug
    info's namespaces): the crate's own struct and std's containers."""
    from mappedtrace.formats.maps import BinaryMaps
    names = {t.name for t in BinaryMaps.load(str(_exe(built, "forget_box", "O", tmp_path))).types.values()}
    assert "forget_box::Record" in names and "Record" not in names, sorted(names)
    assert "alloc::string::String" in names, sorted(names)
    assert any(n.startswith("alloc::vec::Vec<u8") for n in names), sorted(names)
