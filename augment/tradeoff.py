"""The guidance-scale trade-off: sweep points -> one table row per scale, and its figure.

Reads what each sweep point wrote (`point_summary`, pipelines.sweep_point); the figure shows scale vs FD,
precision, recall and judge hit rate (Dhariwal & Nichol 2021, Fig. 4). The calling script
chooses the matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

TRADEOFF_COLUMNS = ("guidance_scale", "extractor", "n_real", "n_generated", "fd", "kid_mean", "precision",
                    "recall", "judge_hit_rate", "judge_is")
PLOTTED = (("fd", "Frechet distance (lower is closer to real)"), ("precision", "precision (fidelity)"),
           ("recall", "recall (diversity)"), ("judge_hit_rate", "judge hit rate"))


def scale_dir_name(scale: float | str) -> str:
    """`scale_<s>` with s written as params.yaml (and so DVC's `${item}`) writes it: 0, 2.5, 10."""
    return f"scale_{scale}"


def point_summary(scale: float, report: dict) -> dict:
    """One sweep point: the overall figures of `augment.gen_metrics.measure_generated` + per-class hit rates."""
    result = report["sets"]["sweep"]
    overall = result["overall"]
    return {
        "guidance_scale": float(scale),
        **{key: overall[key] for key in TRADEOFF_COLUMNS[1:]},
        "precision_recall_k": overall["k"],
        "per_class_hit_rate": {name: m["judge_hit_rate"] for name, m in result["per_class"].items()},
        "note": report["note"],
    }


def tradeoff_table(points: Sequence[dict]) -> pd.DataFrame:
    """Sweep points -> one row per scale, sorted by scale (columns TRADEOFF_COLUMNS)."""
    frame = pd.DataFrame([{key: p[key] for key in TRADEOFF_COLUMNS} for p in points], columns=list(TRADEOFF_COLUMNS))
    return frame.sort_values("guidance_scale").reset_index(drop=True)


def plot_tradeoff(table: pd.DataFrame, path: Path) -> None:
    """Scale vs FD, precision, recall and hit rate (symlog x: s = 0 stays on the axis)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.4), constrained_layout=True)
    n = f"n = {table['n_generated'].iloc[0]} generated vs {table['n_real'].iloc[0]} real" if len(table) else ""
    for ax, (column, title) in zip(axes, PLOTTED):
        ax.plot(table["guidance_scale"], table[column], marker="o")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("guidance scale s")
        ax.set_title(title, fontsize=10)
        if column != "fd":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    extractor = table["extractor"].iloc[0] if len(table) else "?"
    fig.suptitle(f"Guidance-scale trade-off ({extractor} features; {n})", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
