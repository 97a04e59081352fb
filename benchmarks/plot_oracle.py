#!/usr/bin/env python3
"""Oracle-acceptance mechanics from eexit-bench-spec --oracle-accept's CSV.

usage: plot_oracle.py CSV PNG

One panel per batch size: x = oracle acceptance A, y = speedup over full depth (wall time,
interleaved runs); solid lines measured, dotted the prediction from the measured step costs,
one colour per (draft layer, k mode). The dashed line is break-even.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    batches = sorted({int(r["batch"]) for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4.5), squeeze=False)
    for ax, b in zip(axes[0], batches):
        sel = [r for r in rows if int(r["batch"]) == b]
        keys = sorted({(int(r["draft_layer"]), r["k_mode"]) for r in sel})
        for i, (layer, mode) in enumerate(keys):
            pts = sorted((float(r["accept"]), float(r["x_full"]), float(r["predicted"]))
                         for r in sel if int(r["draft_layer"]) == layer and r["k_mode"] == mode)
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color,
                    label=f"E={layer + 1} {mode}")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=":", color=color)
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_title(f"batch {b}")
        ax.set_xlabel("oracle acceptance A")
        ax.set_ylabel("speedup over full depth (dotted: predicted)")
        ax.legend(fontsize=7)
    r0 = rows[0]
    fig.suptitle(f"self-speculation mechanics, dim {r0['dim']}, {r0['n_layers']} layers, "
                 f"vocab {r0['vocab']}, draft vocabulary {r0['draft_vocab']}")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
