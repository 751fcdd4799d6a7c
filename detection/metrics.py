"""Detection metrics from per-image matches, spread over training seeds, and a two-level paired
bootstrap of each variant's delta against the reference.

Predictions of each test image are matched to its ground truth once (`match_image`: ultralytics'
`box_iou` + `DetectionValidator.match_predictions`, 10 IoU thresholds 0.50:0.05:0.95), so any
multiset of images can be scored again by repeating their matches and running ultralytics'
`ap_per_class` (`MatchSet`, `ap_scores`). Scores are float [4 metrics, n_classes + 1]: METRICS by
class, the last column the mean over the classes with ground truth (ultralytics' `Metric`).

P and R are ultralytics' precision and recall at the confidence that maximises the mean F1;
mAP50 / mAP50-95 use COCO 101-point interpolation (a perfect detector scores 0.995, not 1).
Per-class values are NaN for classes without ground truth in the (re)sample; means skip them.

The delta interval (`bootstrap_deltas`) is a percentile interval (Efron & Tibshirani 1993) of a
two-level bootstrap over the two crossed sources of chance, test images and training seeds (every
seed is scored on every image; Owen 2007, "The pigeonhole bootstrap"): each resample draws the
test images with replacement, the same draw for every variant and seed (paired), and,
independently per variant, that variant's training seeds with replacement; the statistic is the
mean over the drawn seeds of the variant's score on the drawn images minus the same for the
reference. It so covers both which test images were held out and which training runs happened.
"""

from __future__ import annotations

import functools
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Mapping, Sequence

import numpy as np
import torch

from core.params import check_at_least
from detection.yolo import ultralytics_offline
from scenes.boxes import Detections

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
class MatchSet:
    """One model's matches on all test images, stacked once so that any resample is rescored by
    repeating rows: prediction rows in descending confidence, each with its image's index."""

    tp: np.ndarray              # bool [n_pred, 10]
    conf: np.ndarray            # float [n_pred], descending
    pred_cls: np.ndarray        # int [n_pred]
    pred_image: np.ndarray      # int [n_pred]
    target_cls: np.ndarray      # int [n_gt]
    target_image: np.ndarray    # int [n_gt]
    n_images: int

    @staticmethod
    def stack(matches: Sequence[ImageMatch]) -> MatchSet:
        def cat(name: str, empty: np.ndarray) -> np.ndarray:
            return np.concatenate([getattr(m, name) for m in matches]) if matches else empty

        def image_index(name: str) -> np.ndarray:
            return np.repeat(np.arange(len(matches)), [len(getattr(m, name)) for m in matches]).astype(np.int64)

        order = np.argsort(-cat("conf", np.zeros(0)), kind="stable")
        return MatchSet(cat("tp", np.zeros((0, len(IOU_THRESHOLDS)), bool))[order], cat("conf", np.zeros(0))[order],
                        cat("pred_cls", np.zeros(0, np.int64))[order], image_index("conf")[order],
                        cat("target_cls", np.zeros(0, np.int64)), image_index("target_cls"), len(matches))

    def rows(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """tp, conf, pred_cls, target_cls of the resample holding image i `counts[i]` times (all once
        by default): each row repeated in place, so the confidence stays sorted."""
        if counts is None:
            return self.tp, self.conf, self.pred_cls, self.target_cls
        reps = counts[self.pred_image]
        return (np.repeat(self.tp, reps, axis=0), np.repeat(self.conf, reps), np.repeat(self.pred_cls, reps),
                np.repeat(self.target_cls, counts[self.target_image]))


def ap_scores(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
              n_classes: int) -> tuple[np.ndarray, tuple]:
    """ultralytics' `ap_per_class` as scores float [4, n_classes + 1], and its raw results (curves)."""
    ultralytics_offline()
    from ultralytics.utils.metrics import ap_per_class

    results = ap_per_class(tp, conf, pred_cls, target_cls)
    p, r, ap, classes = results[2], results[3], results[5], results[6]
    scores = np.full((len(METRICS), n_classes + 1), np.nan)
    scores[:, classes] = [p, r, ap[:, 0], ap.mean(1)]
    # the overall column as ultralytics' Metric.mean_results: means over the classes with ground truth
    scores[:, -1] = [p.mean(), r.mean(), ap[:, 0].mean(), ap.mean()] if len(classes) else 0.0
    return scores, results


@dataclass(frozen=True)
class Summary:
    """Scores of one set of image matches; see `ap_scores` for the layout of `scores`."""

    scores: np.ndarray                    # float [4, n_classes + 1] (NaN: no ground truth)
    n_targets: np.ndarray                 # int [n_classes]
    recall_grid: np.ndarray               # float [1000], x axis of the PR curves
    pr_curves: np.ndarray                 # float [n_classes, 1000] precision at IoU 0.5 (NaN rows: no GT)

    @property
    def overall(self) -> dict[str, float]:
        return {m: float(self.scores[k, -1]) for k, m in enumerate(METRICS)}

    @property
    def per_class(self) -> dict[str, np.ndarray]:
        return {m: self.scores[k, :-1] for k, m in enumerate(METRICS)}


def summarize(matches: Sequence[ImageMatch], n_classes: int) -> Summary:
    """P, R, mAP50, mAP50-95 overall and per class, and the PR curves, of a set of image matches."""
    stacked = MatchSet.stack(matches)
    scores, results = ap_scores(*stacked.rows(), n_classes)
    curves = np.full((n_classes, len(results[10])), np.nan)
    curves[results[6]] = results[11][:len(results[6])]
    return Summary(scores, np.bincount(stacked.target_cls, minlength=n_classes), results[10], curves)


def seed_spread(per_seed: np.ndarray) -> dict[str, np.ndarray]:
    """mean, sd (sample standard deviation, ddof 1; NaN for one seed), min and max over axis 0 (the seeds)."""
    sd = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.full(per_seed.shape[1:], np.nan)
    return {"mean": per_seed.mean(axis=0), "sd": sd, "min": per_seed.min(axis=0), "max": per_seed.max(axis=0)}


@dataclass(frozen=True)
class BootstrapSettings:
    """params.yaml `evaluate.bootstrap`: the two-level paired bootstrap (test images, training seeds)."""

    n_resamples: int
    seed: int
    ci: float                   # the interval's coverage, in (0, 1)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "n_resamples")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci: must be in (0, 1), got {self.ci}")


@dataclass(frozen=True)
class Delta:
    """A variant minus the reference, float [4, n_classes + 1] each (the `ap_scores` layout)."""

    delta: np.ndarray           # seed mean minus seed mean on the whole test split
    ci_low: np.ndarray
    ci_high: np.ndarray

    @property
    def resolved(self) -> np.ndarray:
        """bool: the interval excludes 0 (False where it is undefined)."""
        return (self.ci_low > 0) | (self.ci_high < 0)


def bootstrap_deltas(matches: Mapping[str, Sequence[Sequence[ImageMatch]]], n_classes: int,
                     settings: BootstrapSettings, workers: int = 1) -> dict[str, Delta]:
    """Every variant after the first (the reference) minus the reference, with the module's two-level
    paired bootstrap interval. `matches[variant][k]` holds seed k's matches, one per test image.
    `workers` processes score the resamples (the draws are made here first, so any count gives the
    same intervals)."""
    sets = [[MatchSet.stack(m) for m in per_seed] for per_seed in matches.values()]
    n_images = {s.n_images for per_seed in sets for s in per_seed}
    if len(n_images) != 1:
        raise ValueError(f"paired bootstrap needs the same images for every model: {sorted(n_images)} images")
    (n,) = n_images
    point = np.stack([np.mean([ap_scores(*s.rows(), n_classes)[0] for s in per_seed], axis=0) for per_seed in sets])
    # one stream for the images, one per variant for its seeds: adding a variant leaves the others' draws alone
    image_rng, *seed_rngs = map(np.random.default_rng, np.random.SeedSequence(settings.seed).spawn(1 + len(sets)))
    counts = [np.bincount(image_rng.integers(0, n, n), minlength=n) for _ in range(settings.n_resamples)]
    seeds = [[rng.integers(0, len(per_seed), len(per_seed)) for rng, per_seed in zip(seed_rngs, sets)]
             for _ in range(settings.n_resamples)]
    chunks = np.array_split(np.arange(settings.n_resamples), max(1, min(workers, settings.n_resamples)))
    score = functools.partial(score_resamples, sets, n_classes)
    jobs = ([[counts[b] for b in chunk] for chunk in chunks], [[seeds[b] for b in chunk] for chunk in chunks])
    if len(chunks) == 1:
        parts = list(map(score, *jobs))
    else:
        with ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(score, *jobs))
    draws = np.concatenate(parts)                               # [resample, variant, metric, class + overall]
    alpha = (1.0 - settings.ci) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes absent from the test set
        low, high = np.nanpercentile(draws[:, 1:] - draws[:, :1], [alpha, 100 - alpha], axis=0)
    return {v: Delta(point[k] - point[0], low[k - 1], high[k - 1]) for k, v in enumerate(matches) if k}


def score_resamples(sets: list[list[MatchSet]], n_classes: int, counts: list[np.ndarray],
                    seeds: list[list[np.ndarray]]) -> np.ndarray:
    """Per resample (image counts, and per variant its drawn seeds), each variant's mean score over
    its drawn seeds: float [resamples, variants, 4, n_classes + 1]."""
    draws = np.empty((len(counts), len(sets), len(METRICS), n_classes + 1))
    for b, (image_counts, drawn) in enumerate(zip(counts, seeds)):
        for k, (per_seed, chosen) in enumerate(zip(sets, drawn)):
            scored = {i: ap_scores(*per_seed[i].rows(image_counts), n_classes)[0] for i in np.unique(chosen)}  # once each
            draws[b, k] = np.mean([scored[i] for i in chosen], axis=0)
    return draws
