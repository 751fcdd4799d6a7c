"""Every YOLO variant on the held-out `test` split with identical settings; deltas vs baseline.

Each variant predicts once on the test images (`model.predict`, fixed conf / NMS IoU / max_det,
the training imgsz); predictions are matched per image (`detection.metrics.match_image`), scored
with ultralytics' `ap_per_class`, and every variant's delta against the baseline gets a paired
bootstrap CI over test images (`detection.metrics.bootstrap_delta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import StageError
from core.params import check_at_least
from detection.metrics import METRICS, BootstrapSettings, ImageMatch, Summary, bootstrap_delta, match_image, summarize
from detection.prepared import load_manifest, read_rgb
from detection.yolo import Detections, PredictSettings, load_model, predict, read_labels_px


@dataclass(frozen=True)
class EvaluateSettings:
    """params.yaml `evaluate`."""

    variants: tuple[str, ...]    # the first is the reference for the deltas
    predict: PredictSettings     # conf: a low floor, as for mAP
    bootstrap: BootstrapSettings
    draw_conf: float             # figures: detections drawn above this confidence
    grid_images: int             # figures: images per grid
    grid_scale: int              # figures: nearest-neighbour upscale of the tiny images

    def __post_init__(self) -> None:
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: expected distinct variant names, got {list(self.variants)}")
        check_at_least(self, 1, "grid_images", "grid_scale")


@dataclass(frozen=True)
class TestImage:
    image_id: str
    rgb: np.ndarray              # uint8 [H, W, 3]
    gt_xyxy: np.ndarray          # float32 [n, 4] px
    gt_cls: np.ndarray           # int64 [n]


@dataclass(frozen=True)
class Evaluation:
    names: list[str]
    images: list[TestImage]
    detections: dict[str, list[Detections]]
    summaries: dict[str, Summary]
    deltas: dict[str, dict[str, Any]]    # variant -> bootstrap_delta result (not the reference)


def load_test_images(prepared: Path | str) -> list[TestImage]:
    frame = load_manifest(prepared, ("test",))
    if frame.empty:
        raise StageError(f"{prepared}/manifest.csv: no 'test' images")
    images = []
    for row in frame.itertuples():
        rgb = read_rgb(row.abspath)
        xyxy, cls = read_labels_px(row.abspath, rgb.shape[1], rgb.shape[0])
        images.append(TestImage(row.image_id, rgb, xyxy, cls))
    return images


def evaluate(prepared: Path | str, models: Path | str, names: list[str], settings: EvaluateSettings,
             imgsz: int) -> Evaluation:
    """Predict, match and score every variant in `settings.variants` (`models/<variant>/best.pt`)."""
    images = load_test_images(prepared)
    detections: dict[str, list[Detections]] = {}
    matches: dict[str, list[ImageMatch]] = {}
    for variant in settings.variants:
        model = load_model(Path(models) / variant / "best.pt")
        detections[variant] = predict(model, [im.rgb for im in images], settings.predict, imgsz)
        matches[variant] = [match_image(d, im.gt_xyxy, im.gt_cls) for d, im in zip(detections[variant], images)]
    summaries = {v: summarize(m, len(names)) for v, m in matches.items()}
    reference = settings.variants[0]
    deltas = {v: bootstrap_delta(matches[reference], matches[v], len(names), settings.bootstrap)
              for v in settings.variants[1:]}
    return Evaluation(names, images, detections, summaries, deltas)


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def metrics_json(ev: Evaluation) -> dict[str, Any]:
    """`reports/metrics.json`: flat enough for `dvc metrics diff` (NaN -> null)."""
    out: dict[str, Any] = {"test_images": len(ev.images)}
    for variant, s in ev.summaries.items():
        out[variant] = {**s.overall, "per_class": {
            n: {m: _finite(s.per_class[m][c]) for m in METRICS} for c, n in enumerate(ev.names)}}
    for variant, d in ev.deltas.items():
        out[f"delta_{variant}"] = {
            **{m: d["overall"][m] for m in METRICS},
            "per_class": {n: {m: {k: _finite(d["per_class"][m][k][c]) for k in ("delta", "ci_low", "ci_high")}
                              for m in METRICS} for c, n in enumerate(ev.names)}}
    return out


def per_class_frame(ev: Evaluation) -> pd.DataFrame:
    """One row per (variant, class): targets, P, R, mAP50, mAP50-95 and the delta + CI vs the reference."""
    rows = []
    for variant, s in ev.summaries.items():
        for c, name in enumerate(ev.names):
            row = {"variant": variant, "class": name, "n_targets": int(s.n_targets[c]),
                   **{m: s.per_class[m][c] for m in METRICS}}
            if variant in ev.deltas:
                for m in ("mAP50", "mAP50-95"):
                    d = ev.deltas[variant]["per_class"][m]
                    row.update({f"delta_{m}": d["delta"][c], f"delta_{m}_ci_low": d["ci_low"][c],
                                f"delta_{m}_ci_high": d["ci_high"][c]})
            rows.append(row)
    return pd.DataFrame(rows)


def write_pr_curves(ev: Evaluation, out_dir: Path, points: int = 101) -> None:
    """`out_dir/<variant>/<class>.csv` with columns recall, precision (IoU 0.5), for DVC plots."""
    grid = np.linspace(0, 1, points)
    for variant, s in ev.summaries.items():
        (out_dir / variant).mkdir(parents=True, exist_ok=True)
        for c, name in enumerate(ev.names):
            if not np.isfinite(s.pr_curves[c]).all():
                continue
            precision = np.interp(grid, s.recall_grid, s.pr_curves[c])
            pd.DataFrame({"recall": grid.round(4), "precision": precision.round(5)}).to_csv(
                out_dir / variant / f"{name}.csv", index=False)


def variants_present(variants: Sequence[str], models: Path | str) -> None:
    missing = [v for v in variants if not (Path(models) / v / "best.pt").is_file()]
    if missing:
        raise StageError(f"{models}: no best.pt for variant(s) {', '.join(missing)}; run train_yolo first")
