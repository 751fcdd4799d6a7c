"""The evaluate stage: seed means and spreads, the DVC metrics per variant, every output written."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from detection.evaluate import evaluation_json, per_class_frame, summary_json, variant_metrics
from pipelines import evaluate, train_yolo
from tests.support import (
    TINY_CLASSES,
    TINY_DETECTION,
    hand_evaluation,
    make_synthetic,
    write_params,
    write_tiny_prepared,
)

PERFECT = 0.995  # COCO 101-point AP of a perfect detector


def leaves(tree, prefix=""):
    """`dvc metrics show` columns: nested keys joined with dots."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def test_the_dvc_metrics_are_one_flat_record_per_variant_with_the_reference_delta():
    ev = hand_evaluation({"baseline": [[0], [0]], "better": [[0, 1], [0]]})
    metrics = variant_metrics(ev)
    assert list(metrics) == ["baseline", "better"]
    assert set(metrics["baseline"]) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert set(metrics["better"]) == {"precision", "recall", "mAP50", "mAP50-95", "mAP50_delta", "mAP50_delta_low",
                                      "mAP50_delta_high"}
    assert all(type(v) is float for record in metrics.values() for v in record.values())
    assert metrics["better"]["mAP50"] == pytest.approx(0.75 * PERFECT, abs=1e-4)
    assert metrics["better"]["mAP50_delta"] == pytest.approx(0.25 * PERFECT, abs=1e-4)
    assert (metrics["better"]["mAP50_delta_low"], metrics["better"]["mAP50_delta_high"]) == (
        0.0, pytest.approx(PERFECT / 2))
    # a row of `dvc metrics show --md`: the path and 7 numbers fit well inside 160 characters
    row = "| metrics/better.json | " + " | ".join(f"{v:<10}" for v in metrics["better"].values()) + " |"
    assert len(row) < 120


def test_summary_json_holds_seed_means_deltas_and_class_ap50():
    # baseline finds bottles only (both seeds); `better` finds both classes with seed 0, bottles with seed 1
    ev = hand_evaluation({"baseline": [[0], [0]], "better": [[0, 1], [0]]})
    metrics = summary_json(ev, {"better": "`better` received no extra images: ..."})
    json.dumps(metrics, allow_nan=False)  # no NaN anywhere
    columns = leaves(metrics)
    assert all(v is None or type(v) in (int, float, bool) for v in columns.values())
    assert set(metrics) == {"test_images", "seeds", "void", "baseline", "better", "delta_better", "AP50"}
    assert metrics["void"] == {"reference": False, "better": True}
    assert (metrics["test_images"], metrics["seeds"]) == (3, 2)
    # mAP50 per seed: the mean over the classes with ground truth (bottle, can; paper has none)
    assert metrics["baseline"]["mAP50_seed"] == {"0": PERFECT / 2, "1": PERFECT / 2}
    assert metrics["better"]["mAP50_seed"] == {"0": PERFECT, "1": PERFECT / 2}
    assert metrics["better"]["mAP50"] == pytest.approx(0.75 * PERFECT, abs=1e-4)
    assert set(metrics["better"]) == {"precision", "recall", "mAP50", "mAP50-95", "mAP50_seed"}
    # every image is the same, so only the seed draws move: better's seed mean is 0.995, 0.746 or 0.4975
    delta = metrics["delta_better"]["mAP50"]
    assert delta == {"delta": pytest.approx(0.25 * PERFECT, abs=1e-4), "ci_low": 0.0,
                     "ci_high": pytest.approx(PERFECT / 2), "resolved": False}
    assert set(metrics["delta_better"]) == {"mAP50", "mAP50-95"}
    assert metrics["AP50"] == {"bottle": {"baseline": PERFECT, "better": PERFECT},
                               "can": {"baseline": 0.0, "better": PERFECT / 2},
                               "paper": {"baseline": None, "better": None}}
    assert len(columns) == 2 + 2 + 2 * (4 + 2) + 2 * 4 + 3 * 2  # void: reference and better


def test_evaluation_json_and_per_class_csv_hold_spreads_per_seed_values_and_intervals():
    ev = hand_evaluation({"baseline": [[0], [0]], "better": [[0, 1], [0]]})
    full = evaluation_json(ev)
    json.dumps(full, allow_nan=False)
    can = full["variants"]["better"]["per_class"]["can"]
    assert can["n_targets"] == 3
    assert can["mAP50"]["per_seed"] == {"0": PERFECT, "1": 0.0}
    assert can["mAP50"]["mean"] == pytest.approx(PERFECT / 2)
    assert can["mAP50"]["sd"] == pytest.approx(PERFECT / np.sqrt(2))  # sample sd of (0.995, 0)
    assert (can["mAP50"]["min"], can["mAP50"]["max"]) == (0.0, PERFECT)
    assert can["mAP50"]["delta"]["delta"] == pytest.approx(PERFECT / 2) and not can["mAP50"]["delta"]["resolved"]
    assert full["variants"]["better"]["per_class"]["paper"]["mAP50"]["mean"] is None
    assert "delta" not in full["variants"]["baseline"]["overall"]["mAP50"]  # the reference
    frame = per_class_frame(ev)
    assert len(frame) == 2 * 3
    row = frame[(frame["variant"] == "better") & (frame["class"] == "can")].iloc[0]
    assert row["mAP50_mean"] == pytest.approx(PERFECT / 2) and row["mAP50_sd"] == pytest.approx(PERFECT / np.sqrt(2))
    assert row["delta_mAP50"] == pytest.approx(PERFECT / 2) and row["delta_mAP50_ci_low"] == 0.0
    assert not row["delta_mAP50_resolved"]


@pytest.mark.slow
def test_evaluate_identical_variants_end_to_end(tmp_path, monkeypatch):
    write_tiny_prepared(tmp_path)
    make_synthetic(tmp_path)
    write_params(tmp_path, yolo={"seeds": [0, 1]}, **TINY_DETECTION)
    monkeypatch.chdir(tmp_path)
    assert train_yolo.main(["--variant", "baseline"]) == 0
    for variant in ("augmented", "selftrain", "copypaste", "inpaint"):  # the same seeds' weights: every delta is 0
        shutil.copytree(tmp_path / "models/yolo/baseline", tmp_path / f"models/yolo/{variant}")
    assert evaluate.main([]) == 0
    metrics = json.loads((tmp_path / "reports/summary.json").read_text())
    assert metrics["test_images"] == 6 and metrics["seeds"] == 2
    assert metrics["budget"] == {"epochs": 2, "batches": 2}  # TINY: stops at min_epochs 2, one batch of 8 an epoch
    assert set(metrics["baseline"]["mAP50_seed"]) == {"0", "1"}
    assert metrics["baseline"]["mAP50"] == pytest.approx(sum(metrics["baseline"]["mAP50_seed"].values()) / 2,
                                                         abs=1e-4)
    for variant in ("augmented", "selftrain", "copypaste"):
        for m in ("mAP50", "mAP50-95"):
            d = metrics[f"delta_{variant}"][m]
            assert d["delta"] == 0.0 and d["ci_low"] <= 0 <= d["ci_high"] and d["resolved"] is False
    assert set(metrics["AP50"]) == set(TINY_CLASSES)
    # copies of the baseline trained on its images: every comparison is void, and says so first
    copies = ("augmented", "selftrain", "copypaste", "inpaint")
    assert all(metrics["void"][v] for v in copies)
    assert metrics["void"]["reference"] == (metrics["baseline"]["mAP50"] < 0.05)
    head = (tmp_path / "reports/report.md").read_text().split("## Overall")[0]
    assert "comparison(s) here say nothing" in head and all(f"- `{v}` received no extra images" in head for v in copies)
    full = json.loads((tmp_path / "reports/evaluation.json").read_text())
    assert set(full["void"]) - {"reference"} == set(copies)
    assert full["seeds"] == [0, 1] and full["settings"]["imgsz"] == 32
    per_class = pd.read_csv(tmp_path / "reports/per_class.csv")
    assert len(per_class) == 5 * len(TINY_CLASSES)
    assert (per_class.loc[per_class["variant"] == "selftrain", "delta_mAP50"].dropna() == 0).all()
    variants = ["baseline", *copies]
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == sorted(f"{v}.json" for v in variants)
    dvc_metrics = {v: json.loads((tmp_path / f"metrics/{v}.json").read_text()) for v in variants}
    assert dvc_metrics["baseline"]["mAP50"] == metrics["baseline"]["mAP50"]
    assert dvc_metrics["selftrain"]["mAP50_delta"] == 0.0
    assert sorted(p.name for p in (tmp_path / "reports/pr").iterdir()) == sorted(f"{c}.csv" for c in TINY_CLASSES)
    pr = pd.read_csv(tmp_path / "reports/pr/bottle.csv")
    assert list(pr.columns) == ["recall", *variants] and len(pr) == 101
    assert (pr["selftrain"].fillna(-1) == pr["baseline"].fillna(-1)).all()  # the same weights
    loss = pd.read_csv(tmp_path / "reports/yolo_loss/inpaint.csv")
    assert list(loss.columns) == ["batches", "epoch", "box_loss", "cls_loss", "dfl_loss", "loss"]
    assert list(loss["batches"]) == [1, 2] and list(loss["epoch"]) == [1, 2]  # one batch of 8 an epoch
    seeds = [pd.read_csv(tmp_path / f"models/yolo/baseline/seed_{s}/results.csv") for s in (0, 1)]
    assert loss["box_loss"].tolist() == pytest.approx(
        ((seeds[0]["train/box_loss"] + seeds[1]["train/box_loss"]) / 2).tolist(), abs=1e-5)
    assert loss["loss"].tolist() == pytest.approx((loss["box_loss"] + loss["cls_loss"] + loss["dfl_loss"]).tolist(),
                                                  abs=1e-4)
    report = (tmp_path / "reports/report.md").read_text()
    for figure in ("pr_curves.png", "delta_map50.png", "test_detections.png"):
        assert f"figures/{figure}" in report and (tmp_path / "reports/figures" / figure).stat().st_size > 0
    assert "| baseline | 2 | 8 | 2 | 2 |" in report  # seeds, images, epochs, batches: the budget found in 2 epochs
    assert "- augmented: void, no verdict" in head and "- every detector trained 2 batches (the baseline's 2 epochs of 1 batches)" in head


def test_evaluate_names_every_missing_variant_and_seed(tmp_path, monkeypatch, capsys):
    write_tiny_prepared(tmp_path)
    write_params(tmp_path, yolo={"seeds": [0, 1]}, **TINY_DETECTION)
    (tmp_path / "models/yolo/augmented/seed_0").mkdir(parents=True)
    (tmp_path / "models/yolo/augmented/seed_0/best.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([]) == 2
    assert capsys.readouterr().err == (
        "error: models/yolo: no <variant>/seed_<s>/best.pt for baseline (seed 0, 1); augmented (seed 1); "
        "selftrain (seed 0, 1); copypaste (seed 0, 1); inpaint (seed 0, 1); run train_yolo first\n")
    assert not (tmp_path / "reports/summary.json").exists() and not (tmp_path / "metrics").exists()
