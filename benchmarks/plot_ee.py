#!/usr/bin/env python3
"""Speed / quality trade-off plot of eexit-bench-ee's CSV.

usage: plot_ee.py CSV PNG

Left: x = position-wise agreement with full-depth greedy tokens, right: x = teacher-forced
held-out perplexity ratio. Top: y = wall-clock tokens/s ratio to the paired FullDepth runs at
the same batch size; bottom: y = the same ratio in tokens per process-CPU-second (robust to
time spent descheduled on the shared machine). One line per policy per batch size, points
ordered by threshold (labelled on the AllConfident batch-1 line).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    batches = sorted({int(r["batch"]) for r in rows})
    colors = dict(zip(batches, plt.cm.viridis([i / max(1, len(batches) - 1) * 0.85 for i in range(len(batches))])))
    style = {"all-confident": ("o", "-"), "split": ("s", "--")}
    fig, grid = plt.subplots(2, 2, figsize=(13, 10), sharey="row")
    panels = []
    for row, (ykey, ylabel) in enumerate((("tok_s_ratio", "tokens/s / FullDepth (wall clock, same B)"),
                                          ("cpu_tok_ratio", "tokens per CPU-second / FullDepth (same B)"))):
        for col, (xkey, xlabel) in enumerate((("agreement", "agreement with full-depth greedy tokens (position-wise)"),
                                              ("ppl_ratio", "held-out perplexity / FullDepth (teacher-forced, same exits)"))):
            panels.append((grid[row][col], xkey, xlabel, ykey, ylabel))
    for ax, xkey, xlabel, ykey, ylabel in panels:
        for pol, (marker, ls) in style.items():
            for b in batches:
                pts = [r for r in rows if r["policy"] == pol and int(r["batch"]) == b]
                # order by threshold; "cfg" (per-exit config thresholds) is drawn as a lone point
                num = sorted((r for r in pts if r["threshold"] != "cfg"), key=lambda r: float(r["threshold"]))
                if not num:
                    continue
                xs = [float(r[xkey]) for r in num]
                ys = [float(r[ykey]) for r in num]
                ax.plot(xs, ys, ls=ls, marker=marker, color=colors[b], ms=4,
                        label=f"{pol} B={b}")
                for r in pts:
                    if r["threshold"] == "cfg":
                        ax.plot(float(r[xkey]), float(r[ykey]), marker="*", ms=10,
                                color=colors[b], ls="none")
                if b == batches[0] and pol == "all-confident":
                    for r, x, y in zip(num, xs, ys):
                        ax.annotate(r["threshold"], (x, y), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(1.25, color="red", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if xkey == "agreement":
            ax.axvline(0.95, color="red", lw=0.8, ls=":")
    grid[0][0].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle("eexit-shakespeare, max-prob exits: speed vs quality "
                 "(red: 95% agreement, 1.25x target; star: config.json thresholds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"plot: {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
