"""Detection metrics against hand-computed fixtures, seed spreads, and the two-level paired bootstrap of deltas."""

import numpy as np
import pytest

from detection.metrics import (
    METRICS,
    BootstrapSettings,
    Delta,
    ImageMatch,
    MatchSet,
    ap_scores,
    bootstrap_deltas,
    match_image,
    seed_spread,
    summarize,
)
from detection.yolo import ultralytics_offline
from scenes.boxes import Detections

GT = np.array([[0, 0, 10, 10]], np.float32)


def dets(boxes, conf, cls) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(conf, np.float32), np.array(cls, np.int64))


def two_images():
    """Image 1: a TP (conf .9) and an FP (conf .8); image 2: a TP (conf .7). One class, two targets."""
    first = match_image(dets([[20, 20, 30, 30], [0, 0, 10, 10]], [0.8, 0.9], [0, 0]), GT, np.array([0]))
    second = match_image(dets([[0, 0, 10, 10]], [0.7], [0]), GT, np.array([0]))
    return first, second


def coco_ap(recall, precision):
    """101-point interpolated AP written out by hand (envelope, then trapezoids on the grid)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1], 1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0, 0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def test_matching_sorts_by_confidence_and_marks_tp_per_iou_threshold():
    first, second = two_images()
    np.testing.assert_allclose(first.conf, [0.9, 0.8], rtol=1e-6)
    assert first.tp[0].all() and not first.tp[1].any()
    # IoU 0.62: a TP at thresholds 0.50, 0.55, 0.60 only
    partial = match_image(dets([[0, 0, 10, 6.2]], [0.9], [1]), GT, np.array([1]))
    np.testing.assert_array_equal(partial.tp[0], [True] * 3 + [False] * 7)
    wrong_class = match_image(dets([[0, 0, 10, 10]], [0.9], [1]), GT, np.array([0]))
    assert not wrong_class.tp.any()


def test_ap_precision_recall_match_hand_computation():
    s = summarize(list(two_images()), n_classes=2)
    # ranked TP, FP, TP over 2 targets: recall .5 .5 1, precision 1 .5 2/3
    expected_ap = coco_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert expected_ap == pytest.approx(0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2)
    assert s.overall["mAP50"] == pytest.approx(expected_ap, abs=1e-9)
    assert s.overall["mAP50-95"] == pytest.approx(expected_ap, abs=1e-9)  # exact boxes: same at every IoU
    # best mean F1 is at conf <= .7: all three detections, P = 2/3, R = 1
    assert s.overall["precision"] == pytest.approx(2 / 3, abs=1e-3)
    assert s.overall["recall"] == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(s.per_class["mAP50"][1])  # class 1 has no ground truth
    np.testing.assert_array_equal(s.n_targets, [2, 0])


def test_map50_95_averages_the_iou_thresholds():
    partial = match_image(dets([[0, 0, 10, 6.2]], [0.9], [0]), GT, np.array([0]))
    s = summarize([partial], n_classes=1)
    perfect = coco_ap(np.array([1.0]), np.array([1.0]))  # 0.995 with 101-point interpolation
    assert s.overall["mAP50"] == pytest.approx(perfect)
    assert s.overall["mAP50-95"] == pytest.approx(3 / 10 * perfect)


def test_resampled_scores_equal_ultralytics_on_the_concatenated_resample():
    """MatchSet repeats pre-sorted rows instead of concatenating images: the numbers must not change."""
    ultralytics_offline()
    from ultralytics.utils.metrics import Metric, ap_per_class

    rng = np.random.default_rng(0)
    matches = []
    for _ in range(25):
        k = int(rng.integers(0, 8))
        tp = rng.random(k)[:, None] > np.linspace(0.3, 0.95, 10)  # TP at the lower IoU thresholds first
        matches.append(ImageMatch(tp, rng.random(k), rng.integers(0, 3, k), rng.integers(0, 3, rng.integers(0, 3))))
    stacked = MatchSet.stack(matches)
    for _ in range(5):
        idx = rng.integers(0, len(matches), len(matches))
        resampled, _ = ap_scores(*stacked.rows(np.bincount(idx, minlength=len(matches))), 3)
        concatenated = [np.concatenate([getattr(matches[i], f) for i in idx]) for f in ("tp", "conf", "pred_cls",
                                                                                          "target_cls")]
        metric = Metric()
        metric.update(ap_per_class(*concatenated)[2:])
        expected = np.full((4, 4), np.nan)
        expected[:, metric.ap_class_index] = [metric.p, metric.r, metric.all_ap[:, 0], metric.all_ap.mean(1)]
        expected[:, -1] = metric.mean_results()
        np.testing.assert_array_equal(resampled, expected)


def test_seed_spread_is_mean_sample_sd_min_max_and_keeps_nan_classes():
    per_seed = np.array([[0.2, np.nan], [0.4, np.nan], [0.9, np.nan]])  # 3 seeds x (a class, a class without GT)
    spread = seed_spread(per_seed)
    assert spread["mean"][0] == pytest.approx(0.5)
    assert spread["sd"][0] == pytest.approx(np.sqrt((0.3 ** 2 + 0.1 ** 2 + 0.4 ** 2) / 2))  # ddof 1: 0.3606
    assert (spread["min"][0], spread["max"][0]) == (0.2, 0.9)
    assert all(np.isnan(a[1]) for a in spread.values())
    one = seed_spread(per_seed[:1])
    assert one["mean"][0] == 0.2 and np.isnan(one["sd"][0])  # no spread from a single seed


# ---- the two-level bootstrap: one class, one object per image

def images(found: list[bool], conf: float = 0.9) -> list[ImageMatch]:
    """One object per image, detected exactly where `found`, else missed."""
    gt_cls = np.array([0])
    return [match_image(dets([[0, 0, 10, 10]], [conf], [0]) if f else Detections.empty(), GT, gt_cls) for f in found]


HALF = [True, False] * 10
PERFECT = coco_ap(np.array([1.0]), np.array([1.0]))  # 0.995
B = BootstrapSettings(n_resamples=200, seed=0, ci=0.95)


def overall(delta: Delta, metric: str = "mAP50") -> tuple[float, float, float, bool]:
    k = METRICS.index(metric)
    return delta.delta[k, -1], delta.ci_low[k, -1], delta.ci_high[k, -1], bool(delta.resolved[k, -1])


def test_identical_variants_give_zero_delta_and_an_interval_containing_zero():
    seeds = [images(HALF), images([True] * 20), images([False, True] * 10)]  # seeds differ, variants do not
    d = bootstrap_deltas({"baseline": seeds, "same": seeds}, 1, B)["same"]
    delta, low, high, resolved = overall(d)
    assert delta == 0.0 and low < 0 < high and not resolved  # the seed draws differ per variant: a real width
    one_seed = bootstrap_deltas({"baseline": seeds[:1], "same": seeds[:1]}, 1, B)["same"]
    assert overall(one_seed) == (0.0, 0.0, 0.0, False)  # same matches, same images: every resample 0


def test_a_variant_better_on_every_image_and_seed_is_resolved():
    missed, found = images([False] * 20), images([True] * 20)
    d = bootstrap_deltas({"baseline": [missed] * 3, "better": [found] * 3}, 1, B)["better"]
    assert overall(d) == pytest.approx((PERFECT, PERFECT, PERFECT, True))  # every resample: 0.995 - 0
    assert d.delta[METRICS.index("recall"), 0] == pytest.approx(1.0, abs=1e-3)
    base = [images(HALF), images(HALF[::-1]), images([True] * 5 + [False] * 15)]
    d = bootstrap_deltas({"baseline": base, "better": [found, images([True] * 20, 0.5), found]}, 1, B)["better"]
    delta, low, high, resolved = overall(d)
    assert 0 < low <= delta <= high and resolved


def test_seeds_that_disagree_widen_the_interval_to_contain_zero():
    """One seed of `unstable` finds everything, another nothing: over images alone seed 0 looks
    like a clear gain; with the seeds resampled too it is not resolved."""
    reference = [images(HALF)] * 3
    unstable = [images([True] * 20), images([False] * 20), images([True] * 20)]
    image_only = bootstrap_deltas({"baseline": reference[:1], "unstable": unstable[:1]}, 1, B)["unstable"]
    assert overall(image_only)[1] > 0 and overall(image_only)[3]
    d = bootstrap_deltas({"baseline": reference, "unstable": unstable}, 1, B)["unstable"]
    delta, low, high, resolved = overall(d)
    half_ap = summarize(reference[0], 1).overall["mAP50"]
    assert delta == pytest.approx(2 / 3 * PERFECT - half_ap)  # seed mean minus seed mean
    assert low < 0 < high and not resolved


def test_bootstrap_is_seeded_and_each_variant_is_compared_with_the_first():
    reference, better = [images(HALF), images(HALF[::-1])], [images([True] * 15 + [False] * 5)] * 2
    matches = {"baseline": reference, "a": better, "b": reference}
    first, again = bootstrap_deltas(matches, 1, B), bootstrap_deltas(matches, 1, B, workers=2)  # two processes
    other = bootstrap_deltas(matches, 1, BootstrapSettings(n_resamples=200, seed=1, ci=0.95))
    assert list(first) == ["a", "b"]
    alone = bootstrap_deltas({"baseline": reference, "a": better}, 1, B)["a"]  # "b" does not move "a"'s draws
    assert overall(alone) == overall(first["a"])
    assert overall(first["a"]) == overall(again["a"]) and overall(first["a"])[1:3] != overall(other["a"])[1:3]
    narrow = bootstrap_deltas(matches, 1, BootstrapSettings(n_resamples=200, seed=0, ci=0.5))["a"]
    assert overall(first["a"])[1] <= overall(narrow)[1] <= overall(narrow)[2] <= overall(first["a"])[2]


def test_per_class_interval_uses_the_resamples_holding_the_class():
    """A class on one image of 20 is absent from about a third of the resamples: NaN there, the
    interval from the rest; a class with no ground truth at all stays NaN and unresolved."""
    gt = np.array([0])
    rare = [match_image(Detections.empty(), GT, np.array([1]))] + [match_image(Detections.empty(), GT, gt)] * 19
    rare_found = [match_image(dets([[0, 0, 10, 10]], [0.9], [1]), GT, np.array([1]))] + rare[1:]
    d = bootstrap_deltas({"baseline": [rare], "v": [rare_found]}, 3, B)["v"]
    k = METRICS.index("mAP50")
    assert (d.delta[k, 1], d.ci_low[k, 1], d.ci_high[k, 1]) == pytest.approx((PERFECT,) * 3)
    assert d.resolved[k, 1] and np.isnan(d.delta[k, 2]) and not d.resolved[k, 2]
    assert d.delta[k, 0] == 0.0


def test_bootstrap_needs_the_same_images_for_every_model():
    with pytest.raises(ValueError, match="same images"):
        bootstrap_deltas({"baseline": [images(HALF)], "v": [images(HALF[:6])]}, 1, B)
