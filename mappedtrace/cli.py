"""The ``mappedtrace`` command line.

Each command lives in its own module ``mappedtrace.commands.<name>`` that
defines ``command`` (a :class:`click.Command`); modules are imported only when
their command runs, so one command's missing dependency never breaks another.
Errors of type :class:`MappedTraceError` become a one-line message, an optional
hint and a non-zero exit code; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import sys

import click

from .errors import MappedTraceError, NotBuiltYet

#: name → (module, one-line help, issue that builds it)
COMMANDS: dict[str, tuple[str, str]] = {
    "cc": ("cc", "Compile C with pointer maps: a drop-in CC (clang-22 + the pass)."),
    "c++": ("cxx", "Compile C++ with pointer maps: a drop-in CXX (clang++-22 + the pass)."),
    "rustc": ("rustc", "Compile Rust with pointer maps (linker-plugin-lto + the pass)."),
    "cargo": ("cargo", "Run cargo with pointer maps; 'run' and 'test' check leaks at exit."),
    "run": ("run", "Run a program and report its leaks at exit, like LeakSanitizer."),
    "snapshot": ("snapshot", "Write a core-file snapshot of a running process."),
    "leaks": ("leaks", "Report leaks of a running process (PID) or a snapshot file."),
    "maps": ("maps", "Decode and print the pointer maps of a binary."),
    "graph": ("graph", "Export the heap object graph as JSON or Graphviz dot."),
    "top": ("top", "Objects, shallow and retained bytes by type and by holder (dominator tree)."),
    "why": ("why", "Why an object is alive: shortest paths from the roots to it."),
    "diff": ("diff", "Growth between two snapshots: by type, by holder, suspects."),
    "watch": ("watch", "Snapshot a live process at intervals and report its growth."),
    "query": ("query", "Query the heap with SQL: objects, edges, roots, types as tables."),
    "view": ("view", "Write a self-contained HTML heap viewer (histogram, dominator tree, paths)."),
    "farmem": ("farmem", "Far memory: run a program with part of its heap in Redis or files, paged back on touch."),
    "relocate": ("relocate", "Move heap objects of a running process, rewriting every exact pointer to them."),
    "compact": ("compact", "Pack a fragmented heap so whole pages go back to the system (vs malloc_trim)."),
    "doctor": ("doctor", "Check the toolchain, the pass plugin, LLDB and ptrace permission."),
}

_debug = False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        modname, help_ = COMMANDS[name]
        try:
            mod = importlib.import_module(f"mappedtrace.commands.{modname}")
        except ModuleNotFoundError as e:
            if e.name != f"mappedtrace.commands.{modname}":
                raise
            return _not_built(name, help_)
        return mod.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text without importing every command module.
        rows = [(n, h) for n, (_, h) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _not_built(name: str, help_: str) -> click.Command:
    @click.command(name=name, help=help_ + " (not built yet)",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def stub() -> None:
        raise NotBuiltYet(f"'mappedtrace {name}' is not built in this version yet",
                          hint="see the open issues; 'mappedtrace --help' lists what works")
    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="mappedtrace")
def cli(debug: bool) -> None:
    """MappedTrace: exact pointers of C and Rust programs, traced from outside."""
    global _debug
    _debug = debug


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    global _debug
    args = list(sys.argv[1:] if argv is None else argv)
    _debug = "--debug" in args[:1]
    try:
        rv = cli.main(args=args, prog_name="mappedtrace", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except MappedTraceError as e:
        if _debug:
            raise
        print(f"mappedtrace: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"mappedtrace: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":     # bare 'mappedtrace': the help, as before
            e.show()
            return e.exit_code
        # one line and a hint, like every other error (click's own form is a
        # usage block of four lines); --help still prints the full usage
        msg = _one_line(e.format_message())
        opt = getattr(e, "option_name", "") or ""
        if isinstance(e, click.NoSuchOption) and opt[1:].isdigit():
            msg = f"invalid PID {opt}: a PID is a positive number (read as an option here)"
        print(f"mappedtrace: error: {msg}", file=sys.stderr)
        cmd = e.ctx.command_path if e.ctx is not None else "mappedtrace"
        if cmd == "mappedtrace":        # an option of a command, refused while parsing it
            sub = next((a for a in args if a in COMMANDS), None)
            cmd = f"mappedtrace {sub}" if sub else cmd
        print(f"mappedtrace: hint: '{cmd} --help' shows the arguments and options", file=sys.stderr)
        return e.exit_code
    except click.ClickException as e:
        print(f"mappedtrace: error: {_one_line(e.format_message())}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        print("mappedtrace: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mappedtrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug of ours: one line, the traceback with --debug
        if _debug:
            raise
        print(f"mappedtrace: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("mappedtrace: hint: run again with --debug for the traceback, and report it", file=sys.stderr)
        return 70


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _tool_main(name: str) -> int:
    return main([name, *sys.argv[1:]])


def cc_main() -> int:
    """``mappedtrace-cc``: one executable for build systems that want CC to be a path."""
    return _tool_main("cc")


def cxx_main() -> int:
    """``mappedtrace-c++``: the same for CXX."""
    return _tool_main("c++")


def rustc_wrapper_main() -> int:
    """``mappedtrace-rustc-wrapper RUSTC ARGS…``: cargo's ``RUSTC_WRAPPER``."""
    from .driver import run_wrapper
    try:
        return run_wrapper(sys.argv[1:])
    except MappedTraceError as e:
        print(f"mappedtrace: error: {e.message}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
