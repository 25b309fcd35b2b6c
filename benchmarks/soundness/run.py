#!/usr/bin/env python3
"""Real-program soundness suite: MappedTrace vs valgrind vs LeakSanitizer.

    PYTHONPATH=. .venv/bin/python benchmarks/soundness/run.py redis [jq memcached nginx
        bzip2 gzip xz zstd lz4 ncompress gawk bc | all]
        [--keys N] [--tools mt,valgrind,lsan] [--json FILE]

Fetch the sources first (scripts/fetch_sources.sh --all).  Builds are cached
in $MAPPEDTRACE_REAL (default ~/.cache/mappedtrace/real); the first run of
Redis builds for minutes, later runs reuse the build while the pass is
unchanged.  Prints one line per program and scenario:

    redis/live: mappedtrace N leaks (D direct), valgrind definitely+indirect M, LSan K, agree|explained|DISAGREE

and, for each disagreement, MappedTrace's leaks grouped by type and size.
"explained" is a documented disagreement (``known`` in the program list,
debian.py): MappedTrace differs from valgrind and LSan, which agree, by exactly
the documented count; its reason is printed.  Exit code 0 when every case
agrees or is explained, 1 when some disagree, 2 on a failure.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import shutil
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import programs  # noqa: E402
from soundness import Unavailable, workdir  # noqa: E402

PROGRAMS = {"redis": programs.check_redis, "jq": programs.check_jq, "memcached": programs.check_memcached,
            "nginx": programs.check_nginx,
            # the Debian programs shared with the overhead suite (debian.py)
            **{n: functools.partial(programs.check_debian, n) for n in programs.DEBIAN_SOUND}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("programs", nargs="+", choices=[*PROGRAMS, "all"])
    ap.add_argument("--keys", type=int, default=None, help="Redis: keys of each type; memcached: items")
    ap.add_argument("--tools", default="mt,valgrind,lsan")
    ap.add_argument("--scenarios", help="Debian programs: only these scenarios (e.g. live-decompress,compress)")
    ap.add_argument("--json", type=Path, help="write every case as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directories (reports, logs)")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args(argv)
    names = list(PROGRAMS) if "all" in a.programs else a.programs
    tools = tuple(a.tools.split(","))
    cases, status = [], 0
    for name in names:
        work = workdir(name)
        kw = {"tools": tools}
        if a.keys is not None and "keys" in inspect.signature(PROGRAMS[name]).parameters:
            kw["keys"] = a.keys       # the programs with a load size (Redis, memcached, nginx)
        if a.scenarios and "scenarios" in inspect.signature(PROGRAMS[name]).parameters:
            kw["scenarios"] = tuple(a.scenarios.split(","))
        try:
            for case in PROGRAMS[name](work, lambda m: print(m, file=sys.stderr, flush=True), **kw):
                cases.append(case)
                print(case.line(), flush=True)
                if case.verdict() == "DISAGREE":
                    status = max(status, 1)
                    for n, t, size, kind in case.mt_groups[:12]:
                        print(f"    {n:6d} × {size:7d} B  {kind:8s} {t}")
                if case.verdict() == "explained":
                    print(f"    explained: {case.known.reason}")
                for note in case.notes:
                    print(f"    note: {note}")
        except Unavailable as e:
            print(f"{name}: skipped: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 — one program's failure must not hide the others
            status = 2
            print(f"{name}: FAILED: {type(e).__name__}: {str(e)[-1500:]}", flush=True)
            if a.debug:
                traceback.print_exc()
        finally:
            if a.keep:
                print(f"    work directory: {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps([c.to_json() for c in cases], indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
