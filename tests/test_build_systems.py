"""MappedTrace in the builds users already have: ``mappedtrace c++``, ``mappedtrace
cargo`` (a workspace with a path dependency, debug and release), and the README's
recipes for CMake, Meson and autotools.  Every program prints its own truth
(tests/leak_corpus/truth.h format); each leak report must match it exactly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from conftest import MAPPEDTRACE, ROOT, assert_exact, need, run_traced

HERE = ROOT / "tests" / "build_systems"
TRUTH_DIR = ROOT / "tests" / "leak_corpus"
BIN = Path(sys.executable).parent


def _own_frames_exact(report: dict) -> None:
    p = report["precision"]
    assert p["frames_exact"] >= 1 and p["frames_conservative"] == 0, p


def test_cxx_vector_and_shared_ptr_cycle(tmp_path):
    need("clang++-22")
    exe = tmp_path / "cxx_leaks"
    r = subprocess.run([MAPPEDTRACE, "c++", "-O2", f"-I{TRUTH_DIR}", "-o", str(exe), str(HERE / "cxx_leaks.cpp")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r, report, truth, kept = run_traced(exe, tmp_path)
    assert r.returncode == 23 and "exceptions work" in r.stdout, r.stderr[-2000:]
    assert len(truth) == 9
    assert_exact(report, truth, kept)
    _own_frames_exact(report)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    need("cargo", "rustc")
    d = tmp_path_factory.mktemp("cargo") / "ws"
    shutil.copytree(HERE / "cargo_ws", d)
    return d


def _truth_of(stderr: str) -> tuple[dict, set]:
    return conftest.truth_of(stderr)


@pytest.mark.parametrize("profile", ["debug", "release"])
def test_cargo_run_checks_leaks_of_every_crate(workspace, profile, tmp_path):
    js = tmp_path / f"{profile}.json"
    r = subprocess.run([MAPPEDTRACE, "cargo", "--leaks-json", str(js), "run", "--offline", "-q",
                        *(["--release"] if profile == "release" else [])],
                       cwd=workspace, capture_output=True, text=True, timeout=900)
    assert r.returncode == 23, r.stderr[-3000:]            # cargo passes the leak check's exit code on
    truth, kept = _truth_of(r.stderr)
    assert len(truth) == 5
    report = json.loads(js.read_text())
    assert_exact(report, truth, kept)
    _own_frames_exact(report)
    types = {l["type"] for l in report["leaks"]}
    assert {"app::Record", "store::Shelf"} <= types, types  # both crates carry maps


def test_plain_cargo_with_the_wrapper(workspace):
    """The documented entry point for users who keep plain cargo."""
    env = dict(os.environ, RUSTC_WRAPPER=str(BIN / "mappedtrace-rustc-wrapper"),
               CARGO_TARGET_DIR=str(workspace / "target-wrapper"))
    r = subprocess.run(["cargo", "build", "--offline", "-q"], cwd=workspace, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = subprocess.run([MAPPEDTRACE, "maps", str(workspace / "target-wrapper" / "debug" / "app"), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert m.returncode == 0, m.stderr
    names = {f["name"] for f in json.loads(m.stdout)["functions"] if f.get("status") in ("instrumented", "partial")}
    assert any("forget_record" in n for n in names) and any("forget_shelf" in n for n in names)


def _run_and_check(exe: Path, tmp_path: Path) -> None:
    r, report, truth, kept = run_traced(exe, tmp_path)
    assert r.returncode == 23, r.stderr[-2000:]
    assert len(truth) == 2
    assert_exact(report, truth, kept)
    _own_frames_exact(report)


def test_cmake_recipe(tmp_path):
    need("cmake")
    b = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(HERE / "cproj"), "-B", str(b), f"-DTRUTH_DIR={TRUTH_DIR}",
                        f"-DCMAKE_C_COMPILER={BIN / 'mappedtrace-cc'}", "-DCMAKE_BUILD_TYPE=Release"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["cmake", "--build", str(b)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _run_and_check(b / "cproj", tmp_path)


def test_meson_recipe(tmp_path):
    need("ninja")
    meson = shutil.which("meson") or str(BIN / "meson")
    if not os.path.exists(meson):
        pytest.skip("not installed on this host: meson")
    native = tmp_path / "mappedtrace.ini"
    native.write_text(f"[binaries]\nc = '{BIN / 'mappedtrace-cc'}'\n")
    b = tmp_path / "build"
    r = subprocess.run([meson, "setup", "--native-file", str(native), f"-Dtruth_dir={TRUTH_DIR}",
                        "--buildtype=release", str(b), str(HERE / "cproj")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([meson, "compile", "-C", str(b)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _run_and_check(b / "cproj", tmp_path)


def test_autotools_recipe(tmp_path):
    need("autoreconf", "make")
    src = tmp_path / "src"
    shutil.copytree(HERE / "cproj", src)
    r = subprocess.run(["autoreconf", "-fi"], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(["./configure", f"CC={BIN / 'mappedtrace-cc'}", f"CPPFLAGS=-I{TRUTH_DIR}", "CFLAGS=-O2"],
                       cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run(["make"], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _run_and_check(src / "cproj", tmp_path)
