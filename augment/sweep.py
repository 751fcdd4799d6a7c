"""The guidance-scale trade-off sweep: a few images per class at each scale s, then their metrics.

Classifier guidance trades diversity for class fidelity (Dhariwal & Nichol 2021, section 5.1 and
Fig. 4: larger scales raise precision / IS and lower recall). Each sweep point renders
`sweep.per_class` images per class with the `generate` settings, except for the scale (and the
sweep's cheaper sampler / steps), through `augment.generate` (`dataclasses.replace` on its
`GenerateSettings`), into `data/sweep/scale_<s>/`, and measures them with `augment.gen_metrics`.
Image k of class c has the same seed at every scale, so the points differ only by s.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from augment.generate import GenerateSettings, Models, manifest, plan_images, render_shard  # noqa: E402
from augment.samplers import SAMPLERS  # noqa: E402

TRADEOFF_COLUMNS = ("guidance_scale", "extractor", "n_real", "n_generated", "fd", "kid_mean", "precision",
                    "recall", "judge_hit_rate", "judge_is")
PLOTTED = (("fd", "Frechet distance (lower is closer to real)"), ("precision", "precision (fidelity)"),
           ("recall", "recall (diversity)"), ("judge_hit_rate", "judge hit rate"))


@dataclass(frozen=True)
class SweepSettings:
    """The `sweep` section of params.yaml."""

    scales: tuple[float, ...] = (0, 1, 3, 10)  # guidance scales s, one sweep point (DVC stage) each
    per_class: int = 6                         # guided images per class and scale
    sampler: str = "ddim"                      # cheaper than the generate stage's on purpose
    steps: int = 25

    def __post_init__(self) -> None:
        if not self.scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0
                                  for s in self.scales):
            raise ValueError(f"scales {list(self.scales)} must be a non-empty list of numbers >= 0")
        if len({float(s) for s in self.scales}) != len(self.scales):
            raise ValueError(f"scales {list(self.scales)} repeat a value")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        if self.per_class < 1 or self.steps < 1:
            raise ValueError("per_class and steps must be >= 1")


def scale_dir_name(scale: float | str) -> str:
    """`scale_<s>` with s written as params.yaml (and so DVC's `${item}`) writes it: 0, 2.5, 10."""
    return f"scale_{scale}"


def point_settings(base: GenerateSettings, sweep: SweepSettings, scale: float,
                   class_names: Sequence[str]) -> GenerateSettings:
    """The generate settings of one sweep point: scale s, `per_class` images per class, no controls."""
    return dataclasses.replace(
        base, guidance_scale=float(scale), sampler=sweep.sampler, steps=sweep.steps,
        eta=base.eta if sweep.sampler == "ddim" else 0.0,
        quota={name: sweep.per_class for name in class_names}, control_per_class=0,
    )


def render_point(models: Models, settings: GenerateSettings, class_names: Sequence[str],
                 out_dir: Path) -> pd.DataFrame:
    """Render the point's images into `out_dir/images/` and return their manifest (augment.generate)."""
    jobs = plan_images(dict(settings.quota), class_names, settings)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as no_controls:
        rendered = render_shard(models, settings, jobs, out_dir / "images", Path(no_controls))
    return manifest(rendered, settings, class_names)


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
