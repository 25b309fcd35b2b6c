#!/usr/bin/env bash
# The test suite: sets up what it needs, then runs pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q -p no:cacheprovider "$@" tests
