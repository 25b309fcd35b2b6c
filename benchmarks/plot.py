#!/usr/bin/env python3
"""Draw benchmarks/bench.png from benchmarks/results.json (matplotlib, Agg backend).

Left: snapshot pause vs heap size (MappedTrace stop-copy, fork; gcore).
Right: ``mappedtrace leaks`` end-to-end time and marking time vs heap size.

    .venv/bin/python benchmarks/plot.py [results.json] [out.png]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def draw(res: dict, out: Path) -> None:
    """Draw the two panels of *res* (the umbrella's results) into the PNG *out*."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    snap = res.get("sections", {}).get("snapshot", {}).get("sizes", [])
    for method, style in (("stop-copy", "o-"), ("fork", "s-"), ("gcore", "^--")):
        pts = [(s["heap_mib"], s["methods"][method]["pause_ms_median"]) for s in snap if method in s["methods"]]
        if pts:
            ax1.plot(*zip(*pts), style, label=method if method == "gcore" else f"MappedTrace {method}")
    ax1.set_title("Snapshot pause vs heap size")
    ax1.set_xlabel("heap (MiB)")
    ax1.set_ylabel("pause (ms, median)")
    if snap:
        ax1.set_xscale("log", base=2)
        ax1.set_yscale("log")
        ax1.legend()
    else:
        ax1.text(0.5, 0.5, "no snapshot results", ha="center", transform=ax1.transAxes)
    tr = res.get("sections", {}).get("trace", {}).get("sizes", [])
    e2e = [(r["heap_mib"], r["e2e"]["leaks_s_median"]) for r in tr if "e2e" in r]
    mk = [(r["heap_mib"], r["mark"]["mark_s_median"]) for r in tr if "mark" in r]
    if e2e:
        ax2.plot(*zip(*e2e), "o-", label="mappedtrace leaks PID (end to end)")
    if mk:
        ax2.plot(*zip(*mk), "s-", label="marking only (bench_mark.py)")
    ax2.set_title("Leak check time vs heap size")
    ax2.set_xlabel("heap (MiB)")
    ax2.set_ylabel("seconds (median)")
    if e2e or mk:
        ax2.legend()
    else:
        ax2.text(0.5, 0.5, "no tracer results", ha="center", transform=ax2.transAxes)
    q = " (--quick)" if res.get("quick") else ""
    fig.suptitle(f"MappedTrace benchmarks{q}, {res.get('date', '')}, "
                 f"{res.get('machine', {}).get('nproc', '?')} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "bench.png"
    draw(json.loads(src.read_text()), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
