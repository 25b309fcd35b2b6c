#!/usr/bin/env bash
# Set up everything MappedTrace needs on Debian 12, as root; idempotent and quick when done.
#   - Debian packages: LLVM 22 (clang, lld, lldb + Python module), cmake, ninja, gdb, libc6-dbg
#   - a virtualenv in .venv with the package and its test extra (editable)
#   - the pass plugin and the far-memory helper, built once into ~/.cache/mappedtrace
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

APT_PKGS=(clang-22 llvm-22-dev lld-22 lldb-22 python3-lldb-22 libclang-rt-22-dev cmake ninja-build gdb libc6-dbg python3-venv dpkg-dev tcl chromium jq autoconf automake make valgrind libtool libonig-dev libevent-dev gdbserver debuginfod iproute2 redis-server libxxhash-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.mappedtrace-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing the mappedtrace package and its test extra" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -i "warning\|^ *$" >&2 || true
    .venv/bin/python -c "import mappedtrace" # the install worked
    echo "$want" > "$stamp"
fi
# Build the far-memory C parts (runtime/mtfarmem.c, mappedtrace/farmem/_serve.c) now, cached by source hash.
.venv/bin/python -c "from mappedtrace.farmem import _runtime; _runtime.library_path(); _runtime.serve_library_path()"
# Build the pass plugin now (cached by source hash), so the first command does not.
.venv/bin/python -c "from mappedtrace import toolchain; toolchain.plugin_path()"

# Sources of the real programs the tests build (SQLite, Lua 5.4, jq, memcached, bzip2, ncompress): Debian source
# packages, reachable once the apt sources list deb-src.  Not fatal: the tests
# that need them skip, saying why, when they cannot be had.
SRCLIST=/etc/apt/sources.list.d/debian.sources
if [ -w "$SRCLIST" ] && ! grep -qE '^Types:.*deb-src' "$SRCLIST"; then
    echo "setup: enabling deb-src in $SRCLIST (for apt-get source sqlite3 lua5.4 jq memcached)" >&2
    sed -i 's/^Types: deb$/Types: deb deb-src/' "$SRCLIST"
    apt-get update -qq || true
fi
scripts/fetch_sources.sh >/dev/null 2>&1 || scripts/fetch_sources.sh || echo "setup: real-program sources unavailable; those tests will skip" >&2
