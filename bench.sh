#!/bin/sh
# Head-to-head benchmarks (issue #6): MappedTrace vs LeakSanitizer, ASan, Valgrind, gcore.
#   ./bench.sh           full run (<= 30 min on 2 cores)
#   ./bench.sh --quick   subset, small sizes (<= 5 min)
# Sets up what it needs (benchmarks/setup.sh), runs every benchmark (benchmarks/run.py),
# writes benchmarks/RESULTS.md, benchmarks/results.json and benchmarks/bench.png.
set -eu
cd "$(dirname "$0")"
# the project itself (venv, pass plugin): scripts/setup.sh once; `mappedtrace cc` builds the plugin when needed
[ -x .venv/bin/mappedtrace ] || scripts/setup.sh
./benchmarks/setup.sh
MT_BENCH_SH=1 exec .venv/bin/python benchmarks/run.py "$@"
