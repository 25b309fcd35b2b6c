"""The CFI unwinder against LLDB on real, parked processes.

Method: see ``test_unwind_support``.  Each test builds a sample at test time,
parks it, unwinds every thread with :class:`mappedtrace.unwind.Unwinder` under
ptrace, then lets LLDB attach to the same parked process and compares PCs and
CFAs frame by frame, and the callee-saved registers (plus rsp) that both know.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import mappedtrace
from mappedtrace.target.base import CALLEE_SAVED
from mappedtrace.unwind import UCONTEXT_GREGS, Unwinder

from test_unwind_support import SAMPLES as SAMPLES_DIR, TOTAL, Parked, build_c, cross_check, ours

pytestmark = pytest.mark.timeout(120)

C_VARIANTS = {
    "O0": ["-O0", "-g"],
    "O2": ["-O2", "-g"],
    "O2-nofp": ["-O2", "-g", "-fomit-frame-pointer"],
    "O1-fp": ["-O1", "-g", "-fno-omit-frame-pointer"],
}


def _names(frames) -> list[str]:
    return [f.function or "??" for f in frames]


@pytest.mark.parametrize("variant", sorted(C_VARIANTS))
@pytest.mark.parametrize("mode", ["read", "nanosleep", "futex"])
def test_deep_recursion_matches_lldb(tmp_path, variant, mode):
    exe = build_c(tmp_path, "unwind_deep.c", f"deep-{variant}", *C_VARIANTS[variant])
    depth = 20
    with Parked([exe, str(depth), mode]) as p:
        tally, mine, warnings = cross_check(p.pid, f"deep-{variant}-{mode}")
    print(f"deep {variant} {mode}: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    (frames,) = mine.values()
    names = _names(frames)
    assert names.count("recurse") == depth + 1, names
    assert "main" in names and "block_forever" in names
    assert all(f.how in ("top", "cfi") for f in frames), [f.how for f in frames]
    # registers of frames > 0 are only callee-saved ones, rsp and rip
    for f in frames[1:]:
        assert set(f.regs) <= set(CALLEE_SAVED) | {"rsp", "rip"}, f.regs
    # the CFA grows strictly; each frame's stack range starts where the callee's ends
    for a, b in zip(frames, frames[1:]):
        assert a.sp_high == b.sp_low and b.sp_low < b.sp_high
    assert not warnings, warnings
    assert tally.regs >= 6 * len(frames) // 2


@pytest.mark.parametrize("altstack", [False, True])
def test_signal_handler_frames(tmp_path, altstack):
    exe = build_c(tmp_path, "unwind_signal.c", "sig", "-O2", "-g")
    argv = [exe, "6"] + (["altstack"] if altstack else [])
    with Parked(argv) as p:
        tally, mine, warnings = cross_check(p.pid, f"signal-alt{altstack}")
    print(f"signal altstack={altstack}: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    (frames,) = mine.values()
    names = _names(frames)
    assert "__restore_rt" in names, names
    i = names.index("__restore_rt")
    interrupted = frames[i + 1]
    assert interrupted.how == "signal"
    # every general register comes back from the ucontext_t
    assert set(UCONTEXT_GREGS) - {"eflags"} <= set(interrupted.regs)
    # on_usr1 tail-calls handler_deep at -O2, so it has no frame of its own
    assert names.count("recurse") == 7 and "main" in names and names.count("handler_deep") == 4
    tramp = frames[i]
    # the trampoline frame's stack range holds the signal frame, and no more
    assert 0x200 < tramp.sp_high - tramp.sp_low < 0x4000, hex(tramp.sp_high - tramp.sp_low)
    if altstack:
        # the handler ran on another stack: the walk crossed stacks and went on
        assert abs(interrupted.sp_low - tramp.sp_low) > 1 << 16
        # its CFA is the interrupted rsp, on the other stack; its range ends with the xsave area
        assert tramp.cfa == interrupted.sp_low and tramp.sp_high != tramp.cfa
    else:
        assert tramp.sp_high == tramp.cfa == interrupted.sp_low
    assert not warnings, warnings


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_threads_match_lldb(tmp_path, opt):
    exe = build_c(tmp_path, "unwind_threads.c", "threads", opt, "-g")
    with Parked([exe]) as p:
        tally, mine, warnings = cross_check(p.pid, f"threads{opt}")
    print(f"threads {opt}: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    assert len(mine) == 5
    depths = sorted(_names(fr).count("deep") for tid, fr in mine.items() if tid != p.pid)
    assert depths == [3, 6, 9, 12], depths
    for tid, frames in mine.items():
        names = _names(frames)
        # threads end in clone3 (whose CFI marks rip undefined), the main thread in _start
        assert names[-1] in ("clone3", "_start", "__clone3"), names
    assert not warnings, warnings


def test_frame_pointer_fallback(tmp_path):
    exe = build_c(tmp_path, "unwind_nocfi.c", "nocfi", "-O2", "-fno-asynchronous-unwind-tables",
                  "-fno-unwind-tables", "-fno-omit-frame-pointer")
    with Parked([exe, "5"]) as p:
        tally, mine, warnings = cross_check(p.pid, "nocfi")
    print(f"frame-pointer fallback: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    (frames,) = mine.values()
    fp = [f for f in frames if f.how == "frame-pointer"]
    assert [f.function for f in fp][:5] == ["nocfi_recurse"] * 5, _names(frames)
    for f in fp:
        # only rbp (from the chain), rsp and rip are known: nothing else is guessed
        assert set(f.regs) <= {"rbp", "rsp", "rip"}, f.regs
    assert "main" in _names(frames)
    assert not warnings, warnings


def test_unwind_is_cached_and_quick(tmp_path):
    """Re-unwinding costs little: CFI rows are cached per PC; libc is never fully parsed.

    Bounds are on CPU time (the machine may be shared); wall time is printed.
    """
    import time
    from mappedtrace import unwind
    exe = build_c(tmp_path, "unwind_threads.c", "threads", "-O2", "-g")
    with Parked([exe]) as p, mappedtrace.attach(p.pid) as t:
        unwind._FILES.clear()                  # cold: no file parsed yet in this process
        u = Unwinder(t)
        c0, w0 = time.process_time(), time.perf_counter()
        first = u.unwind_all()
        c1, w1 = time.process_time(), time.perf_counter()
        again = u.unwind_all()
        c2, w2 = time.process_time(), time.perf_counter()
    n = sum(len(f) for f in first.values())
    print(f"{n} frames of {len(first)} threads: cold {1e3 * (c1 - c0):.1f} ms CPU ({1e3 * (w1 - w0):.1f} ms wall), "
          f"cached {1e3 * (c2 - c1):.1f} ms CPU ({1e3 * (w2 - w1):.1f} ms wall)")
    assert {k: [f.pc for f in v] for k, v in first.items()} == {k: [f.pc for f in v] for k, v in again.items()}
    assert c1 - c0 < 1.0 and c2 - c1 < 0.1


def test_depth_bound_and_warnings(tmp_path):
    exe = build_c(tmp_path, "unwind_deep.c", "deep", "-O2", "-g")
    with Parked([exe, "50"]) as p, mappedtrace.attach(p.pid) as t:
        u = Unwinder(t, max_depth=10)
        frames = u.unwind(t.threads[0])
        assert len(frames) == 10
        assert any("depth bound" in w for w in u.warnings), u.warnings
        # the part of the stack not unwound is left to the last frame (for conservative scans)
        assert frames[-1].sp_high == t.mapping_at(frames[-1].sp_low).end
        assert all(f.sp_high == f.cfa for f in frames[:-1])


def test_bad_stack_stops_with_warning(tmp_path):
    """Garbage registers never raise: the walk stops with a one-line warning."""
    from mappedtrace.target.base import ThreadState
    exe = build_c(tmp_path, "unwind_deep.c", "deep", "-O2", "-g")
    with Parked([exe, "3"]) as p, mappedtrace.attach(p.pid) as t:
        th = t.threads[0]
        cases = {
            "unmapped rsp": dict(th.regs, rsp=0x10, rbp=0x20),
            "pc in no module, rbp garbage": dict(th.regs, rip=0x1234, rbp=0xdead0000),
            "pc in no module, rbp absent": {k: v for k, v in th.regs.items() if k != "rbp"} | {"rip": 0x1234},
            # the return address is read from the last word of the stack: garbage
            "rsp at the stack's end": dict(th.regs, rsp=t.mapping_at(th.regs["rsp"]).end - 8),
        }
        for what, regs in cases.items():
            u = Unwinder(t)
            frames = u.unwind(ThreadState(th.tid, regs))
            assert 1 <= len(frames) <= 512, what
            assert u.warnings and all("\n" not in w for w in u.warnings), (what, u.warnings)


def test_rust_std_sleep_and_mutex(tmp_path):
    import shutil
    rustc = shutil.which("rustc")
    if not rustc:
        pytest.skip("rustc is not installed")
    src = os.path.join(os.path.dirname(__file__), "..", "samples", "unwind_rust.rs")
    exe = tmp_path / "urust"
    r = subprocess.run([rustc, "-g", "-C", "opt-level=2", "-o", str(exe), src],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with Parked([str(exe)]) as p:
        tally, mine, warnings = cross_check(p.pid, "rust")
    print(f"rust: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    assert len(mine) == 3
    joined = [" ".join(_names(f)) for f in mine.values()]
    assert any("sleeper" in j for j in joined) and any("waiter" in j for j in joined), joined
    # every level of both recursions is a frame of its own (4 sleeper, 5 waiter)
    assert sum(j.count("sleeper") for j in joined) == 4 and sum(j.count("waiter") for j in joined) == 5
    assert not warnings, warnings


def test_debug_frame_when_no_eh_frame(tmp_path):
    """Code without unwind tables but with -g has only .debug_frame: it is used (no fallback)."""
    exe = build_c(tmp_path, "unwind_nocfi.c", "nocfi-g", "-O2", "-g", "-fno-asynchronous-unwind-tables",
                  "-fno-unwind-tables", "-fomit-frame-pointer")
    with Parked([exe, "5"]) as p:
        tally, mine, warnings = cross_check(p.pid, "debug_frame")
    print(f".debug_frame: {tally}")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    (frames,) = mine.values()
    assert _names(frames).count("nocfi_recurse") == 6
    assert all(f.how == "cfi" for f in frames[1:]), [f.how for f in frames]
    assert not warnings, warnings


def _plt_entry(exe: str, name: str) -> int | None:
    import re
    import shutil
    objdump = shutil.which("llvm-objdump-22") or shutil.which("objdump")
    if not objdump:
        return None
    out = subprocess.run([objdump, "-d", "--section=.plt", exe], capture_output=True, text=True).stdout
    m = re.search(rf"^([0-9a-f]+) <{name}@plt>:", out, re.M)
    return int(m.group(1), 16) if m else None


def test_plt_entry_cfa_expression(tmp_path):
    """A thread just inside a lazy PLT entry: the CFA comes from the DW_CFA_def_cfa_expression."""
    from mappedtrace.target.base import ThreadState
    exe = build_c(tmp_path, "unwind_deep.c", "deep-plt", "-O2", "-g", "-Wl,-z,lazy")
    plt = _plt_entry(exe, "read")
    if plt is None:
        pytest.skip("no objdump, or no read@plt in .plt")
    with Parked([exe, "3", "read"]) as p, mappedtrace.attach(p.pid) as t:
        u = Unwinder(t)
        real = u.unwind(t.threads[0])
        caller = real[1]                           # block_forever, which called read
        assert caller.function == "block_forever"
        bias = u.modules.main.bias
        # the state at read@plt+0 (just called: return address at rsp) and at
        # read@plt+11 (after "push $index": return address at rsp+8)
        for off, rsp in ((0, real[0].cfa - 8), (11, real[0].cfa - 16)):
            regs = dict(caller.regs, rip=plt + bias + off, rsp=rsp)
            fr = Unwinder(t).unwind(ThreadState(t.threads[0].tid, regs))
            assert fr[0].cfa == real[0].cfa, (off, fr[0])
            assert fr[0].function == "read@plt" and fr[0].symbol_offset == off
            assert [f.pc for f in fr[1:]] == [f.pc for f in real[1:]]
            assert [f.regs for f in fr[1:]] == [f.regs for f in real[1:]]


def test_instrumented_frames_hit_map_points(tmp_path):
    """Built with ``mappedtrace cc``: every frame of instrumented code is at a map point, and the
    pointer the maps locate in a callee-saved register (recurse's ``p``) is the caller's ``local``."""
    import sys
    from mappedtrace.formats.maps import BinaryMaps
    from mappedtrace.target.base import DWARF_REGS
    from conftest import require_plugin
    require_plugin()
    exe = str(tmp_path / "deep-mt")
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "cc", "-O2", "-o", exe, str(SAMPLES_DIR / "unwind_deep.c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr.strip()[-300:]
    maps = BinaryMaps.load(exe)
    assert maps.has_maps, "the binary has no maps"
    with Parked([exe, "8", "read"]) as p:
        tally, mine, warnings = cross_check(p.pid, "instrumented")
        with mappedtrace.attach(p.pid) as t:
            u = Unwinder(t)
            frames = u.unwind(t.threads[0])
            bias = u.modules.main.bias

            def values(f, role):
                rec = maps.record_at(f.pc - bias)
                out = []
                for e in rec.entries if rec else ():
                    loc = e.location
                    reg = DWARF_REGS.get(loc.dwarf_reg)
                    if e.role != role or reg not in f.regs:
                        continue
                    base = f.regs[reg]
                    if loc.kind == "Register":
                        out.append(base)
                    elif loc.kind == "Direct":
                        out.append(base + loc.offset)
                    elif loc.kind == "Indirect":
                        out.append(t.read_u64(base + loc.offset))
                return out

            mine_frames = [f for f in frames if f.function in ("recurse", "block_forever", "main")]
            assert mine_frames and all(maps.record_at(f.pc - bias) is not None for f in mine_frames), \
                [(f.function, hex(f.pc - bias)) for f in mine_frames]
            rec_frames = [f for f in frames if f.function == "recurse"]
            checked = 0
            # the deepest level calls block_forever with nothing live; the others
            # keep ``parent`` (= the caller's ``local``) live across the call
            for callee, caller in zip(rec_frames[1:], rec_frames[2:]):
                slots = set(values(caller, "slot"))
                vals = set(values(callee, "value"))
                assert slots & vals, (callee.index, [hex(v) for v in vals], [hex(s) for s in slots])
                checked += 1
            assert checked == 7
    print(f"instrumented: {tally}; {checked} caller/callee pointer pairs found through the maps")
    assert not tally.mismatches, "\n".join(tally.mismatches)


def test_snapshot_unwinds_like_the_live_process(tmp_path):
    """A core-file snapshot (``mappedtrace snapshot``) unwinds to exactly the live frames."""
    import sys
    exe = build_c(tmp_path, "unwind_threads.c", "threads", "-O2", "-g")
    core = tmp_path / "snap.core"
    with Parked([exe]) as p:
        live, _ = ours(p.pid)
        r = subprocess.run([sys.executable, "-m", "mappedtrace", "snapshot", str(p.pid), "-o", str(core)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr.strip()[-300:]
    with mappedtrace.open_snapshot(str(core)) as t:
        u = Unwinder(t)
        snap = {th.tid: u.unwind(th) for th in t.threads}
    assert set(snap) == set(live)
    n = 0
    for tid, frames in live.items():
        assert [(f.pc, f.cfa, f.how, f.function) for f in snap[tid]] == \
            [(f.pc, f.cfa, f.how, f.function) for f in frames]
        for a, b in zip(snap[tid][1:], frames[1:]):
            assert a.regs == b.regs
            n += 1
    print(f"snapshot: {n} frames identical to the live unwind")
    assert not u.warnings, u.warnings


def _corrupt_copy(exe: str, out: str, func: str, what: str) -> None:
    """Copy ``exe`` to ``out`` with the CFI of ``func`` (or .eh_frame_hdr) made malformed."""
    import shutil
    from elftools.elf.elffile import ELFFile
    from mappedtrace.formats.elf import symbol_address
    shutil.copy(exe, out)
    with open(out, "r+b") as f:
        elf = ELFFile(f)
        if what == "hdr-version":
            hdr = elf.get_section_by_name(".eh_frame_hdr")
            pos = hdr["sh_offset"]
            byte = 7
        else:
            eh = elf.get_section_by_name(".eh_frame")
            addr = symbol_address(exe, func)
            fde = next(e for e in elf.get_dwarf_info().EH_CFI_entries()
                       if "initial_location" in e.header and e["initial_location"] == addr)
            # length, CIE pointer, pc begin, pc range (4 bytes each), augmentation length 0
            pos = eh["sh_offset"] + fde.offset + 17
            byte = 0x3F                         # DW_CFA_hi_user: no such instruction
        f.seek(pos)
        f.write(bytes([byte]))


@pytest.mark.parametrize("what", ["fde-insn", "hdr-version"])
def test_malformed_cfi_is_a_warning(tmp_path, what):
    """A malformed FDE gives a one-line warning naming the file, never a traceback;
    a malformed .eh_frame_hdr is skipped (the FDEs are then sorted by a full parse)."""
    exe = build_c(tmp_path, "unwind_deep.c", "deep", "-O2", "-g", "-fno-omit-frame-pointer")
    bad = str(tmp_path / "deep-bad")
    _corrupt_copy(exe, bad, "recurse", what)
    with Parked([bad, "4"]) as p, mappedtrace.attach(p.pid) as t:
        u = Unwinder(t)
        frames = u.unwind(t.threads[0])
    names = _names(frames)
    if what == "hdr-version":
        assert names.count("recurse") == 5 and not u.warnings, (names, u.warnings)
        return
    assert len(u.warnings) == 1 and "deep-bad: .eh_frame+0x" in u.warnings[0], u.warnings
    assert all("\n" not in w for w in u.warnings)
    # recurse's frames went on by the rbp chain (built with frame pointers)
    assert [f.how for f in frames if f.function == "recurse"][1:] == ["frame-pointer"] * 4, \
        [(f.function, f.how) for f in frames]


def test_rust_instrumented(tmp_path):
    """Built with ``mappedtrace rustc``: frames agree with LLDB, and the Rust frames that
    called into std sit at map points."""
    import sys
    from conftest import need, require_plugin
    from mappedtrace.formats.maps import BinaryMaps
    need("rustc")
    require_plugin()
    exe = tmp_path / "urust-mt"
    r = subprocess.run([sys.executable, "-m", "mappedtrace", "rustc", "-g", "-C", "opt-level=2",
                        "-o", str(exe), str(SAMPLES_DIR / "unwind_rust.rs")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr.strip()[-300:]
    maps = BinaryMaps.load(str(exe))
    assert maps.has_maps, "mappedtrace rustc produced no maps"
    hits = total = 0
    with Parked([str(exe)]) as p:
        tally, mine, warnings = cross_check(p.pid, "rust-instrumented")
        with mappedtrace.attach(p.pid) as t:
            u = Unwinder(t)
            bias = u.modules.main.bias
            for th in t.threads:
                for f in u.unwind(th)[1:]:
                    if f.function and ("sleeper" in f.function or "waiter" in f.function):
                        total += 1
                        hits += maps.record_at(f.pc - bias) is not None
    print(f"rust instrumented: {tally}; {hits}/{total} sleeper/waiter frames at map points")
    assert not tally.mismatches, "\n".join(tally.mismatches)
    assert not warnings, warnings
    assert total == 9 and hits == total


def test_zz_report():
    """Print the totals of every cross-check run in this session (see -s)."""
    print(f"\nunwind cross-check total: {TOTAL}")
    assert not TOTAL.mismatches
