"""Snapshot cores complete and consistent (issue #12 item 7).

* gdb reads every thread's XSAVE area from our cores without a warning: the
  ymm (and, where the CPU has AVX-512, zmm and k) registers hold exactly the
  pattern the program put there (it prints it).
* ``leaks --json`` and ``graph -o F.json`` on one core report the same
  precision figures (one definition of an exact frame: RootStats').
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from _hostile import mt, server_core
from conftest import need
from mappedtrace.target import xsave

HERE = Path(__file__).resolve().parent


def test_cpuid_stub_is_the_code_it_says() -> None:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(xsave.CPUID_CODE, 0)]
    assert text == ["push rbx", "mov eax, edi", "mov ecx, esi", "mov r8, rdx", "cpuid",
                    "mov dword ptr [r8], eax", "mov dword ptr [r8 + 4], ebx", "mov dword ptr [r8 + 8], ecx",
                    "mov dword ptr [r8 + 0xc], edx", "pop rbx", "ret"]
    # leaf 0: the vendor string, as /proc/cpuinfo names it
    r = xsave.cpuid(0)
    if r is None:
        pytest.skip("this host refuses an executable page (W^X): CPUID cannot run")
    vendor = b"".join(x.to_bytes(4, "little") for x in (r[1], r[3], r[2])).decode()
    assert vendor in Path("/proc/cpuinfo").read_text()


def test_to_standard_moves_amd_avx512_components() -> None:
    """An area in AMD's layout (opmask at 832: no MPX) moves to Intel's offsets."""
    amd = {2: (576, 256), 5: (832, 64), 6: (896, 512), 7: (1408, 1024)}
    area = bytearray(2432)
    for c, (off, n) in amd.items():
        area[off:off + n] = bytes([c]) * n
    area[:512] = bytes(range(256)) * 2
    area[xsave.XCR0_OFFSET:xsave.XCR0_OFFSET + 8] = (0xE7).to_bytes(8, "little")
    out, records = xsave.to_standard(bytes(area), amd)
    assert len(out) == 2688 and out[:576] == area[:576]
    for c, (off, n) in xsave.STANDARD.items():
        if c in amd:
            assert out[off:off + n] == bytes([c]) * n, c
    assert out[960:1088] == bytes(128)       # MPX: absent, zero
    assert records == [(2, 256, 576), (5, 64, 1088), (6, 512, 1152), (7, 1024, 1664)]
    # Intel's own layout is left as it is; an unknown component keeps the CPU's layout
    same, _ = xsave.to_standard(out, dict((c, xsave.STANDARD[c]) for c in amd))
    assert same == out
    odd = {**amd, 7: (1408, 1000)}
    kept, rec = xsave.to_standard(bytes(area), odd)
    assert kept == bytes(area) and (7, 1000, 1408) in rec


def test_gdb_reads_the_whole_xsave_area(tmp_path: Path) -> None:
    need("clang-22", "gdb")
    exe = tmp_path / "xsave_regs"
    subprocess.run(["clang-22", "-O2", "-o", str(exe), str(HERE / "xsave_regs.c")], check=True, timeout=120)
    avx512 = " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    p = subprocess.Popen([str(exe)] + (["avx512"] if avx512 else []), stdout=subprocess.PIPE, text=True)
    try:
        words = []
        for line in p.stdout:
            if line.strip() == "ready":
                break
            words.append(int(line, 16))
        core = tmp_path / "x.core"
        r = mt("snapshot", str(p.pid), "-o", str(core))
        assert r.returncode == 0, r.stderr
        assert p.poll() is None
        exprs = ["p/x $ymm7.v4_int64"] + (["p/x $zmm7.v8_int64", "p/x $k3"] if avx512 else [])
        cmd = ["gdb", "-nx", "-batch"]
        for e in exprs:
            cmd += ["-ex", e]
        g = subprocess.run(cmd + ["-c", str(core), str(exe)], capture_output=True, text=True, timeout=120)
        out = g.stdout + g.stderr
        assert "too small" not in out and "unavailable" not in out, out[-3000:]
        vals = re.findall(r"^\$\d+ = (.*)$", out, re.M)
        assert len(vals) == len(exprs), out[-3000:]
        assert [int(x, 16) for x in vals[0].strip("{}").split(",")] == words[:4]
        if avx512:
            assert [int(x, 16) for x in vals[1].strip("{}").split(",")] == words
            assert int(vals[2], 16) == words[0] & 0xFFFF
        # the layout note describes what was written
        from mappedtrace.target.core import open_core
        with open_core(str(core)) as c:
            t = c.threads[0]
            assert t.xstate_layout and all(off + n <= len(t.xstate) for _, n, off in t.xstate_layout)
    finally:
        p.kill()
        p.wait()


def test_leaks_and_graph_report_the_same_precision(tmp_path: Path) -> None:
    core = str(server_core())
    r1 = mt("leaks", core, "--json", str(tmp_path / "l.json"))
    assert r1.returncode in (0, 23), r1.stderr
    r2 = mt("graph", core, "-o", str(tmp_path / "g.json"))
    assert r2.returncode == 0, r2.stderr
    lp = json.loads((tmp_path / "l.json").read_text())["precision"]
    gp = json.loads((tmp_path / "g.json").read_text())["precision"]
    timings = {"read_s", "mark_s", "total_s"}
    assert {k: v for k, v in lp.items() if k not in timings} == {k: v for k, v in gp.items() if k not in timings}
    assert lp["frames_exact"] + lp["frames_conservative"] >= 1
