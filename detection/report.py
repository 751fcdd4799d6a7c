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
from PIL import Image, ImageDraw

from core.tables import markdown_cell, markdown_table
from detection.evaluate import EvaluateSettings, Evaluation
from detection.metrics import METRICS
from detection.prepared import label_path, read_rgb, read_yolo_labels
from detection.yolo import Detections, labels_to_pixels

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


def draw_boxes(rgb: np.ndarray, xyxy: np.ndarray, cls: np.ndarray, scale: int) -> np.ndarray:
    """The image upscaled `scale` x (nearest) with one class-coloured rectangle per box."""
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    pen = ImageDraw.Draw(image)
    for box, c in zip(xyxy * scale, cls):
        pen.rectangle([float(v) for v in box], outline=PALETTE[int(c) % len(PALETTE)], width=max(1, scale // 3))
    return np.asarray(image)


def image_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str],
               col_titles: Sequence[str], legend: Sequence[str]) -> None:
    """Save a grid of images (rows x cols) with titles and a class-colour legend."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows + 0.6), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].text(-0.1, 0.5, row_titles[i], transform=axes[i][0].transAxes, ha="right", va="center",
                        fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(PALETTE[k % len(PALETTE)]) / 255) for k in range(len(legend))]
    fig.legend(handles, legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_pr_curves(ev: Evaluation, path: Path) -> None:
    n = len(ev.names)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.8), squeeze=False, sharey=True)
    for c, name in enumerate(ev.names):
        ax = axes[0][c]
        for variant, s in ev.summaries.items():
            if np.isfinite(s.pr_curves[c]).all():
                ax.plot(s.recall_grid, s.pr_curves[c], label=f"{variant} AP50={s.per_class['mAP50'][c]:.2f}")
        ax.set(title=name, xlabel="recall", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("precision (IoU 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_delta_bars(ev: Evaluation, path: Path, metric: str = "mAP50") -> None:
    """Per class, each variant's delta vs the reference with its bootstrap CI as an error bar."""
    variants = list(ev.deltas)
    x = np.arange(len(ev.names) + 1)
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(x) + 2, 3.2))
    for k, variant in enumerate(variants):
        d = ev.deltas[variant]
        delta = np.append(d["per_class"][metric]["delta"], d["overall"][metric]["delta"])
        low = np.append(d["per_class"][metric]["ci_low"], d["overall"][metric]["ci_low"])
        high = np.append(d["per_class"][metric]["ci_high"], d["overall"][metric]["ci_high"])
        err = np.nan_to_num(np.stack([delta - low, high - delta]).clip(min=0))
        ax.bar(x + (k - (len(variants) - 1) / 2) * width, np.nan_to_num(delta), width, yerr=err, capsize=3,
               label=variant)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [*ev.names, "all"], rotation=20, fontsize=8)
    ax.set_ylabel(f"delta {metric} vs {next(iter(ev.summaries))}")
    ax.legend(fontsize=8)
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


def detections_grid(ev: Evaluation, settings: EvaluateSettings, path: Path, variants: Sequence[str]) -> None:
    """Rows: test images; columns: ground truth, then each variant's detections above draw_conf."""
    rows, titles = [], []
    for i, im in enumerate(ev.images[:settings.grid_images]):
        row = [draw_boxes(im.rgb, im.gt_xyxy, im.gt_cls, settings.grid_scale)]
        for v in variants:
            det: Detections = ev.detections[v][i].select(ev.detections[v][i].conf >= settings.draw_conf)
            row.append(draw_boxes(im.rgb, det.xyxy, det.cls, settings.grid_scale))
        rows.append(row)
        titles.append(im.image_id)
    image_grid(path, rows, titles, ["ground truth", *variants], ev.names)


def write_report(ev: Evaluation, settings: EvaluateSettings, pseudo_dir: Path, figures: Path, link: str) -> str:
    """Render the figures into `figures` and return the markdown text, which finds them under `link`."""
    rel = Path(link)
    plot_pr_curves(ev, figures / "pr_curves.png")
    plot_delta_bars(ev, figures / "delta_map50.png")
    shown = [v for v in ("baseline", "augmented") if v in ev.detections] or list(ev.detections)[:2]
    detections_grid(ev, settings, figures / "test_detections.png", shown)
    has_pseudo = pseudo_grid(pseudo_dir, ev.names, figures / "pseudo_labels.png", settings.grid_images,
                             settings.grid_scale)
    reference = next(iter(ev.summaries))
    overall = pd.DataFrame([{"variant": v, **s.overall} for v, s in ev.summaries.items()])
    deltas = pd.DataFrame([{"variant": v, "metric": m, **d["overall"][m]} for v, d in ev.deltas.items() for m in METRICS])
    per_class = pd.DataFrame([{"class": n, "targets": int(ev.summaries[reference].n_targets[c]),
                               **{f"{v} AP50": s.per_class["mAP50"][c] for v, s in ev.summaries.items()},
                               **{f"{v} dAP50 [CI]": _delta_cell(d, c) for v, d in ev.deltas.items()}}
                              for c, n in enumerate(ev.names)])
    ci = int(settings.bootstrap.ci * 100)
    parts = [f"# Detection report\n\n{len(ev.images)} held-out test images; every variant predicted with "
             f"conf >= {settings.predict.conf}, NMS IoU {settings.predict.iou}. Deltas are against `{reference}` with a paired "
             f"bootstrap {ci}% CI over test images ({settings.bootstrap.n_resamples} resamples). A delta whose CI "
             "excludes 0 is a difference this test set can resolve.\n\n",
             "## Overall\n", markdown_table(overall), "\n## Delta vs " + reference + "\n", markdown_table(deltas),
             "\n## Per class (mAP50)\n", markdown_table(per_class),
             f"\n![delta mAP50 per class]({rel / 'delta_map50.png'})\n",
             "\n## PR curves (IoU 0.5)\n", f"![PR curves]({rel / 'pr_curves.png'})\n",
             f"\n## Test detections (conf >= {settings.draw_conf})\n", f"![test detections]({rel / 'test_detections.png'})\n"]
    if has_pseudo:
        parts += ["\n## Pseudo-labelled synthetic images\n", f"![pseudo labels]({rel / 'pseudo_labels.png'})\n"]
    return "".join(parts)


def _delta_cell(d: dict, c: int) -> str:
    m = d["per_class"]["mAP50"]
    return f"{markdown_cell(m['delta'][c])} [{markdown_cell(m['ci_low'][c])}, {markdown_cell(m['ci_high'][c])}]"
