"""``mappedtrace doctor``: is this machine ready for the main job?"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

import click

from .. import toolchain as tc
from ..errors import ToolchainError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = True  # needed for the main job (the demo)


def _ptrace_check() -> Check:
    scope_file = "/proc/sys/kernel/yama/ptrace_scope"
    scope = None
    if os.path.exists(scope_file):
        try:
            scope = int(open(scope_file).read().strip())
        except (OSError, ValueError):
            scope = None
    cap = False
    try:
        for line in open("/proc/self/status"):
            if line.startswith("CapEff:"):
                cap = bool(int(line.split()[1], 16) & (1 << 19))  # CAP_SYS_PTRACE
    except OSError:
        pass
    if scope in (None, 0):
        return Check("ptrace permission", True,
                     f"yama ptrace_scope={scope if scope is not None else 'absent'}; "
                     f"CAP_SYS_PTRACE {'held' if cap else 'not held (own processes only)'}")
    if scope == 1:
        ok = cap
        return Check("ptrace permission", ok,
                     f"yama ptrace_scope=1; CAP_SYS_PTRACE {'held' if cap else 'not held'}"
                     + ("" if ok else ": only descendants can be traced (mappedtrace run works; attaching to a PID does not)"),
                     "run as root, or: sysctl kernel.yama.ptrace_scope=0", needed=False)
    return Check("ptrace permission", cap, f"yama ptrace_scope={scope}",
                 "sysctl kernel.yama.ptrace_scope=0 (as root); scope 3 needs a reboot")


def _glibc_check() -> Check:
    name, ver = platform.libc_ver()
    try:
        ok = name == "glibc" and tuple(int(x) for x in ver.split(".")[:2]) >= (2, 26)
    except ValueError:
        ok = False
    known = ver == "2.36"
    return Check("glibc", ok, f"{name} {ver}" + ("" if known else " (the heap walker is checked on 2.36; other versions use heuristics)"),
                 "the heap walker needs glibc ≥ 2.26 (tcache)")


def run_checks(build: bool = False) -> list[Check]:
    checks: list[Check] = []
    for tool in ("clang-22", "clang++-22", "ld.lld-22", "llvm-readobj-22"):
        p = tc.find_tool(tool)
        checks.append(Check(tool, bool(p), p or "not found", tc.APT_HINT))
    try:
        so = tc.plugin_path(build=build)
        checks.append(Check("pass plugin", True, str(so)))
    except ToolchainError as e:
        checks.append(Check("pass plugin", False, e.message,
                            e.hint or "mappedtrace doctor --build"))
    p = tc.lldb_python_path()
    if p:
        try:
            tc.import_lldb()
            checks.append(Check("LLDB Python module", True, p, needed=False))
        except ToolchainError as e:
            checks.append(Check("LLDB Python module", False, e.message, e.hint or "", needed=False))
    else:
        checks.append(Check("LLDB Python module", False, "lldb-22 -P found nothing",
                            "apt-get install -y lldb-22 python3-lldb-22", needed=False))
    checks.append(_ptrace_check())
    checks.append(_glibc_check())
    dbg = any(os.path.isdir(d) for d in ("/usr/lib/debug/.build-id",))
    checks.append(Check("glibc debug symbols", dbg,
                        "libc6-dbg present: exact heap roots" if dbg else "absent: heap walker uses heuristics",
                        "apt-get install -y libc6-dbg", needed=False))
    checks.append(Check("rustc", bool(tc.find_tool("rustc")), tc.find_tool("rustc") or "not found",
                        "install Rust 1.95 (LLVM 22) for 'mappedtrace rustc'", needed=False))
    checks.append(Check("python", sys.version_info >= (3, 11), platform.python_version(),
                        "Python 3.11 or newer"))
    return checks


@click.command(help="Check the toolchain, the pass plugin, LLDB and ptrace permission.")
@click.option("--build", is_flag=True, help="Build the pass plugin if it is missing.")
def command(build: bool) -> int:
    checks = run_checks(build)
    for c in checks:
        mark = "ok " if c.ok else ("MISSING" if c.needed else "warn")
        line = f"[{mark:^7}] {c.name}: {c.detail}"
        if not c.ok and c.fix:
            line += f"  → fix: {c.fix}"
        click.echo(line)
    bad = [c for c in checks if c.needed and not c.ok]
    if bad:
        click.echo(f"not ready: {', '.join(c.name for c in bad)}", err=True)
        return 1
    click.echo("ready")
    return 0
