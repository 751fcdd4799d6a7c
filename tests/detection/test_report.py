"""detection.report: boxes drawn where they are, figures written, and a report.md that links them."""

from __future__ import annotations

import numpy as np
import pytest

from detection.evaluate import EvaluateSettings, Evaluation
from detection.evaluate import TestImage as GroundTruth  # not a test class
from detection.metrics import BootstrapSettings, bootstrap_delta, match_image, summarize
from detection.report import PALETTE, draw_boxes, write_report
from detection.yolo import Detections
from tests.support import TINY_DETECTION, make_synthetic, settings

NAMES = ["bottle", "can"]


def test_draw_boxes_upscales_and_outlines_each_box_in_its_class_colour():
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = draw_boxes(rgb, np.array([[1, 1, 4, 4]], np.float32), np.array([1]), scale=3)
    assert out.shape == (24, 24, 3)
    assert tuple(out[3, 6]) == PALETTE[1] and tuple(out[6, 6]) == (0, 0, 0)  # on the outline / inside the box


def tiny_evaluation() -> Evaluation:
    """Three test images; `better` finds both objects, `baseline` only the first."""
    rng = np.random.default_rng(0)
    images = [GroundTruth(f"t{i}", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                        np.array([[2, 2, 8, 8], [9, 9, 14, 14]], np.float32), np.array([0, 1])) for i in range(3)]
    found = Detections(np.array([[2, 2, 8, 8], [9, 9, 14, 14]], np.float32), np.array([0.9, 0.8], np.float32),
                       np.array([0, 1]))
    detections = {"baseline": [found.select(np.array([True, False]))] * 3, "better": [found] * 3}
    matches = {v: [match_image(d, im.gt_xyxy, im.gt_cls) for d, im in zip(dets, images)]
               for v, dets in detections.items()}
    summaries = {v: summarize(m, len(NAMES)) for v, m in matches.items()}
    delta = bootstrap_delta(matches["baseline"], matches["better"], len(NAMES), BootstrapSettings(20, 0, 0.95))
    return Evaluation(NAMES, images, detections, summaries, {"better": delta})


def test_report_has_the_tables_the_figures_and_the_delta_of_each_variant(tmp_path):
    ev = tiny_evaluation()
    evaluate_settings = settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"])
    figures = tmp_path / "figures"
    figures.mkdir()
    pseudo = make_synthetic(tmp_path, n=2)
    markdown = write_report(ev, evaluate_settings, pseudo, figures, link="figures")
    for figure in ("pr_curves.png", "delta_map50.png", "test_detections.png"):
        assert f"](figures/{figure})" in markdown and (figures / figure).read_bytes()[:4] == b"\x89PNG"
    assert "pseudo_labels.png" in markdown  # make_synthetic wrote images
    assert "3 held-out test images" in markdown and "Deltas are against `baseline`" in markdown
    can_row = next(line for line in markdown.splitlines() if line.startswith("| can |"))
    cells = [c.strip() for c in can_row.strip("|").split("|")]
    assert cells[2] == "0.000" and cells[3] == "0.995"  # can AP50: missed by baseline, perfect for `better`
    assert cells[4].startswith("0.995 [")
    assert ev.summaries["better"].overall["mAP50"] == pytest.approx(0.995)
