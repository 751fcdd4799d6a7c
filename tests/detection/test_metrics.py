"""Detection metrics against hand-computed fixtures, and the paired bootstrap of deltas."""

import numpy as np
import pytest

from detection.metrics import BootstrapSettings, bootstrap_delta, match_image, summarize
from detection.yolo import Detections

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


def many(n=30):
    first, second = two_images()
    return [first, second] * (n // 2)


def test_bootstrap_identical_variants_give_zero_delta_and_zero_ci():
    matches = many()
    result = bootstrap_delta(matches, matches, 2, BootstrapSettings(n_resamples=50, seed=0, ci=0.95))
    for m in result["overall"].values():
        assert (m["delta"], m["ci_low"], m["ci_high"]) == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(result["per_class"]["mAP50"]["delta"][:1], [0.0])


def test_bootstrap_known_shift_is_constant_over_resamples():
    gt_cls = np.array([0])
    missed = [match_image(Detections.empty(), GT, gt_cls) for _ in range(20)]
    found = [match_image(dets([[0, 0, 10, 10]], [0.9], [0]), GT, gt_cls) for _ in range(20)]
    result = bootstrap_delta(missed, found, 1, BootstrapSettings(n_resamples=50, seed=0, ci=0.95))
    shift = coco_ap(np.array([1.0]), np.array([1.0]))
    m = result["overall"]["mAP50"]
    assert m["delta"] == pytest.approx(shift) and m["ci_low"] == pytest.approx(shift) == m["ci_high"]
    assert result["per_class"]["recall"]["delta"][0] == pytest.approx(1.0, abs=1e-3)


def test_bootstrap_ci_brackets_the_delta_and_is_seeded():
    base = many()
    other = [two_images()[1]] * len(base)  # every image a clean TP: better than base
    settings = BootstrapSettings(n_resamples=100, seed=3, ci=0.95)
    a = bootstrap_delta(base, other, 1, settings)["overall"]["mAP50"]
    b = bootstrap_delta(base, other, 1, settings)["overall"]["mAP50"]
    c = bootstrap_delta(base, other, 1, BootstrapSettings(n_resamples=100, seed=4, ci=0.95))["overall"]["mAP50"]
    assert a == b
    assert a["ci_low"] <= a["delta"] <= a["ci_high"] and a["ci_low"] < a["ci_high"] and a["ci_low"] > 0
    assert (c["ci_low"], c["ci_high"]) != (a["ci_low"], a["ci_high"])


def test_bootstrap_needs_paired_images():
    with pytest.raises(ValueError, match="same images"):
        bootstrap_delta(many(4), many(6), 1, BootstrapSettings(n_resamples=2, seed=0, ci=0.95))
