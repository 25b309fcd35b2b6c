"""Compiler drivers: ``mappedtrace cc`` and ``mappedtrace rustc``.

Both are drop-in replacements that add what pointer maps need and pass every
other argument through untouched:

* ``cc``: clang-22 with ``-fpass-plugin=<plugin>`` when something is
  compiled and ``-g`` unless the user chose a ``-g*`` level.  PIE, PIC and
  ``-shared`` are the user's (or clang's default: PIE on Debian): the maps
  need no dynamic relocation in any of them (FORMAT.md, "Addresses"), and a
  PIE costs the maps nothing more than it costs plain code (measured in
  ``benchmarks/RESULTS.md``, "PIE or not").  With
  ``-flto`` the pass runs inside lld instead (``-fuse-ld=lld
  -Wl,--load-pass-plugin=…``).  Preprocessing-only runs (``-E``, ``-M``,
  ``-MM``) are passed through unchanged.  Section GC (``--gc-sections``)
  is left as the user asked: the pass makes each object keep its maps
  (``.mtmap.keep``, FORMAT.md).
* ``rustc``: rustc with ``-C linker-plugin-lto`` and clang-22 + lld-22 as the
  linker, lld loading the plugin, so the pass runs on the whole crate's
  LLVM IR at link time; rustc's own relocation model (PIE by default);
  ``-g`` unless the user set a debug-info level.

Both take options of their own (removed before the compiler sees the
arguments): ``--settle-points``, loop map points for ``snapshot --settle``,
off by default (``MAPPEDTRACE_LOOP_POINTS=1`` does the same); and
``--alloc-sites``, the allocation site of every object from a direct
``malloc``/``calloc``/``realloc``/``aligned_alloc`` call, recorded in a word
at the object's end (``MAPPEDTRACE_ALLOC_SITES=1``; Rust allocates through
``__rust_alloc`` in a standard library built without the pass, so a Rust
build records no sites).

The commands exit with the compiler's exit code.  ``MAPPEDTRACE_VERBOSE=1``
prints the command line on stderr.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import toolchain as tc
from .errors import ToolchainError

_SOURCE_EXTS = {".c", ".i", ".cc", ".cp", ".cpp", ".cxx", ".c++", ".C", ".ii", ".m", ".mm",
                ".ll", ".bc"}
# Options of clang that take the next argument as their value.
_ARG_OPTS = {"-o", "-x", "-I", "-D", "-U", "-include", "-imacros", "-isystem", "-iquote",
             "-idirafter", "-MF", "-MT", "-MQ", "-L", "-l", "-Xlinker", "-Xclang",
             "-Xassembler", "-Xpreprocessor", "-target", "--target", "-arch", "-isysroot",
             "--sysroot", "-u", "-z", "-T", "-mllvm", "-main-file-name", "-aux-info",
             "-dependency-file", "-serialize-diagnostics"}


def _verbose(cmd: list[str]) -> None:
    if os.environ.get("MAPPEDTRACE_VERBOSE") == "1":
        print("mappedtrace: " + " ".join(cmd), file=sys.stderr)


def _inputs(args: list[str]) -> tuple[list[str], bool]:
    """(positional inputs, whether an explicit ``-x`` language was given)."""
    files: list[str] = []
    has_x = False
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in _ARG_OPTS:
            skip = True
            has_x = has_x or a == "-x"
            continue
        if a.startswith("-x") and len(a) > 2:
            has_x = True
        if a == "-" or not a.startswith("-"):
            files.append(a)
    return files, has_x


def cc_command(args: list[str], plugin: str | None = None, compiler: str = "clang-22") -> list[str]:
    """The clang-22 command line ``mappedtrace cc ARGS…`` runs (``compiler``
    ``clang++-22`` for ``mappedtrace c++``).

    :param args: the user's arguments, unchanged.
    :param plugin: the pass plugin path (default: :func:`toolchain.plugin_path`).
    :returns: the full argv, compiler first.
    :raises ToolchainError: clang-22 or the plugin is missing.
    """
    clang = tc.require_tool(compiler)
    args = list(args)
    flags = set(args)
    if (not args or args == ["-v"] or flags & {"--version", "--help", "-help", "-dumpversion",
                                                "-dumpmachine", "-###"}
            or any(a.startswith("-print-") for a in args)):
        return [clang, *args]
    preprocess_only = "-E" in flags or (("-M" in flags or "-MM" in flags))
    if preprocess_only:
        return [clang, *args]
    files, has_x = _inputs(args)
    compiles = has_x or any(Path(f).suffix in _SOURCE_EXTS or f == "-" for f in files)
    links = not flags & {"-c", "-S", "-fsyntax-only"}
    lto = any(a == "-flto" or a.startswith("-flto=") for a in args)
    extra: list[str] = []
    if compiles and "-fsyntax-only" not in flags:
        plugin = plugin or str(tc.plugin_path())
        extra.append(f"-fpass-plugin={plugin}")
        if not any(a.startswith("-g") for a in args):
            extra.append("-g")
    link_extra: list[str] = []
    if links:
        if lto:
            plugin = plugin or str(tc.plugin_path())
            if not any(a.startswith("-fuse-ld=") for a in args):
                link_extra.append("-fuse-ld=lld")
            link_extra.append(f"-Wl,--load-pass-plugin={plugin}")
    return [clang, *extra, *args, *link_extra]


def rustc_command(args: list[str], plugin: str | None = None) -> list[str]:
    """The rustc command line ``mappedtrace rustc ARGS…`` runs.

    :raises ToolchainError: rustc, clang-22, lld-22 or the plugin is missing.
    """
    rustc = tc.find_tool("rustc")
    if not rustc:
        raise ToolchainError("rustc not found", hint="install Rust 1.95 (built on LLVM 22)")
    args = list(args)
    if not args or any(a in {"--version", "-V", "-vV", "--help", "-h"} or a.startswith("--print")
                       for a in args):
        return [rustc, *args]
    clang = tc.require_tool("clang-22")
    tc.require_tool("ld.lld-22")
    plugin = plugin or str(tc.plugin_path())
    extra = ["-C", "linker-plugin-lto", "-C", f"linker={clang}",
             "-C", "link-arg=-fuse-ld=lld",
             "-C", f"link-arg=-Wl,--load-pass-plugin={plugin}"]
    if not any(a == "-g" or a.startswith("debuginfo") or "debuginfo=" in a for a in args):
        extra.append("-g")
    if not _rust_optimized(args):
        # At opt-level 0, lld's LTO backend builds a pipeline without any
        # extension point (and calls no pre-codegen hook), so name the pass
        # as the whole LTO pipeline (at -O0 it is otherwise empty).
        extra += ["-C", "link-arg=-Wl,--lto-newpm-passes=mappedtrace<O0>"]
    return [rustc, *extra, *args]


def _rust_optimized(args: list[str]) -> bool:
    """Whether the rustc arguments select an opt-level above 0 (last one wins)."""
    level = "0"
    for i, a in enumerate(args):
        if a == "-O":
            level = "2"
        v = None
        if a.startswith("-Copt-level="):
            v = a.split("=", 1)[1]
        elif a == "-C" and i + 1 < len(args) and args[i + 1].startswith("opt-level="):
            v = args[i + 1].split("=", 1)[1]
        if v is not None:
            level = v
    return level != "0"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    _verbose(cmd)
    try:
        return subprocess.run(cmd, env=env).returncode
    except FileNotFoundError as e:
        raise ToolchainError(f"cannot run {cmd[0]}: {e.strerror}") from e
    except KeyboardInterrupt:
        return 130


#: what LLVM's register allocator says when a statepoint asks for more registers than exist
_REGALLOC_FAILURE = b"ran out of registers during register allocation"


#: the retries of :func:`run_cc` when the register allocator gives up: fewer
#: recorded values per call kept in registers, then none
_REGALLOC_RETRIES = (
    ({"MAPPEDTRACE_MAX_REG_VALUES": "2"}, "at most 2 recorded pointers per call in registers"),
    ({"MAPPEDTRACE_DEOPT_IN_REGS": "0"}, "recorded pointers spilled to the stack"),
)


#: the driver's own flag: loop map points for ``snapshot --settle`` (off by default)
SETTLE_POINTS_FLAG = "--settle-points"
#: the driver's own flag: record the allocation site of every object (off by default)
ALLOC_SITES_FLAG = "--alloc-sites"
#: the driver's own flag: allocation sites that never grow a chunk (no word where malloc's slack is under 8 bytes)
ALLOC_SITES_COMPACT_FLAG = "--alloc-sites=compact"
#: the driver's own option: allocation wrappers whose calls are sites (``--alloc-fn=NAME[:KIND],…``)
ALLOC_FN_FLAG = "--alloc-fn"
#: each flag of the drivers' own and the environment the pass reads for it
_DRIVER_FLAGS = {SETTLE_POINTS_FLAG: ("MAPPEDTRACE_LOOP_POINTS", "1"),
                 ALLOC_SITES_FLAG: ("MAPPEDTRACE_ALLOC_SITES", "1"),
                 ALLOC_SITES_COMPACT_FLAG: ("MAPPEDTRACE_ALLOC_SITES", "compact")}


def settle_points_env(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take the driver's own flags out of ``args``.

    * ``--settle-points``: ``MAPPEDTRACE_LOOP_POINTS=1``, a zero-byte map
      point at the header of every loop without a call, so ``snapshot
      --settle`` can step a thread in such a loop to a map point; off by
      default because it costs instructions in tight loops.
    * ``--alloc-sites``: ``MAPPEDTRACE_ALLOC_SITES=1``, every direct call to
      malloc, calloc, realloc or aligned_alloc records its site (type, file,
      line, function) in a word at the end of the object it allocates
      (llvm_pass/AllocSites.cpp, FORMAT.md §4); off by default: it costs 8
      bytes per object and a few instructions per allocation.
    * ``--alloc-sites=compact``: the same, but no chunk grows: a request
      whose chunk has less than 8 bytes of slack (glibc: 16k+1 .. 16k+8
      bytes above 16) gets no word, and its object no site
      (``MAPPEDTRACE_ALLOC_SITES=compact``).
    * ``--alloc-fn=NAME[:KIND][,…]`` (implies ``--alloc-sites``): calls to
      the allocation wrapper NAME are sites too, KIND ``malloc`` (the
      default: ``NAME(size)``), ``calloc`` (``NAME(n, size)``) or ``realloc``
      (``NAME(ptr, size)``).  The wrapper is asked for 8 bytes more: it must
      return memory that is freed without its size (Redis's ``zmalloc``,
      jq's ``jv_mem_alloc``, an ``xmalloc``), never a size-class pool's.
      KIND ``wrapper``: any signature, the request unchanged; the caller
      types what a site inside the wrapper (built with ``--alloc-sites``)
      allocated, even at an offset (Lua's ``luaC_newobj``, freed with its
      size; SQLite's ``sqlite3Malloc``, which returns the chunk + 8).  A NAME
      ending in ``*`` names every function it is a prefix of.

    :returns: the arguments for the compiler and the environment the pass reads.
    :raises ToolchainError: an ``--alloc-fn`` KIND that is none of these.
    """
    env = {_DRIVER_FLAGS[a][0]: _DRIVER_FLAGS[a][1] for a in args if a in _DRIVER_FLAGS}
    fns: list[str] = []
    for a in args:
        if a.startswith(ALLOC_FN_FLAG + "="):
            for item in filter(None, a.split("=", 1)[1].split(",")):
                name, _, kind = item.partition(":")
                if kind not in ("", "malloc", "calloc", "realloc", "wrapper") or not name \
                        or "*" in name[:-1]:
                    raise ToolchainError(f"{ALLOC_FN_FLAG}: {item!r} is not NAME[:malloc|calloc|realloc|wrapper]",
                                         hint="e.g. --alloc-fn=zmalloc,zrealloc:realloc or luaC_newobj:wrapper")
                fns.append(f"{name}:{kind or 'malloc'}")
    if fns:
        env.setdefault("MAPPEDTRACE_ALLOC_SITES", "1")
        env["MAPPEDTRACE_ALLOC_FNS"] = ",".join(fns)
    return [a for a in args if a not in _DRIVER_FLAGS and not a.startswith(ALLOC_FN_FLAG + "=")], env


def run_cc(args: list[str], compiler: str = "clang-22") -> int:
    """Run ``mappedtrace cc``; returns the compiler's exit code.

    Recorded pointers stay where the register allocator puts them (the
    default, cheapest).  Should it run out of registers on some function, the
    compile is retried with at most 2 recorded values per call kept in
    registers, then with all of them spilled to the stack, with a warning
    each time: same maps, slower code.  An environment that already sets
    ``MAPPEDTRACE_MAX_REG_VALUES`` or ``MAPPEDTRACE_DEOPT_IN_REGS`` gets no retry.
    """
    args, points = settle_points_env(args)
    cmd = cc_command(args, compiler=compiler)
    env = {**os.environ, **points}
    if any(os.environ.get(k) is not None for k in ("MAPPEDTRACE_DEOPT_IN_REGS", "MAPPEDTRACE_MAX_REG_VALUES")):
        return _run(cmd, env)
    _verbose(cmd)
    for extra, what in (({}, ""), *_REGALLOC_RETRIES):
        if extra:
            print(f"mappedtrace cc: warning: the register allocator ran out of registers; compiling again "
                  f"with {what} ({' '.join(f'{k}={v}' for k, v in extra.items())})", file=sys.stderr)
        env.update(extra)
        try:
            r = subprocess.run(cmd, stderr=subprocess.PIPE, env=env)
        except FileNotFoundError as e:
            raise ToolchainError(f"cannot run {cmd[0]}: {e.strerror}") from e
        except KeyboardInterrupt:
            return 130
        if r.returncode == 0 or _REGALLOC_FAILURE not in r.stderr:
            break
    sys.stderr.buffer.write(r.stderr)
    sys.stderr.flush()
    return r.returncode


def run_rustc(args: list[str]) -> int:
    """Run ``mappedtrace rustc``; returns the compiler's exit code."""
    args, points = settle_points_env(args)
    return _run(rustc_command(args), {**os.environ, **points})


def _crate_types(args: list[str]) -> set[str]:
    out: set[str] = set()
    for i, a in enumerate(args):
        if a == "--crate-type" and i + 1 < len(args):
            out.update(args[i + 1].split(","))
        elif a.startswith("--crate-type="):
            out.update(a.split("=", 1)[1].split(","))
    return out


def _crate_name(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a == "--crate-name" and i + 1 < len(args):
            return args[i + 1]
    return ""


def wrapper_command(args: list[str], plugin: str | None = None) -> list[str]:
    """The command cargo's ``RUSTC_WRAPPER`` runs: ``args`` is cargo's
    ``RUSTC ARGS…``.  Every crate cargo builds gets the maps (its LLVM
    bitcode goes to the final link, where lld runs the pass over all of them)
    except code that runs inside the build, not in the program: proc-macro
    crates (loaded by rustc) and build scripts; cargo's queries (``-vV``,
    ``--print``) pass through."""
    if not args:
        raise ToolchainError("the rustc wrapper needs the compiler as its first argument",
                             hint="set RUSTC_WRAPPER=mappedtrace-rustc-wrapper and run cargo")
    rustc, rest = args[0], args[1:]
    kinds = _crate_types(rest)
    if "proc-macro" in kinds or _crate_name(rest).startswith("build_script_") or not rest or \
            any(a in {"--version", "-V", "-vV"} or a.startswith("--print") for a in rest) or "-" in rest:
        return [rustc, *rest]
    cmd = rustc_command(rest, plugin)
    cmd[0] = rustc                      # the rustc cargo chose (rustup's toolchain)
    return cmd


def run_wrapper(args: list[str]) -> int:
    """``RUSTC_WRAPPER`` entry point (``mappedtrace-rustc-wrapper RUSTC ARGS…``)."""
    return _run(wrapper_command(args))


def cargo_env(run_leak_check: bool = True, leaks_json: str | None = None) -> dict[str, str]:
    """The environment ``mappedtrace cargo`` gives cargo: the wrapper, and for
    ``run``/``test`` a runner that checks the program's leaks at exit (its
    JSON report to ``leaks_json``)."""
    import shlex
    env = dict(os.environ)
    exe = Path(sys.executable).parent / "mappedtrace-rustc-wrapper"
    env["RUSTC_WRAPPER"] = str(exe) if exe.exists() else "mappedtrace-rustc-wrapper"
    if run_leak_check:
        host = _rust_host()
        if host:
            key = "CARGO_TARGET_" + host.upper().replace("-", "_").replace(".", "_") + "_RUNNER"
            run = [sys.executable, "-m", "mappedtrace", "run",
                   *(["--json", os.path.abspath(leaks_json)] if leaks_json else []), "--"]
            env.setdefault(key, " ".join(shlex.quote(a) for a in run))
    return env


def _rust_host() -> str | None:
    rustc = tc.find_tool("rustc")
    if not rustc:
        return None
    try:
        out = subprocess.run([rustc, "-vV"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("host: "):
            return line.split(": ", 1)[1].strip()
    return None


def run_cargo(args: list[str]) -> int:
    """``mappedtrace cargo [--leaks-json FILE] [--no-leak-check] ARGS…``: cargo
    with the maps (see :func:`cargo_env`); the two options, before cargo's
    own arguments, belong to MappedTrace."""
    leaks_json, check = None, True
    while args and args[0] in ("--leaks-json", "--no-leak-check"):
        if args[0] == "--no-leak-check":
            check, args = False, args[1:]
        elif len(args) < 2:
            raise ToolchainError("--leaks-json needs a file name")
        else:
            leaks_json, args = args[1], args[2:]
    cargo = tc.find_tool("cargo")
    if not cargo:
        raise ToolchainError("cargo not found", hint="install Rust 1.95 (built on LLVM 22)")
    tc.plugin_path()                    # build the plugin once, not inside every rustc
    cmd = [cargo, *args]
    _verbose(cmd)
    try:
        return subprocess.run(cmd, env=cargo_env(check, leaks_json)).returncode
    except KeyboardInterrupt:
        return 130
