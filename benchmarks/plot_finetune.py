"""Plot benchmarks/finetune_loop.py results: SEG and F1 vs corrected frames per CPU budget.

    python benchmarks/plot_finetune.py docs/results/finetune_ecoli.json \
        docs/images/finetune_ecoli.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results: str, out: str) -> None:
    rows = json.loads(Path(results).read_text())
    base = max((r for r in rows if r["corrected_frames"] == 0), key=lambda r: r["seg"])
    budgets = sorted({r["budget_s"] for r in rows if r["corrected_frames"]})
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, metric, title in zip(axes, ("seg", "f1"), ("CTC SEG", "instance F1@0.5"), strict=True):
        for budget in budgets:
            picked = [base] + [r for r in rows if r["budget_s"] == budget]
            ax.plot(
                [r["corrected_frames"] for r in picked],
                [r[metric] for r in picked],
                marker="o",
                label=f"{budget:.0f} s of CPU",
            )
        ax.set_title(title)
        ax.set_xlabel("corrected frames")
        ax.set_xticks([0, 1, 2, 4])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("on frames never trained on")
    axes[1].legend(loc="lower right")
    fig.suptitle(f"Fine-tuning the nuclei model: {Path(results).stem}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
