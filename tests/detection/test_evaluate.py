"""The evaluate stage end to end: identical variants give zero deltas; every output is written."""

import json
import shutil

import pandas as pd
import pytest

from pipelines import evaluate, train_yolo
from tests.support import TINY_CLASSES, TINY_DETECTION, make_synthetic, write_params, write_tiny_prepared


@pytest.mark.slow
def test_evaluate_identical_variants_end_to_end(tmp_path, monkeypatch):
    write_tiny_prepared(tmp_path)
    make_synthetic(tmp_path)
    write_params(tmp_path, **TINY_DETECTION)
    monkeypatch.chdir(tmp_path)
    assert train_yolo.main(["--variant", "baseline"]) == 0
    for variant in ("augmented", "selftrain"):  # the same weights: every delta must be exactly 0
        shutil.copytree(tmp_path / "models/yolo/baseline", tmp_path / f"models/yolo/{variant}")
    assert evaluate.main([]) == 0
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["test_images"] == 6
    for key in ("precision", "recall", "mAP50", "mAP50-95"):
        per_class = [m[key] for m in metrics["baseline"]["per_class"].values() if m[key] is not None]
        assert metrics["baseline"][key] == pytest.approx(sum(per_class) / len(per_class))  # the mean over classes
        assert metrics["delta_augmented"][key] == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert set(metrics["baseline"]["per_class"]) == set(TINY_CLASSES)
    per_class = pd.read_csv(tmp_path / "reports/per_class.csv")
    assert len(per_class) == 3 * len(TINY_CLASSES)
    assert (per_class.loc[per_class["variant"] == "selftrain", "delta_mAP50"] == 0).all()
    pr = pd.read_csv(tmp_path / "reports/pr/baseline/bottle.csv")
    assert list(pr.columns) == ["recall", "precision"] and len(pr) == 101
    report = (tmp_path / "reports/report.md").read_text()
    for figure in ("pr_curves.png", "delta_map50.png", "test_detections.png"):
        assert f"figures/{figure}" in report and (tmp_path / "reports/figures" / figure).stat().st_size > 0
    assert "| baseline |" in report


def test_evaluate_names_missing_variants(tmp_path, monkeypatch, capsys):
    write_tiny_prepared(tmp_path)
    write_params(tmp_path, **TINY_DETECTION)
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([]) == 2
    assert "no best.pt for variant(s) baseline, augmented, selftrain" in capsys.readouterr().err
    assert not (tmp_path / "reports/metrics.json").exists()
