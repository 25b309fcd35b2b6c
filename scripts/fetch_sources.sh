#!/usr/bin/env bash
# Fetch Debian source packages into a cache directory for
# tests/test_real_programs.py and benchmarks/soundness/:
#   $MAPPEDTRACE_SRC (default ~/.cache/mappedtrace/src)
#   <cache>/sqlite3-3.40.1/   <cache>/lua5.4-5.4.4/   (unpacked, Debian patches applied)
# Usage: scripts/fetch_sources.sh [PACKAGE…]   (default: sqlite3 lua5.4 jq memcached bzip2 ncompress;
#   the heavy soundness and overhead suites also want: redis nginx gzip xz-utils libzstd lz4
#   gawk bc — `--all` fetches every one)
# Where from, in order:
#   1. /work/srcpkgs (or $MAPPEDTRACE_SRCPKGS) when it holds the unpacked trees or the .dsc files;
#   2. `apt-get source` when deb-src is enabled in the apt sources.
# Otherwise it prints why not and exits 1.  It never changes host settings
# (no apt sources edited, no packages installed).  Idempotent: quick when done.
set -euo pipefail
CACHE=${MAPPEDTRACE_SRC:-$HOME/.cache/mappedtrace/src}
LOCAL=${MAPPEDTRACE_SRCPKGS:-/work/srcpkgs}
mkdir -p "$CACHE"
status=0

fetch_one() {   # fetch_one PACKAGE  (under an exclusive lock: parallel callers share the cache)
    local pkg=$1
    exec 9>"$CACHE/.lock-$pkg"
    flock 9
    fetch_locked "$pkg"
    local rc=$?
    exec 9>&-
    return $rc
}

fetch_locked() {
    local pkg=$1 d
    for d in "$CACHE/$pkg"-*/; do
        if [ -d "$d" ] && [ -f "$d/debian/changelog" ]; then
            echo "fetch_sources: $pkg: already in $d" >&2
            return 0
        fi
    done
    # 1. a local copy: an unpacked tree, or the .dsc to unpack
    for d in "$LOCAL/$pkg"-*/; do
        if [ -d "$d" ] && [ -f "$d/debian/changelog" ]; then
            echo "fetch_sources: $pkg: copying $d" >&2
            local tmp
            tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX")
            cp -a "$d" "$tmp/"
            mv "$tmp/$(basename "$d")" "$CACHE/" && rmdir "$tmp"
            return 0
        fi
    done
    local dsc
    dsc=$(ls "$LOCAL/$pkg"_*.dsc 2>/dev/null | head -n1 || true)
    if [ -n "$dsc" ] && command -v dpkg-source >/dev/null; then
        echo "fetch_sources: $pkg: unpacking $dsc" >&2
        (cd "$CACHE" && dpkg-source --no-check -x "$dsc" >/dev/null)
        return 0
    fi
    # 2. apt-get source, when deb-src is enabled
    if ! command -v apt-get >/dev/null; then
        echo "fetch_sources: $pkg: no local copy in $LOCAL and no apt-get" >&2
        return 1
    fi
    if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "fetch_sources: $pkg: no local copy in $LOCAL, and deb-src is not enabled in the apt sources" \
             "(add 'deb-src' to Types: in /etc/apt/sources.list.d/debian.sources, then apt-get update)" >&2
        return 1
    fi
    echo "fetch_sources: $pkg: apt-get source" >&2
    if ! (cd "$CACHE" && apt-get source -qq "$pkg" >/dev/null 2>"$CACHE/.apt-$pkg.log"); then
        # the newest version may be missing from the mirror (a security update
        # whose files are not there yet): try the other versions the index lists
        local v
        for v in $(apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -rV); do
            if (cd "$CACHE" && apt-get source -qq "$pkg=$v" >/dev/null 2>>"$CACHE/.apt-$pkg.log"); then
                echo "fetch_sources: $pkg: got version $v (the newest failed)" >&2
                return 0
            fi
        done
        echo "fetch_sources: $pkg: apt-get source failed (no index for deb-src? run apt-get update): $(tail -n1 "$CACHE/.apt-$pkg.log")" >&2
        return 1
    fi
}

DEFAULT=(sqlite3 lua5.4 jq memcached bzip2 ncompress)
#: the heavy suites: Redis and nginx (soundness), and the Debian program list of
#: benchmarks/soundness/debian.py (overhead and soundness)
ALL=(sqlite3 lua5.4 jq memcached redis nginx bzip2 ncompress gzip xz-utils libzstd lz4 gawk bc)
if [ $# = 0 ]; then set -- "${DEFAULT[@]}"; elif [ "$1" = --all ]; then set -- "${ALL[@]}"; fi
for pkg in "$@"; do
    fetch_one "$pkg" || status=1
done
[ $status = 0 ] && echo "$CACHE"
exit $status
