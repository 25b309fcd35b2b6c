"""Helpers for the marker tests (no tests here): build and run a sample that
prints its own ground truth, and describe its types as the type table would.

The type table is built from the program's own ``sizeof``/``offsetof``
output (the program is the authority on its layout); chunks are the objects
the program says it allocated.  Those are the marker's *inputs*, not mocks of
the marker.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mappedtrace.formats.mtmap import Slot, TypeInfo

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


S, T = Slot, TypeInfo          # short names for the type tables built here


@dataclass(frozen=True)
class C:                       # shaped like mappedtrace.heap.glibc.Chunk
    address: int
    size: int
    state: str = "in-use"


@dataclass
class Program:
    proc: subprocess.Popen
    sizes: dict[str, int] = field(default_factory=dict)
    offs: dict[tuple[str, str], int] = field(default_factory=dict)
    globals: dict[str, tuple[int, int]] = field(default_factory=dict)
    objs: dict[str, tuple[int, int]] = field(default_factory=dict)
    cls: dict[str, str] = field(default_factory=dict)
    freed: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def addr(self, name: str) -> int:
        return self.objs[name][0]

    def name_of(self) -> dict[int, str]:
        return {a: n for n, (a, _) in self.objs.items()}

    def chunks(self) -> list[C]:
        gone = set(self.freed)
        return [C(a, s) for a, s in self.objs.values() if a not in gone]


def build(src: Path, out: Path, *extra: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang-22")
    if cc is None:
        pytest.skip("no C compiler")
    subprocess.run([cc, "-O0", "-g", "-w", "-o", str(out), str(src), *extra], check=True,
                   capture_output=True, timeout=60)
    return out


def start(exe: Path, *args: str, timeout: float = 20.0) -> Program:
    """Run ``exe`` and read its ground truth up to the line ``ready``."""
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    prog = Program(proc)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"ready\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"{exe.name} did not get ready: {buf[-300:]!r}")
            r, _, _ = select.select([proc.stdout], [], [], left)
            if r:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    continue
                buf += chunk
    except BaseException:
        stop(prog)
        raise
    for line in buf.decode().splitlines():
        prog.lines.append(line)
        w = line.split()
        if not w:
            continue
        if w[0] == "size":
            prog.sizes[w[1]] = int(w[2])
        elif w[0] == "off":
            prog.offs[(w[1], w[2])] = int(w[3])
        elif w[0] == "global":
            prog.globals[w[1]] = (int(w[2], 16), int(w[3]))
        elif w[0] == "obj":
            prog.objs[w[1]] = (int(w[2], 16), int(w[3]))
            if len(w) > 4:
                prog.cls[w[1]] = w[4]
        elif w[0] == "freed":
            prog.freed.append(int(w[1], 16))
    return prog


def stop(prog: Program) -> None:
    if prog.proc.poll() is None:
        prog.proc.send_signal(signal.SIGKILL)
    prog.proc.wait(timeout=10)
    for f in (prog.proc.stdout, prog.proc.stderr):
        if f:
            f.close()


# --- the types of samples/mark_structs.c ---------------------------------
NODE, TREE, FLEX, TAGGED, GLOBALS, NODEP, CHAR = 0x101, 0x102, 0x103, 0x104, 0x105, 0x201, 0x301
SLOT_UNTYPED, SLOT_FUNCTION, SLOT_CONSERVATIVE, SLOT_WEAK = 1, 2, 4, 8
TYPE_HAS_UNION, TYPE_FLEX = 1, 2


def structs_types(p: Program) -> dict[int, T]:
    o = p.offs
    g = lambda f: o[("globals", f)]
    types = [
        T(NODE, "struct node", p.sizes["node"], "struct", 0, (S(o[("node", "next")], NODE),)),
        T(TREE, "struct tree", p.sizes["tree"], "struct", 0,
          (S(o[("tree", "left")], TREE), S(o[("tree", "right")], TREE), S(o[("tree", "parent")], TREE))),
        T(FLEX, "struct flex", p.sizes["flex"], "struct", TYPE_FLEX, (), NODEP, o[("flex", "items")]),
        T(TAGGED, "struct tagged", p.sizes["tagged"], "struct", TYPE_HAS_UNION,
          (S(o[("tagged", "u")], NODE, flags=SLOT_CONSERVATIVE),)),
        T(NODEP, "struct node*", 8, "pointer", 0, (S(0, NODE),)),
        T(CHAR, "char", 1, "scalar"),
        T(GLOBALS, "struct globals", p.sizes["globals"], "struct", 0, (
            S(g("list"), NODE), S(g("tree"), TREE), S(g("interior"), CHAR, flags=SLOT_UNTYPED),
            S(g("ptrarr"), NODEP), S(g("flex"), FLEX), S(g("tagged"), TAGGED), S(g("nodes"), NODE),
            S(g("opaque"), 0, flags=SLOT_UNTYPED), S(g("dangle"), NODE), S(g("amb_tree"), TREE),
            S(g("amb_node"), NODE))),
    ]
    return {t.id: t for t in types}
