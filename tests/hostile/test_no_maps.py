"""A binary built without the pass is named at the top of every report (issue #12 item 5).

The same program built with plain clang-22 (no maps) and with ``mappedtrace
cc`` (maps): the first gets a note naming the executable, saying what is
conservative and how to rebuild, in the text report, the leak JSON
(``notes``, ``precision.without_maps``) and the graph JSON; the second none
(system libraries such as glibc are listed in ``modules_without_maps`` only).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _hostile import Server, mt, plain_server_exe, server_exe


@pytest.mark.parametrize("build", ["plain", "maps"])
def test_report_says_which_binary_has_no_maps(build: str, tmp_path: Path) -> None:
    exe = plain_server_exe() if build == "plain" else server_exe()
    s = Server(exe)
    try:
        r = mt("leaks", str(s.pid), "--json", str(tmp_path / "l.json"))
        assert r.returncode == 23, r.stderr[-3000:]
        g = mt("graph", str(s.pid), "-o", str(tmp_path / "g.json"))
        assert g.returncode == 0, g.stderr[-3000:]
        assert s.running()
    finally:
        s.kill()
    rep = json.loads((tmp_path / "l.json").read_text())
    graph = json.loads((tmp_path / "g.json").read_text())
    noted = [w["module"] for w in rep["precision"]["without_maps"]]
    if build == "maps":
        assert rep["notes"] == [] and noted == [] and graph["notes"] == []
        assert "note:" not in r.stdout
        return
    assert noted == [str(exe)]
    w = rep["precision"]["without_maps"][0]
    assert w["role"] == "executable" and w["frames"] >= 1 and w["writable_bytes"] > 0
    assert len(rep["notes"]) == 1 and str(exe) in rep["notes"][0] and "mappedtrace cc" in rep["notes"][0]
    assert graph["notes"] == rep["notes"]
    # the text report says it first
    first = r.stdout.lstrip().splitlines()[0]
    assert first.startswith("note: the executable") and exe.name in r.stdout.split("leaked object")[0]
    assert f"mappedtrace: note: the executable {exe}" in g.stderr


def test_a_user_library_without_maps_is_named(tmp_path: Path) -> None:
    """A library of the user's (not under a system library directory) built
    without the pass, holding heap objects in its data: named as a library;
    glibc (a system library) is not."""
    import subprocess
    from conftest import MAPPEDTRACE, need
    need("clang-22")
    src = Path(__file__).parent / "plain_lib.c"
    lib = tmp_path / "libplain.so"
    subprocess.run(["clang-22", "-O2", "-g", "-shared", "-fPIC", "-DLIB", "-o", str(lib), str(src)],
                   check=True, timeout=300)
    exe = tmp_path / "uses_plain"
    r = subprocess.run([MAPPEDTRACE, "cc", "-O2", "-o", str(exe), str(src), str(lib),
                        f"-Wl,-rpath,{tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = mt("leaks", str(p.pid), "--json", str(tmp_path / "l.json"))
        assert r.returncode == 0, r.stderr[-3000:]      # the items are reachable from the library's data
        assert p.poll() is None
    finally:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    rep = json.loads((tmp_path / "l.json").read_text())
    w, = rep["precision"]["without_maps"]
    assert w["module"] == str(lib) and w["role"] == "library" and w["writable_bytes"] > 0
    assert "libc.so.6" in rep["precision"]["modules_without_maps"]
    assert len(rep["notes"]) == 1 and rep["notes"][0].startswith(f"the library {lib} ")
