#!/bin/sh
# PIE or not, with the maps and without: instructions counted by callgrind
# (no hardware counters here; DWARF 4 for Debian's valgrind 3.19).
# Usage: benchmarks/overhead/pie_vs_nopie.sh [DEPTH]     (from the repository root)
set -eu
depth=${1:-14}
root=$(cd "$(dirname "$0")/../.." && pwd)
mt=${MAPPEDTRACE:-"$root/.venv/bin/mappedtrace"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bt=$root/benchmarks/programs/binary_trees.c
tp=$root/tests/leak_corpus/tree_parent.c
inc=-I$root/tests/leak_corpus
for prog in bt tp; do
    src=$(eval echo \$$prog)
    $mt cc -O2 -gdwarf-4 $inc -fno-pie -no-pie "$src" -o "$out/${prog}_maps_nopie"
    $mt cc -O2 -gdwarf-4 $inc -fPIE -pie "$src" -o "$out/${prog}_maps_pie"
    clang-22 -O2 -gdwarf-4 $inc -fno-pie -no-pie "$src" -o "$out/${prog}_plain_nopie"
    clang-22 -O2 -gdwarf-4 $inc -fPIE -pie "$src" -o "$out/${prog}_plain_pie"
done
for exe in bt_maps_nopie bt_maps_pie bt_plain_nopie bt_plain_pie tp_maps_nopie tp_maps_pie tp_plain_nopie tp_plain_pie; do
    arg=; case $exe in bt_*) arg=$depth ;; esac
    n=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/$exe" $arg 2>&1 >/dev/null |
        sed -n 's/.*Collected : //p')
    echo "$exe $n"
done
