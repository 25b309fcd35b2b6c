#!/usr/bin/env bash
# The main job: build a leaky sample with pointer maps, run it under the tracer, report its leaks.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
mkdir -p build
.venv/bin/mappedtrace cc -O2 -o build/leaky samples/leaky.c
.venv/bin/mappedtrace maps build/leaky
# mappedtrace run exits non-zero when it finds leaks, as LeakSanitizer does; the demo's sample leaks on purpose.
.venv/bin/mappedtrace run -- build/leaky || [ $? -eq 23 ]
