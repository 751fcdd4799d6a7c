"""`reports/report.md` and its figures: does the synthetic data help, per class?

Figures are matplotlib PNGs referenced by relative paths, so the report reads offline; the calling
script chooses the backend. The tiny images are upscaled (nearest neighbour) before boxes are
drawn so both stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from core.tables import markdown_table
from detection.budget import budget_line
from detection.evaluate import EvaluateSettings, Evaluation
from detection.metrics import METRICS, Delta
from scenes.boxes import Detections, labels_to_pixels
from scenes.figures import draw_boxes, image_grid
from scenes.prepared import label_path, read_rgb, read_yolo_labels


def plot_pr_curves(ev: Evaluation, path: Path) -> None:
    """Per class, each variant's PR curve at IoU 0.5 from every seed's detections pooled."""
    n = len(ev.names)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.8), squeeze=False, sharey=True)
    for c, name in enumerate(ev.names):
        ax = axes[0][c]
        for variant, s in ev.pooled.items():
            if np.isfinite(s.pr_curves[c]).all():
                ax.plot(s.recall_grid, s.pr_curves[c], label=variant)
        ax.set(title=name, xlabel="recall", xlim=(0, 1), ylim=(0, 1.02))
        if ax.lines:  # a class without ground truth has no curve
            ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel(f"precision (IoU 0.5, {len(ev.seeds)} seeds pooled)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_delta_bars(ev: Evaluation, path: Path, ci: float, metric: str = "mAP50") -> None:
    """Per class and overall, each variant's delta vs the reference with its interval as an error
    bar; resolved deltas solid, unresolved ones faint."""
    k = METRICS.index(metric)
    x = np.arange(len(ev.names) + 1)
    width = 0.8 / max(len(ev.deltas), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(x) + 2, 3.2))
    for j, (variant, d) in enumerate(ev.deltas.items()):
        delta, low, high = d.delta[k], d.ci_low[k], d.ci_high[k]
        err = np.nan_to_num(np.stack([delta - low, high - delta]).clip(min=0))
        bars = ax.bar(x + (j - (len(ev.deltas) - 1) / 2) * width, np.nan_to_num(delta), width, yerr=err, capsize=3,
                      label=variant)
        for bar, resolved in zip(bars, d.resolved[k]):
            bar.set_alpha(1.0 if resolved else 0.35)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [*ev.names, "all"], rotation=20, fontsize=8)
    ax.set_ylabel(f"delta {metric} vs {ev.reference}")
    ax.set_title(f"mean over seeds; error bars: {ci:.0%} interval; faint: it contains 0", fontsize=8)
    if ev.deltas:
        for handle in ax.legend(fontsize=8).legend_handles:
            handle.set_alpha(1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pseudo_grid(pseudo_dir: Path, names: Sequence[str], path: Path, n: int, scale: int) -> bool:
    """Synthetic images with their pseudo boxes; False when there are none."""
    images = sorted((pseudo_dir / "images").glob("*.png"))[:n]
    if not images:
        return False
    tiles = []
    for p in images:
        rgb = read_rgb(p)
        xyxy, cls = labels_to_pixels(read_yolo_labels(label_path(p)), rgb.shape[1], rgb.shape[0])
        tiles.append(draw_boxes(rgb, xyxy, cls, scale))
    cols = min(6, len(tiles))
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    image_grid(path, rows, [""] * len(rows), [p.stem for p in images[:cols]], names)
    return True


def detections_grid(ev: Evaluation, settings: EvaluateSettings, path: Path) -> None:
    """Rows: test images; columns: ground truth, then each variant's first-seed detections above draw_conf."""
    rows, titles = [], []
    for i, im in enumerate(ev.images[:settings.grid_images]):
        row = [draw_boxes(im.rgb, im.gt_xyxy, im.gt_cls, settings.grid_scale)]
        for found in ev.detections.values():
            det: Detections = found[i].select(found[i].conf >= settings.draw_conf)
            row.append(draw_boxes(im.rgb, det.xyxy, det.cls, settings.grid_scale))
        rows.append(row)
        titles.append(im.image_id)
    image_grid(path, rows, titles, ["ground truth", *ev.detections], ev.names)


def mark(resolved: bool, delta: float) -> str:
    """How a delta reads in the report."""
    return "n/a" if not np.isfinite(delta) else "resolved" if resolved else "unresolved"


def mean_sd(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(sd) else f"{mean:.3f} ± {sd:.3f}"


def interval_text(d: Delta, k: int, column: int) -> str:
    """`+0.031 [-0.010, +0.060]`: the delta and its interval."""
    return f"{d.delta[k, column]:+.3f} [{d.ci_low[k, column]:+.3f}, {d.ci_high[k, column]:+.3f}]"


def delta_cell(d: Delta, k: int, column: int) -> str:
    """`+0.031 [-0.010, +0.060] unresolved`: the delta, its interval and its mark."""
    delta = d.delta[k, column]
    if not np.isfinite(delta):
        return "n/a"
    return f"{interval_text(d, k, column)} {mark(d.resolved[k, column], delta)}"


def overall_table(ev: Evaluation) -> pd.DataFrame:
    rows = []
    for v in ev.summaries:
        spread, per_seed = ev.spread(v), ev.per_seed(v)
        rows.append({"variant": v, "seeds": len(per_seed),
                     **({"train images": ev.training[v]["images"], "epochs": ev.training[v]["epochs"],
                         "batches": ev.training[v]["batches"]}
                        if v in ev.training else {}),
                     **{m: mean_sd(spread["mean"][k, -1], spread["sd"][k, -1]) for k, m in enumerate(METRICS)},
                     "mAP50 per seed": " / ".join(f"{x:.3f}" for x in per_seed[:, METRICS.index("mAP50"), -1])})
    return pd.DataFrame(rows)


def is_void(variant: str, void: dict[str, str]) -> bool:
    """A comparison `void_comparisons` called void: the variant's own, or every one when the reference failed."""
    return variant in void or "reference" in void


def delta_table(ev: Evaluation, ci: float, void: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "metric": m, "delta": f"{d.delta[k, -1]:+.3f}",
                          f"{ci:.0%} interval": f"[{d.ci_low[k, -1]:+.3f}, {d.ci_high[k, -1]:+.3f}]",
                          "verdict": "void" if is_void(v, void) else mark(d.resolved[k, -1], d.delta[k, -1])}
                         for v, d in ev.deltas.items() for k, m in enumerate(METRICS)])


def per_class_table(ev: Evaluation) -> pd.DataFrame:
    k = METRICS.index("mAP50")
    n_targets = ev.summaries[ev.reference][0].n_targets
    spreads = {v: ev.spread(v) for v in ev.summaries}
    undetected = undetected_classes(ev)
    return pd.DataFrame([{"class": name, "targets": int(n_targets[c]),
                          **{v: mean_sd(s["mean"][k, c], s["sd"][k, c]) for v, s in spreads.items()},
                          **{f"{v} - {ev.reference}": "not detected" if name in undetected else delta_cell(d, k, c)
                             for v, d in ev.deltas.items()}}
                         for c, name in enumerate(ev.names)])


def undetected_classes(ev: Evaluation) -> list[str]:
    """Classes with test boxes that no variant finds: AP50 0 for every seed of every variant."""
    k = METRICS.index("mAP50")
    n_targets = ev.summaries[ev.reference][0].n_targets
    return [name for c, name in enumerate(ev.names)
            if n_targets[c] > 0 and all(np.nan_to_num(ev.per_seed(v)[:, k, c]).max() == 0 for v in ev.summaries)]


def verdict_lines(ev: Evaluation, void: dict[str, str]) -> list[str]:
    """What a person reads first: one line per variant (better / worse / no resolved difference than the
    reference, its mAP50 delta with the interval, the classes whose AP50 moved with a resolved
    interval), one for the classes no variant detects, and the detector budget when recorded."""
    k = METRICS.index("mAP50")
    undetected = undetected_classes(ev)
    lines = []
    for v, d in ev.deltas.items():
        if is_void(v, void):
            lines.append(f"{v}: void, no verdict ({void.get(v) or void['reference']})")
            continue
        delta = d.delta[k, -1]
        word = ("better than" if delta > 0 else "worse than") if d.resolved[k, -1] else "no resolved difference from"
        moved = [f"{name} {interval_text(d, k, c)}" for c, name in enumerate(ev.names)
                 if d.resolved[k, c] and name not in undetected]
        lines.append(f"{v}: {word} {ev.reference}, mAP50 {interval_text(d, k, -1)}; "
                     + (f"classes whose AP50 moved (resolved): {', '.join(moved)}" if moved
                        else "no class's AP50 moved with a resolved interval"))
    if undetected:
        lines.append(f"not detected by any variant (AP50 0 for every seed): {', '.join(undetected)}")
    if ev.budget:
        lines.append(budget_line(ev.budget))
    return lines


def void_warning(void: dict[str, str]) -> str:
    """The report's opening warning when a comparison is void (`detection.evaluate.void_comparisons`), else ''."""
    if not void:
        return ""
    lines = "".join(f"- {reason}.\n" for reason in void.values())
    return f"**Warning: {len(void)} comparison(s) here say nothing.**\n\n{lines}\n"


def write_report(ev: Evaluation, settings: EvaluateSettings, pseudo_dir: Path, figures: Path, link: str,
                 void: dict[str, str]) -> str:
    """Render the figures into `figures` and return the markdown text, which finds them under `link`;
    `void` (detection.evaluate.void_comparisons) is said first."""
    rel, boot = Path(link), settings.bootstrap
    plot_pr_curves(ev, figures / "pr_curves.png")
    plot_delta_bars(ev, figures / "delta_map50.png", boot.ci)
    detections_grid(ev, settings, figures / "test_detections.png")
    has_pseudo = pseudo_grid(pseudo_dir, ev.names, figures / "pseudo_labels.png", settings.grid_images,
                             settings.grid_scale)
    n_seeds, seeds = len(ev.seeds), ", ".join(map(str, ev.seeds))
    intro = (f"{len(ev.images)} held-out test images; every variant trained with {n_seeds} seed(s) ({seeds}) and "
             f"every model predicted with conf >= {settings.predict.conf}, NMS IoU {settings.predict.iou}. Values "
             "are means over the seeds ± their sample standard deviation (min and max: `per_class.csv`, "
             "`evaluation.json`).")
    interval = (f"Delta: mean over seeds minus the same for `{ev.reference}`, on all test images. Interval: "
                f"{boot.ci:.0%} percentile interval of a two-level paired bootstrap ({boot.n_resamples} resamples): "
                "each resample draws the test images with replacement, the same images for every variant and seed, "
                "and, independently for each variant, its training seeds with replacement; so it covers both which "
                "test images happened to be held out and how much training runs differ by seed"
                + (" (with one seed: test images only)" if n_seeds == 1 else "")
                + ". A delta is resolved only when its interval excludes 0.")
    verdicts = "".join(f"- {line}\n" for line in verdict_lines(ev, void))
    parts = [f"# Detection report\n\n{void_warning(void)}{verdicts}\n{intro}\n\n## Overall\n",
             markdown_table(overall_table(ev)), f"\n## Delta vs {ev.reference}\n\n{interval}\n\n",
             markdown_table(delta_table(ev, boot.ci, void)) if ev.deltas else "",
             f"\n## Per class (AP50: mean ± sd over seeds; delta [{boot.ci:.0%} interval])\n",
             markdown_table(per_class_table(ev)), f"\n![delta AP50 per class]({rel / 'delta_map50.png'})\n",
             f"\n## PR curves (IoU 0.5, the detections of all {n_seeds} seeds pooled)\n",
             f"![PR curves]({rel / 'pr_curves.png'})\n",
             f"\n## Test detections (seed {ev.seeds[0]}, conf >= {settings.draw_conf})\n",
             f"![test detections]({rel / 'test_detections.png'})\n"]
    if has_pseudo:
        parts += ["\n## Pseudo-labelled synthetic images\n", f"![pseudo labels]({rel / 'pseudo_labels.png'})\n"]
    return "".join(parts)
