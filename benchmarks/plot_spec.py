#!/usr/bin/env python3
"""Self-speculation vs FullDepth from eexit-bench-spec's CSV.

usage: plot_spec.py CSV PNG

x = batch size (log scale); y = tokens per process-CPU-second over FullDepth's at the same
batch size (the ratio that other load on the machine does not distort). One line per
configuration (draft layer, K, threshold, bonus row); the dashed line is break-even.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = [r for r in csv.DictReader(open(src)) if r["policy"] != "full"]
    configs = sorted({r["policy"] for r in rows})
    fig, ax = plt.subplots(figsize=(8, 5))
    for c in configs:
        pts = sorted((int(r["batch"]), float(r["x_full_cpu"])) for r in rows if r["policy"] == c)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("tokens per CPU-second / FullDepth (same B)")
    ax.set_title("self-speculation on the embedded model (greedy, 100% agreement)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
