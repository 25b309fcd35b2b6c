#!/bin/sh
# Set up what the head-to-head benchmarks need (Debian 12, as root); idempotent.
#  - tools: libclang-rt-22-dev (LeakSanitizer/ASan runtimes), valgrind, gdb (gcore),
#    tcl (SQLite's amalgamation build), dpkg-dev (apt-get source), GNU time
#  - matplotlib in the project venv (.venv)
#  - Debian source packages of sqlite3 and lua5.4 into benchmarks/work/ (gitignored):
#    copied from /work/srcpkgs when present, else `apt-get source` (deb-src enabled)
#  - SQLite amalgamation (sqlite3.c, shell.c) built once from the sqlite3 source
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/benchmarks/work"
mkdir -p "$WORK"

need=""
dpkg -s libclang-rt-22-dev >/dev/null 2>&1 || need="$need libclang-rt-22-dev"
# + the soundness suite's builds (benchmarks/soundness: jq, memcached, nginx)
for p in valgrind gdb tcl dpkg-dev time autoconf automake libtool libonig-dev libevent-dev libpcre2-dev zlib1g-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    echo "setup: apt-get install$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
fi

PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "setup: $PY missing: run ./test.sh (or ./demo.sh) once first" >&2
    exit 1
fi
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib

get_src() {  # $1 = source package, $2 = directory glob
    if ls -d "$WORK"/$2 >/dev/null 2>&1; then return 0; fi
    if ls -d /work/srcpkgs/$2 >/dev/null 2>&1; then
        echo "setup: copying $1 source from /work/srcpkgs"
        cp -a /work/srcpkgs/$2 "$WORK"/
        return 0
    fi
    f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ] && ! grep -q "deb-src" "$f"; then
        sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"
        apt-get update -qq
    fi
    (cd "$WORK" && apt-get source -qq "$1")
}
get_src sqlite3 'sqlite3-3*'
get_src lua5.4 'lua5.4-5*'

SQ=$(ls -d "$WORK"/sqlite3-3*/ | head -1)
SQ=${SQ%/}
if [ ! -s "$WORK/sqlite-amalg/sqlite3.c" ] || [ ! -s "$WORK/sqlite-amalg/shell.c" ]; then
    echo "setup: building the SQLite amalgamation from $SQ"
    rm -rf "$WORK/sqlite-amalg"
    mkdir -p "$WORK/sqlite-amalg"
    (cd "$WORK/sqlite-amalg" && CC=clang-22 "$SQ/configure" --disable-tcl --disable-readline >configure.log 2>&1 \
        && make -j2 sqlite3.c shell.c >make.log 2>&1)
fi
cp -f "$SQ/test/speedtest1.c" "$WORK/sqlite-amalg/speedtest1.c"
# Sources of benchmarks/soundness (into ~/.cache/mappedtrace/src, as the tests use)
"$ROOT/scripts/fetch_sources.sh" --all >/dev/null || echo "setup: some soundness-suite sources are missing" >&2
echo "setup: ok ($WORK)"
