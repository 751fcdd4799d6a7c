"""Every YOLO variant and training seed on the held-out `test` split with identical settings;
per-variant means and spreads over seeds; deltas vs the reference with two-level bootstrap intervals.

Each (variant, seed) predicts once on the test images (`model.predict`, fixed conf / NMS IoU /
max_det, the training imgsz); predictions are matched per image (`detection.metrics.match_image`),
scored with ultralytics' `ap_per_class`, aggregated over seeds (`seed_spread`: mean, sample sd,
min..max), and every variant's delta against the first gets the interval of
`detection.metrics.bootstrap_deltas` (test images and training seeds resampled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import StageError
from core.params import check_at_least
from core.tables import read_table
from detection.budget import BUDGET_FILE, read_budget
from detection.metrics import (
    METRICS,
    BootstrapSettings,
    Delta,
    ImageMatch,
    Summary,
    bootstrap_deltas,
    match_image,
    seed_spread,
    summarize,
)
from detection.yolo import PredictSettings, load_model, predict, seed_dir
from scenes.boxes import Detections, read_labels_px
from scenes.prepared import load_manifest, read_rgb


@dataclass(frozen=True)
class EvaluateSettings:
    """params.yaml `evaluate`."""

    variants: tuple[str, ...]    # the first is the reference for the deltas
    predict: PredictSettings     # conf: a low floor, as for mAP
    bootstrap: BootstrapSettings
    draw_conf: float             # figures: detections drawn above this confidence
    grid_images: int             # figures: images per grid
    grid_scale: int              # figures: nearest-neighbour upscale of the tiny images
    reference_floor: float       # reference mAP50 below this: its pseudo-labels cannot work, comparisons are void

    def __post_init__(self) -> None:
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: expected distinct variant names, got {list(self.variants)}")
        check_at_least(self, 1, "grid_images", "grid_scale")
        check_at_least(self, 0, "reference_floor")


@dataclass(frozen=True)
class TestImage:
    image_id: str
    rgb: np.ndarray              # uint8 [H, W, 3]
    gt_xyxy: np.ndarray          # float32 [n, 4] px
    gt_cls: np.ndarray           # int64 [n]


@dataclass(frozen=True)
class Evaluation:
    names: list[str]
    seeds: tuple[int, ...]
    images: list[TestImage]
    detections: dict[str, list[Detections]]   # variant -> the first seed's, per test image (figures)
    summaries: dict[str, list[Summary]]       # variant -> one per seed, on the whole test split
    pooled: dict[str, Summary]                # variant -> every seed's matches together (PR curves)
    deltas: dict[str, Delta]                  # every variant but the reference
    training: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> train images, epochs
    budget: dict[str, Any] | None = None      # detection.budget record of the baseline (None: not recorded)

    @property
    def reference(self) -> str:
        return next(iter(self.summaries))

    def spread(self, variant: str) -> dict[str, np.ndarray]:
        """`seed_spread` of the variant's scores: mean, sd, min, max, each float [4, n_classes + 1]."""
        return seed_spread(self.per_seed(variant))

    def per_seed(self, variant: str) -> np.ndarray:
        return np.stack([s.scores for s in self.summaries[variant]])   # [n_seeds, 4, n_classes + 1]


def load_test_images(prepared: Path | str, split: str = "test") -> list[TestImage]:
    """The boxed images of `split` (the held-out `test` unless asked) with their ground truth."""
    frame = load_manifest(prepared, (split,))
    if frame.empty:
        raise StageError(f"{prepared}/manifest.csv: no '{split}' images")
    images = []
    for row in frame.itertuples():
        rgb = read_rgb(row.abspath)
        xyxy, cls = read_labels_px(row.abspath, rgb.shape[1], rgb.shape[0])
        images.append(TestImage(row.image_id, rgb, xyxy, cls))
    return images


def evaluate(prepared: Path | str, models: Path | str, names: list[str], settings: EvaluateSettings,
             seeds: Sequence[int], imgsz: int, workers: int = 1) -> Evaluation:
    """Predict, match and score every variant and seed (`models/<variant>/seed_<s>/best.pt`); the
    bootstrap's resamples are scored in `workers` processes."""
    images = load_test_images(prepared)
    detections: dict[str, list[Detections]] = {}
    matches: dict[str, list[list[ImageMatch]]] = {}
    for variant in settings.variants:
        matches[variant] = []
        for seed in seeds:
            model = load_model(seed_dir(Path(models) / variant, seed) / "best.pt")
            found = predict(model, [im.rgb for im in images], settings.predict, imgsz)
            detections.setdefault(variant, found)  # the first seed's, for the figures
            matches[variant].append([match_image(d, im.gt_xyxy, im.gt_cls) for d, im in zip(found, images)])
    n = len(names)
    summaries = {v: [summarize(m, n) for m in per_seed] for v, per_seed in matches.items()}
    pooled = {v: summarize([m for seed in per_seed for m in seed], n) for v, per_seed in matches.items()}
    deltas = bootstrap_deltas(matches, n, settings.bootstrap, workers)
    training = {v: training_record(Path(models) / v) for v in settings.variants}
    budget_dir = Path(models) / "baseline"
    budget = read_budget(budget_dir) if (budget_dir / BUDGET_FILE).is_file() else None
    return Evaluation(names, tuple(seeds), images, detections, summaries, pooled, deltas,
                      {v: record for v, record in training.items() if record}, budget)


def training_record(variant_dir: Path) -> dict[str, int]:
    """What a variant trained on, from the params.json train_yolo writes: {"images", "epochs", "batches"}
    ({} if absent)."""
    path = variant_dir / "params.json"
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        return {"images": int(record["n_images"]["train"]), "epochs": int(record["epochs"]),
                "batches": int(record["batches"])}
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(f"{path}: not a train_yolo params.json ({err}); rerun train_yolo") from None


def void_comparisons(ev: Evaluation, reference_floor: float) -> dict[str, str]:
    """Why a comparison with the reference says nothing, in words: {"reference": ...} when the
    reference's mean mAP50 is below `reference_floor` (a detector that weak gives no pseudo-labels
    worth the name, and deltas against it are noise), {variant: ...} for a variant that trained on
    the reference's images alone (it received no extra images: nothing was added to compare)."""
    void = {}
    reference_map50 = ev.spread(ev.reference)["mean"][METRICS.index("mAP50"), -1]
    if not reference_map50 >= reference_floor:
        void["reference"] = (f"`{ev.reference}` reached mAP50 {reference_map50:.3f}, below the floor of "
                             f"{reference_floor} (`evaluate.reference_floor`): its pseudo-labels cannot work and "
                             "every delta against it is void")
    reference_images = ev.training.get(ev.reference, {}).get("images")
    for variant in ev.deltas:
        images = ev.training.get(variant, {}).get("images")
        if reference_images is not None and images == reference_images:
            void[variant] = (f"`{variant}` received no extra images: it trained on the same {images} images as "
                             f"`{ev.reference}`, so its delta is void")
    return void


def finite(x: float, digits: int | None = None) -> float | None:
    """JSON-safe: NaN -> None; rounded to `digits` when given."""
    if not np.isfinite(x):
        return None
    return float(x) if digits is None else round(float(x), digits)


def variant_metrics(ev: Evaluation, digits: int = 4) -> dict[str, dict[str, float | None]]:
    """The DVC metrics, one small record per variant (`<paths.metrics>/<variant>.json`, one row of
    `dvc metrics show`): the seed means of precision, recall, mAP50 and mAP50-95, and for every
    variant but the reference its mAP50 delta with the bootstrap interval."""
    out: dict[str, dict[str, float | None]] = {}
    ap50 = METRICS.index("mAP50")
    for v in ev.summaries:
        mean = ev.spread(v)["mean"]
        out[v] = {m: finite(mean[k, -1], digits) for k, m in enumerate(METRICS)}
        if v in ev.deltas:
            d = ev.deltas[v]
            out[v].update({"mAP50_delta": finite(d.delta[ap50, -1], digits),
                           "mAP50_delta_low": finite(d.ci_low[ap50, -1], digits),
                           "mAP50_delta_high": finite(d.ci_high[ap50, -1], digits)})
    return out


def summary_json(ev: Evaluation, void: dict[str, str], digits: int = 4) -> dict[str, Any]:
    """`reports/summary.json`: per variant the seed means and each seed's mAP50; per other variant
    the mAP50 and mAP50-95 deltas with interval and resolved flag; per class the seed-mean AP50 of
    every variant; `void`: a flag for the reference and for each other variant, true where
    `void_comparisons` gave a reason; the detector budget."""
    out: dict[str, Any] = {"test_images": len(ev.images), "seeds": len(ev.seeds),
                           "void": {name: name in void for name in ("reference", *ev.deltas)}}
    if ev.budget:
        out["budget"] = {"epochs": ev.budget["epochs"], "batches": ev.budget["batches"]}
    ap50 = METRICS.index("mAP50")
    for v in ev.summaries:
        mean, per_seed = ev.spread(v)["mean"], ev.per_seed(v)
        out[v] = {**{m: finite(mean[k, -1], digits) for k, m in enumerate(METRICS)},
                  "mAP50_seed": {str(s): finite(x, digits) for s, x in zip(ev.seeds, per_seed[:, ap50, -1])}}
    for v, d in ev.deltas.items():
        out[f"delta_{v}"] = {m: {"delta": finite(d.delta[k, -1], digits), "ci_low": finite(d.ci_low[k, -1], digits),
                                 "ci_high": finite(d.ci_high[k, -1], digits), "resolved": bool(d.resolved[k, -1])}
                             for k, m in enumerate(METRICS) if m in ("mAP50", "mAP50-95")}
    means = {v: ev.spread(v)["mean"] for v in ev.summaries}
    out["AP50"] = {name: {v: finite(mean[ap50, c], digits) for v, mean in means.items()}
                   for c, name in enumerate(ev.names)}
    return out


def _cell(ev: Evaluation, variant: str, column: int) -> dict[str, Any]:
    """One class (or, at column -1, overall) of a variant: each metric's seed spread, per-seed values, delta."""
    spread, per_seed = ev.spread(variant), ev.per_seed(variant)
    out: dict[str, Any] = {}
    for k, m in enumerate(METRICS):
        out[m] = {**{key: finite(a[k, column]) for key, a in spread.items()},
                  "per_seed": {str(s): finite(x) for s, x in zip(ev.seeds, per_seed[:, k, column])}}
        if variant in ev.deltas:
            d = ev.deltas[variant]
            out[m]["delta"] = {"delta": finite(d.delta[k, column]), "ci_low": finite(d.ci_low[k, column]),
                               "ci_high": finite(d.ci_high[k, column]), "resolved": bool(d.resolved[k, column])}
    return out


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    """`reports/evaluation.json`: everything behind metrics.json (NaN -> null)."""
    n_targets = ev.summaries[ev.reference][0].n_targets
    return {"test_images": len(ev.images), "seeds": list(ev.seeds), "classes": ev.names, "reference": ev.reference,
            "variants": {v: {"overall": _cell(ev, v, -1),
                             "per_class": {name: {"n_targets": int(n_targets[c]), **_cell(ev, v, c)}
                                           for c, name in enumerate(ev.names)}} for v in ev.summaries}}


def per_class_frame(ev: Evaluation) -> pd.DataFrame:
    """One row per (variant, class): targets; per metric the seed mean, sd, min, max and the delta +
    interval + resolved flag vs the reference (empty for the reference)."""
    n_targets = ev.summaries[ev.reference][0].n_targets
    rows = []
    for v in ev.summaries:
        spread = ev.spread(v)
        for c, name in enumerate(ev.names):
            row: dict[str, Any] = {"variant": v, "class": name, "n_targets": int(n_targets[c])}
            for k, m in enumerate(METRICS):
                row.update({f"{m}_{key}": a[k, c] for key, a in spread.items()})
                if v in ev.deltas:
                    d = ev.deltas[v]
                    row.update({f"delta_{m}": d.delta[k, c], f"delta_{m}_ci_low": d.ci_low[k, c],
                                f"delta_{m}_ci_high": d.ci_high[k, c], f"delta_{m}_resolved": bool(d.resolved[k, c])})
            rows.append(row)
    return pd.DataFrame(rows)


def write_pr_curves(ev: Evaluation, out_dir: Path, points: int = 101) -> None:
    """`out_dir/<class>.csv`: recall, then each variant's precision at it (IoU 0.5, pooled over seeds;
    empty where a class has no curve), so that a DVC plot overlays the variants, one chart per class."""
    grid = np.linspace(0, 1, points)
    out_dir.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(ev.names):
        columns = {"recall": grid.round(4)}
        for variant, s in ev.pooled.items():
            curve = s.pr_curves[c]
            columns[variant] = (np.interp(grid, s.recall_grid, curve).round(5) if np.isfinite(curve).all()
                                else np.full(points, np.nan))
        pd.DataFrame(columns).to_csv(out_dir / f"{name}.csv", index=False)


LOSS_COLUMNS = ("train/box_loss", "train/cls_loss", "train/dfl_loss")


def write_training_loss(ev: Evaluation, models: Path | str, out_dir: Path) -> None:
    """`out_dir/<variant>.csv`: batches trained, then YOLO's three training losses and their sum, the
    mean over seeds at each epoch (ultralytics' results.csv), on one batch axis for every variant."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for variant, record in ev.training.items():
        per_seed = [read_table(seed_dir(Path(models) / variant, s) / "results.csv", ("epoch", *LOSS_COLUMNS),
                               made_by="train_yolo") for s in ev.seeds]
        frame = pd.concat(per_seed).groupby("epoch", as_index=False)[list(LOSS_COLUMNS)].mean()
        frame.columns = ["epoch", *(c.split("/")[1] for c in LOSS_COLUMNS)]
        frame.insert(0, "batches", frame["epoch"] * (record["batches"] // max(1, record["epochs"])))
        frame["loss"] = frame[["box_loss", "cls_loss", "dfl_loss"]].sum(axis=1)
        frame.round(5).to_csv(out_dir / f"{variant}.csv", index=False)


def variants_present(variants: Sequence[str], seeds: Sequence[int], models: Path | str) -> None:
    """One line naming every (variant, seed) without `best.pt`."""
    missing = []
    for v in variants:
        absent = [str(s) for s in seeds if not (seed_dir(Path(models) / v, s) / "best.pt").is_file()]
        if absent:
            missing.append(f"{v} (seed {', '.join(absent)})")
    if missing:
        raise StageError(f"{models}: no <variant>/seed_<s>/best.pt for {'; '.join(missing)}; run train_yolo first")
