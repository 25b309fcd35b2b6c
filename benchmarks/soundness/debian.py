"""The Debian C programs that the overhead suite (benchmarks/overhead/run.py) and the
soundness suite (benchmarks/soundness/run.py) share: one list, one build recipe,
one workload and one own-test-suite command per program (issues #11 and #18).

Chosen for the code shapes that cost the maps most: compressors and
decompressors (big switch-driven state machines, hot loops with calls: bzip2,
gzip, xz, zstd, lz4, ncompress), and interpreters (gawk's bytecode switch
with deep recursion, bc's).  Sources come from ``apt-get source``
(scripts/fetch_sources.sh PACKAGE); builds are cached by soundness.build in
$MAPPEDTRACE_REAL with three compilers (soundness.compilers): ``plain``
(clang-22 -gdwarf-4), ``mt`` (mappedtrace cc -gdwarf-4) and ``lsan``
(clang-22 -fsanitize=leak -gdwarf-4), all at -O2.

A workload is a command with placeholders filled by :func:`inputs`:
``{corpus}`` (real text: the C sources of the fetched trees), ``{packed}``
(the corpus compressed by this program's plain build), ``{script}`` (an awk
or bc program written here).  :func:`inputs` takes a size, so the timed runs
and the callgrind runs (smaller) share one definition.
"""
from __future__ import annotations

import fcntl
import hashlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from soundness import JOBS, SRC, Known, Unavailable, build, need, run, source_tree

Recipe = Callable[[Path, str, Path], Path]


@dataclass(frozen=True)
class Workload:
    """One run of a program: ``args`` (placeholders ``{corpus}``, ``{packed}``,
    ``{script}``), the file read on stdin (a placeholder name, or None)."""
    name: str
    args: tuple[str, ...]
    stdin: str | None = None

    def command(self, exe: Path, files: dict[str, Path]) -> tuple[list[str], Path | None]:
        args = [a.format(**{k: str(v) for k, v in files.items()}) for a in self.args]
        return [str(exe), *args], (files[self.stdin] if self.stdin else None)


@dataclass(frozen=True)
class Program:
    """A Debian program: source package, recipe (tree, cc, logfile) -> executable,
    workloads, its own test suite (tree, executable, compiler, logfile), and how to make
    ``{packed}`` (arguments compressing stdin to stdout) or ``{script}``."""
    name: str
    package: str
    recipe: Recipe
    recipe_id: str
    workloads: tuple[Workload, ...]
    selftest: Callable[[Path, Path, str, Path], None]
    selftest_id: str
    pack: tuple[str, ...] | None = None
    script: Callable[[int], str] | None = None
    #: the soundness suite's live scenario: this workload with its stdin fed
    #: through a pipe, half of it, then checked while the program waits for the rest
    live: Workload | None = None
    #: documented disagreements with valgrind and LSan, by scenario (a workload's
    #: name, ``live-NAME`` for the live one): the harness calls them "explained"
    known: dict[str, Known] = field(default_factory=dict)

    def tree(self) -> Path:
        return source_tree(self.package)

    def build(self, variant: str, log=print) -> Path:
        """The executable built with ``variant`` (plain, mt or lsan), cached."""
        return build(self.name, variant, self.recipe, self.tree(), self.recipe_id, log)


# -- recipes -------------------------------------------------------------------

def _configure(tree: Path, cc: str, logf: Path, *extra: str) -> None:
    run(["./configure", f"CC={cc}", "CFLAGS=-O2", *extra], tree, logf)


def _bzip2(tree: Path, cc: str, logf: Path) -> Path:
    # Debian's Makefile links bzip2 to libbz2.so, which at run time is the
    # system's: link the library built here statically instead
    flags = "-O2 -D_FILE_OFFSET_BITS=64"
    run(["make", f"-j{JOBS}", f"CC={cc}", f"CFLAGS={flags}", "libbz2.a", "bzip2.o"], tree, logf)
    run([cc, *flags.split(), "-o", "bzip2", "bzip2.o", "libbz2.a"], tree, logf)
    return tree / "bzip2"


def _bzip2_test(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    # bzip2's `make test`: compresses and decompresses its three samples at -1/-2/-3,
    # compared with cmp (-o bzip2: on the static bzip2 above, not relinked)
    run(["make", "-o", "bzip2", "test"], tree, logf)


#: the manuals are not what the suites measure: no texinfo needed
NO_DOCS = "MAKEINFO=true"


def _gzip(tree: Path, cc: str, logf: Path) -> Path:
    _configure(tree, cc, logf)
    run(["make", f"-j{JOBS}", NO_DOCS], tree, logf)
    return tree / "gzip"


def _make_check(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    run(["make", f"-j{JOBS}", NO_DOCS, "check"], tree, logf)


def _xz(tree: Path, cc: str, logf: Path) -> Path:
    _configure(tree, cc, logf, "--disable-shared", "--disable-nls", "--disable-doc", "--disable-scripts",
               "--disable-lzmadec", "--disable-lzmainfo", "--disable-xzdec")
    run(["make", f"-j{JOBS}", NO_DOCS], tree, logf)
    return tree / "src" / "xz" / "xz"


def _lz4(tree: Path, cc: str, logf: Path) -> Path:
    run(["make", f"-j{JOBS}", f"CC={cc}", "CFLAGS=-O2", "lz4"], tree, logf)
    return tree / "programs" / "lz4"


def _lz4_test(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    # lz4's `make check` (tests/ test-lz4-essentials: basic, multiple files, frame
    # concatenation, test mode, content size, dictionaries) on the lz4 built above
    run(["make", "-C", "tests", f"CC={cc}", "CFLAGS=-O2", "test-lz4-essentials"], tree, logf)


def _zstd(tree: Path, cc: str, logf: Path) -> Path:
    # no zlib/lzma/lz4 formats, no legacy decoders: the zstd format itself
    run(["make", f"-j{JOBS}", "-C", "programs", f"CC={cc}", "CFLAGS=-O2", "HAVE_ZLIB=0", "HAVE_LZMA=0",
         "HAVE_LZ4=0", "ZSTD_LEGACY_SUPPORT=0", "zstd"], tree, logf)
    return tree / "programs" / "zstd"


def _zstd_test(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    # zstd's command-line tests (tests/playTests.sh) on this zstd; datagen built plainly
    run(["make", "-C", "tests", f"CC={cc}", "CFLAGS=-O2", "datagen"], tree, logf)
    run(["sh", "playTests.sh"], tree / "tests", logf,
        env={"ZSTD_BIN": str(exe), "DATAGEN_BIN": str(tree / "tests" / "datagen")})


def _ncompress(tree: Path, cc: str, logf: Path) -> Path:
    run(["make", f"CC={cc}", "CFLAGS=-O2", "compress"], tree, logf)
    return tree / "compress"


def _gawk(tree: Path, cc: str, logf: Path) -> Path:
    # no dynamic extensions: -shared objects are not what this suite measures
    _configure(tree, cc, logf, "--disable-nls", "--disable-extensions", "--disable-mpfr", "--without-readline")
    run(["make", f"-j{JOBS}", "-C", "support"], tree, logf)
    run(["make", f"-j{JOBS}", NO_DOCS, "gawk"], tree, logf)
    return tree / "gawk"


#: a gawk test that failed (its Makefile ignores the error and counts it)
_GAWK_FAILED = re.compile(r"^make(?:\[\d+\])?: \[Makefile:\d+: ([\w.-]+)\] Error \d+ \(ignored\)", re.M)


def _gawk_failures(tree: Path, logf: Path, *tests: str) -> set[str]:
    start = logf.stat().st_size if logf.exists() else 0
    with open(logf, "a") as f:
        f.write(f"\n$ make -C test {NO_DOCS} {' '.join(tests) or 'check'}  (in {tree})\n")
        f.flush()
        subprocess.run(["make", "-C", "test", NO_DOCS, *(tests or ("check",))], cwd=tree, stdout=f,
                       stderr=subprocess.STDOUT, timeout=3600)
    return set(_GAWK_FAILED.findall(logf.read_text(errors="replace")[start:]))


def _gawk_test(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    # gawk's test suite (test/: what `make check` runs after the manual, which
    # this tree cannot rebuild).  A test may fail for want of a locale the host
    # lacks (commas, mbstr1, mbstr2 want en_US.UTF-8): it must then fail the
    # same way with the plain build
    failed = _gawk_failures(tree, logf)
    if failed:
        plain = PROGRAMS["gawk"].build("plain").parent
        also = _gawk_failures(plain, logf, *sorted(failed))
        if failed - also:
            raise RuntimeError(f"gawk's tests {sorted(failed - also)} fail with the maps build only (see {logf})")


def _bc(tree: Path, cc: str, logf: Path) -> Path:
    # Debian's patches touch Makefile.am: regenerate, as debian/rules does
    need("autoreconf")
    run(["autoreconf", "-fi"], tree, logf)
    _configure(tree, cc, logf, "--without-readline", "--without-libedit")
    run(["make", "-C", "lib"], tree, logf)
    run(["make", "-C", "bc"], tree, logf)
    return tree / "bc" / "bc"


def _bc_test(tree: Path, exe: Path, cc: str, logf: Path) -> None:
    # bc's Test/checklib.b computes every library function over a range at two
    # scales and prints "Failed" where they differ; bc 1.07.1 itself fails 10 of
    # them (Debian's /usr/bin/bc too: low-scale rounding), so the check is that
    # this build prints exactly what the plain build of the same sources prints
    prog = (tree / "Test" / "checklib.b").read_text() + "quit\n"
    outs = []
    for b in (exe, PROGRAMS["bc"].build("plain")):
        r = subprocess.run([str(b), "-l", "-q"], input=prog, capture_output=True, text=True, timeout=1200)
        outs.append(r.stdout + r.stderr)
        with open(logf, "a") as f:
            f.write(f"\n$ {b} -l -q < Test/checklib.b  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    if outs[0] != outs[1] or "Checking j(n,x)" not in outs[0]:
        raise RuntimeError(f"bc's checklib.b: this build's output differs from the plain build's (see {logf})")


# -- workloads -----------------------------------------------------------------

def _pack_unpack(*level: str) -> tuple[Workload, ...]:
    return (Workload("compress", (*level, "-c"), "corpus"), Workload("decompress", ("-dc",), "packed"))


def _awk_script(size: int) -> str:
    # word frequencies over the corpus (associative arrays, regex gsub, field
    # splitting), then a recursive function (the interpreter's call path)
    depth = 22 if size >= 1 << 20 else 16
    return ("function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }\n"
            "{ for (i = 1; i <= NF; i++) { w = tolower($i); gsub(/[^a-z_]/, \"\", w); if (w != \"\") c[w]++ }"
            " chars += length($0) }\n"
            "END { for (w in c) { k++; if (c[w] > m) { m = c[w]; top = w } }\n"
            f"      printf \"%d lines, %d chars, %d words, top %s x%d, fib %d\\n\", NR, chars, k, top, m, fib({depth}) }}\n")


def _bc_script(size: int) -> str:
    # arbitrary precision: pi by arctangent, e, a square root, and a recursive
    # function; `size` picks the digits
    digits = 800 if size >= 1 << 20 else 400
    return (f"scale = {digits}\n"
            # first, state on the heap (an array of long numbers) for the live check,
            # which sees about the first half of this text
            f"for (i = 1; i <= {digits // 2}; i++) r[i] = sqrt(i)\n"
            f"t = 0; for (i = 1; i <= {digits // 2}; i++) t = t + r[i]\n"
            "p = 4 * a(1)\n"
            "x = e(1) + sqrt(2)\n"
            "define f(n) { if (n < 2) return n; return f(n - 1) + f(n - 2); }\n"
            f"y = f({18 if size >= 1 << 20 else 12})\n"
            "length(p); length(x); length(t); y\nquit\n")


#: ncompress's ``filelist`` (compress42.c:732, never freed) is held only in ``main``'s
#: callee-saved registers that ``compress()``/``decompress()`` saved, which the maps call
#: dead at the call: a leak by the program's own liveness, reachable to a conservative
#: scan (valgrind, LSan, ``--roots conservative``)
_NCOMPRESS_FILELIST = Known(1, "ncompress's filelist (compress42.c:732) is held only by main's dead "
                               "callee-saved registers (the maps' liveness; the stale_slot.c rule): "
                               "benchmarks/soundness/RESULTS.md, tests/test_debian_soundness.py")

PROGRAMS: dict[str, Program] = {p.name: p for p in (
    Program("bzip2", "bzip2", _bzip2, "make libbz2.a bzip2.o CFLAGS=-O2; static link v2", _pack_unpack("-9"), _bzip2_test,
            "make test", pack=("-9", "-c"), live=Workload("decompress", ("-dc",), "packed")),
    Program("gzip", "gzip", _gzip, "configure CFLAGS=-O2; make MAKEINFO=true v1", _pack_unpack("-9"), _make_check,
            "make check", pack=("-9", "-c"), live=Workload("decompress", ("-dc",), "packed")),
    Program("xz", "xz-utils", _xz, "configure --disable-shared CFLAGS=-O2; make v1", _pack_unpack("-6", "-T1"),
            _make_check, "make check", pack=("-6", "-T1", "-c"), live=Workload("decompress", ("-dc",), "packed")),
    Program("zstd", "libzstd", _zstd, "make -C programs zstd CFLAGS=-O2 HAVE_*=0 LEGACY=0 v1",
            (Workload("compress", ("-q", "-19", "-c"), "corpus"), Workload("decompress", ("-q", "-dc"), "packed")),
            _zstd_test, "tests/playTests.sh", pack=("-q", "-19", "-c"),
            live=Workload("decompress", ("-q", "-dc"), "packed")),
    Program("lz4", "lz4", _lz4, "make lz4 CFLAGS=-O2 v1",
            (Workload("compress", ("-q", "-9", "-c"), "corpus"), Workload("decompress", ("-q", "-dc"), "packed")),
            _lz4_test, "make -C tests test-lz4-essentials", pack=("-q", "-9", "-c"),
            live=Workload("decompress", ("-q", "-dc"), "packed")),
    Program("ncompress", "ncompress", _ncompress, "make compress CFLAGS=-O2 v1", _pack_unpack(), _make_check,
            "make check", pack=("-c",), live=Workload("decompress", ("-dc",), "packed"),
            known={s: _NCOMPRESS_FILELIST for s in ("compress", "decompress", "live-decompress")}),
    Program("gawk", "gawk", _gawk, "configure --disable-extensions CFLAGS=-O2; make -C support; make gawk v2",
            (Workload("words", ("-f", "{script}", "{corpus}")),), _gawk_test, "make -C test check (failures = the plain build's)", script=_awk_script,
            live=Workload("words", ("-f", "{script}"), "corpus")),
    Program("bc", "bc", _bc, "autoreconf; configure CFLAGS=-O2; make -C lib; make -C bc v1",
            (Workload("pi", ("-l", "-q", "{script}")),), _bc_test, "Test/checklib.b (output = the plain build's)", script=_bc_script,
            live=Workload("pi", ("-l", "-q"), "script")),
)}


# -- inputs --------------------------------------------------------------------

#: the source files the corpus is made of: real C and documentation text
_CORPUS_SUFFIXES = (".c", ".h", ".texi", ".txt", ".y", ".l", ".md")


def corpus(size: int, into: Path) -> Path:
    """``size`` bytes of real text: the C sources and docs of the fetched source
    trees in $MAPPEDTRACE_SRC, in sorted order (repeated if they are fewer).
    The same fetched trees give the same bytes; the file's name holds their hash."""
    files = sorted(f for d in sorted(SRC.glob("*/")) if (d / "debian").is_dir()
                   for f in d.rglob("*") if f.suffix in _CORPUS_SUFFIXES and f.is_file() and not f.is_symlink())
    if not files:
        raise Unavailable(f"no source trees in {SRC} to make a corpus of: run scripts/fetch_sources.sh")
    out, total = [], 0
    for f in files * (1 + size // max(1, sum(f.stat().st_size for f in files[:2000]))):
        data = f.read_bytes()
        out.append(data[: size - total])
        total += len(out[-1])
        if total >= size:
            break
    blob = b"".join(out)
    path = into / f"corpus-{size}-{hashlib.sha256(blob).hexdigest()[:10]}.txt"
    if not path.exists():
        path.write_bytes(blob)
    return path


def inputs(prog: Program, size: int, into: Path, plain_exe: Path | None = None) -> dict[str, Path]:
    """The files of ``prog``'s workloads at ``size``: corpus, packed (made by
    ``plain_exe``, the program's own plain build) or script."""
    into.mkdir(parents=True, exist_ok=True)
    files = {"corpus": corpus(size, into)}
    if prog.pack:
        if plain_exe is None:
            raise ValueError(f"{prog.name}: packing the corpus needs the plain build")
        packed = into / f"{files['corpus'].stem}.{prog.name}"
        if not packed.exists():
            with open(files["corpus"], "rb") as src, open(packed, "wb") as dst:
                subprocess.run([str(plain_exe), *prog.pack], stdin=src, stdout=dst, check=True, timeout=600)
        files["packed"] = packed
    if prog.script:
        s = into / f"{prog.name}-{size}.script"
        s.write_text(prog.script(size))
        files["script"] = s
    return files


def selftest(prog: Program, variant: str = "mt", log=print) -> tuple[float, Path]:
    """Run ``prog``'s own test suite on its ``variant`` build (in that build's tree);
    raises when a test fails.  Remembered in the build directory: the result
    holds while the build does.  Returns (seconds it took, log file)."""
    import time
    from soundness import build_dir, compilers
    exe = prog.build(variant, log)
    d = build_dir(prog.name, variant, prog.tree(), prog.recipe_id)
    stamp, logf = d / ".selftest-passed", d / "selftest.log"
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # one test run per tree at a time
        if stamp.exists():
            return float(stamp.read_text()), logf
        log(f"{prog.name} ({variant}): its own tests ({prog.selftest_id}) …")
        t0 = time.time()
        prog.selftest(d / "tree", exe, compilers()[variant], logf)
        took = time.time() - t0
        stamp.write_text(f"{took:.1f}")
        return took, logf


def selected(names: str | None) -> list[Program]:
    """The programs named (comma-separated), or all."""
    if not names or names == "all":
        return list(PROGRAMS.values())
    out = []
    for n in names.split(","):
        if n not in PROGRAMS:
            raise SystemExit(f"unknown program {n!r} (known: {', '.join(PROGRAMS)})")
        out.append(PROGRAMS[n])
    return out


def main(argv: list[str] | None = None) -> int:
    """Build (plain, mt) and run each program's own test suite on the maps build:
    ``debian.py [PROGRAM,…] [--variants plain,mt,lsan]``."""
    import argparse
    import sys
    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("programs", nargs="?", default="all")
    ap.add_argument("--variants", default="plain,mt")
    ap.add_argument("--no-tests", action="store_true")
    a = ap.parse_args(argv)
    status = 0
    for prog in selected(a.programs):
        def log(m: str) -> None:
            print(m, file=sys.stderr, flush=True)
        try:
            for v in a.variants.split(","):
                prog.build(v, log)
            if not a.no_tests:
                took, logf = selftest(prog, "mt", log)
                print(f"{prog.name}: {prog.selftest_id} passed on the maps build in {took:.0f} s ({logf})", flush=True)
        except Unavailable as e:
            print(f"{prog.name}: skipped: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 — one program's failure must not hide the others
            status = 1
            print(f"{prog.name}: FAILED: {type(e).__name__}: {str(e)[-1200:]}", flush=True)
    return status


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
