"""Detection metrics from per-image matches, and paired bootstrap CIs of variant deltas.

Predictions of each test image are matched to its ground truth once (`match_image`: ultralytics'
`box_iou` + `DetectionValidator.match_predictions`, 10 IoU thresholds 0.50:0.05:0.95), so any
subset of images, with repeats, can be scored again by concatenating their matches and running
ultralytics' `ap_per_class` (`summarize`). That is what the bootstrap needs (Efron & Tibshirani
1993, percentile interval): resample the test images with replacement, score both variants on the
same resample (paired), take the delta, and report the point delta with the `ci` percentile
interval of the resampled deltas.

P and R are ultralytics' precision and recall at the confidence that maximises the mean F1;
mAP50 / mAP50-95 use COCO 101-point interpolation (a perfect detector scores 0.995, not 1).
Per-class values are NaN for classes without ground truth in the (re)sample; means skip them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from core.params import check_at_least
from detection.yolo import Detections, ultralytics_offline

METRICS = ("precision", "recall", "mAP50", "mAP50-95")
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


@dataclass(frozen=True)
class ImageMatch:
    """One image: tp bool [n_pred, 10] per IoU threshold, conf [n_pred], pred_cls [n_pred], target_cls [n_gt]."""

    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    target_cls: np.ndarray


def match_image(pred: Detections, gt_xyxy: np.ndarray, gt_cls: np.ndarray) -> ImageMatch:
    """Match one image's predictions (any order) to its ground truth boxes (xyxy px)."""
    ultralytics_offline()
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import box_iou

    order = np.argsort(-pred.conf, kind="stable")  # match_predictions expects descending confidence
    pred = pred.select(order)
    tp = np.zeros((len(pred.cls), len(IOU_THRESHOLDS)), dtype=bool)
    if len(pred.cls) and len(gt_cls):
        iou = box_iou(torch.as_tensor(gt_xyxy, dtype=torch.float32), torch.as_tensor(pred.xyxy))  # [n_gt, n_pred]
        # match_predictions only reads `iouv` from the validator; calling it unbound avoids building one
        # (a validator creates a run directory).
        validator = SimpleNamespace(iouv=IOU_THRESHOLDS)
        tp = DetectionValidator.match_predictions(validator, torch.as_tensor(pred.cls), torch.as_tensor(gt_cls),
                                                  iou).numpy()
    return ImageMatch(tp, pred.conf.astype(np.float64), pred.cls.astype(np.int64), np.asarray(gt_cls, np.int64))


@dataclass(frozen=True)
class Summary:
    """Scores of a set of image matches; `per_class[m]` is float [n_classes] (NaN: no ground truth)."""

    overall: dict[str, float]
    per_class: dict[str, np.ndarray]
    n_targets: np.ndarray                 # int [n_classes]
    recall_grid: np.ndarray               # float [1000], x axis of the PR curves
    pr_curves: np.ndarray                 # float [n_classes, 1000] precision at IoU 0.5 (NaN rows: no GT)


def summarize(matches: Sequence[ImageMatch], n_classes: int) -> Summary:
    """P, R, mAP50, mAP50-95 overall and per class with ultralytics' `ap_per_class`."""
    ultralytics_offline()
    from ultralytics.utils.metrics import Metric, ap_per_class

    tp = np.concatenate([m.tp for m in matches]) if matches else np.zeros((0, 10), bool)
    conf = np.concatenate([m.conf for m in matches]) if matches else np.zeros(0)
    pred_cls = np.concatenate([m.pred_cls for m in matches]) if matches else np.zeros(0, np.int64)
    target_cls = np.concatenate([m.target_cls for m in matches]) if matches else np.zeros(0, np.int64)
    results = ap_per_class(tp, conf, pred_cls, target_cls)
    metric = Metric()
    metric.nc = n_classes
    metric.update(results[2:])
    per_class = {m: np.full(n_classes, np.nan) for m in METRICS}
    curves = np.full((n_classes, len(results[10])), np.nan)
    for row, c in enumerate(metric.ap_class_index):
        per_class["precision"][c], per_class["recall"][c] = metric.p[row], metric.r[row]
        per_class["mAP50"][c], per_class["mAP50-95"][c] = metric.all_ap[row, 0], metric.all_ap[row].mean()
        curves[c] = results[11][row]
    overall = dict(zip(METRICS, (float(v) for v in metric.mean_results())))
    return Summary(overall, per_class, np.bincount(target_cls, minlength=n_classes), results[10], curves)


@dataclass(frozen=True)
class BootstrapSettings:
    """params.yaml `evaluate.bootstrap`: the paired bootstrap over test images."""

    n_resamples: int
    seed: int
    ci: float                   # the interval's coverage, in (0, 1)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "n_resamples")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci: must be in (0, 1), got {self.ci}")


def bootstrap_delta(base: Sequence[ImageMatch], other: Sequence[ImageMatch], n_classes: int,
                    settings: BootstrapSettings) -> dict[str, Any]:
    """Paired bootstrap of `other - base` for every metric, overall and per class.

    Returns {"overall": {metric: {delta, ci_low, ci_high}}, "per_class": {metric: {...: float [n_classes]}}}.
    """
    if len(base) != len(other):
        raise ValueError(f"paired bootstrap needs the same images: {len(base)} vs {len(other)}")
    point_base, point_other = summarize(base, n_classes), summarize(other, n_classes)
    rng = np.random.default_rng(settings.seed)
    overall = np.zeros((settings.n_resamples, len(METRICS)))
    per_class = np.zeros((settings.n_resamples, len(METRICS), n_classes))
    for b in range(settings.n_resamples):
        idx = rng.integers(0, len(base), len(base))  # the same resample for both variants
        sa = summarize([base[i] for i in idx], n_classes)
        sb = summarize([other[i] for i in idx], n_classes)
        overall[b] = [sb.overall[m] - sa.overall[m] for m in METRICS]
        per_class[b] = [sb.per_class[m] - sa.per_class[m] for m in METRICS]
    alpha = (1.0 - settings.ci) / 2 * 100
    low, high = np.percentile(overall, [alpha, 100 - alpha], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: classes absent from the test set
        c_low, c_high = np.nanpercentile(per_class, [alpha, 100 - alpha], axis=0)
    return {
        "overall": {m: {"delta": point_other.overall[m] - point_base.overall[m],
                        "ci_low": float(low[k]), "ci_high": float(high[k])} for k, m in enumerate(METRICS)},
        "per_class": {m: {"delta": point_other.per_class[m] - point_base.per_class[m],
                          "ci_low": c_low[k], "ci_high": c_high[k]} for k, m in enumerate(METRICS)},
    }
