"""augment.gen_metrics: FD / KID / precision-recall / IS-style score against known answers, and the stage."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import linalg
from torchmetrics.image.fid import FrechetInceptionDistance

from augment.gen_metrics import (
    InceptionFeatures,
    JudgeFeatures,
    extract,
    frechet_distance,
    inception_style_score,
    judge_probs,
    kernel_inception_distance,
    load_images,
    precision_recall,
)
from augment.settings import GenMetricsSettings
from core.errors import StageError
from core.params import section
from pipelines import gen_metrics as stage
from tests.support import TINY_CLASSES, TINY_METRICS, TINY_SIZE, tiny_noisy_classifier, tiny_params, write_params


def gaussian(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n))


def closed_form_fd(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


MU1, MU2 = np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 0.0])
S1 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.4], [0.0, 0.4, 0.5]])
S2 = np.array([[0.5, 0.0, 0.1], [0.0, 1.0, 0.0], [0.1, 0.0, 1.5]])


def test_fd_of_many_samples_matches_the_gaussian_closed_form():
    expected = closed_form_fd(MU1, S1, MU2, S2)
    got = frechet_distance(gaussian(20000, MU1, S1, 0), gaussian(20000, MU2, S2, 1))
    assert got == pytest.approx(expected, rel=0.03)
    assert frechet_distance(gaussian(20000, MU1, S1, 2), gaussian(20000, MU1, S1, 3)) < 0.01


def test_fd_equals_the_formula_on_sample_moments():
    real, fake = gaussian(50, MU1, S1, 4), gaussian(40, MU2, S2, 5)
    moments = [(x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False)) for x in (real, fake)]
    assert frechet_distance(real, fake) == pytest.approx(closed_form_fd(*moments[0], *moments[1]), rel=1e-6)


def test_judge_module_on_images_in_torchmetrics_equals_fd_of_extracted_features():
    judge = tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE, seed=3)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(12, 3, TINY_SIZE, TINY_SIZE, generator=g), torch.rand(10, 3, TINY_SIZE, TINY_SIZE, generator=g) ** 2
    features = JudgeFeatures(judge).eval()
    metric = FrechetInceptionDistance(feature=features, normalize=True)  # the contract: float images in [0, 1]
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = frechet_distance(extract(features, real, batch_size=5), extract(features, fake, batch_size=4))
    assert ours == pytest.approx(float(metric.compute()), rel=1e-5)
    torch.testing.assert_close(extract(features, real, 5).float(), judge.features(real * 2 - 1, torch.zeros(12, dtype=torch.long)))


def test_precision_recall_identical_disjoint_and_half_covered_sets():
    points = gaussian(40, np.zeros(4), np.eye(4), 0)
    assert precision_recall(points, points.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0, k=3) == (0.0, 0.0)
    half = torch.cat([points[:20], points[20:] + 100.0])  # half the generated set far away, half on real points
    precision, recall = precision_recall(points, half, k=3)
    assert precision == 0.5 and recall >= 0.5


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    same = kernel_inception_distance(gaussian(200, np.zeros(8), np.eye(8), 0), gaussian(200, np.zeros(8), np.eye(8), 1),
                                     subset_size=50, subsets=50, seed=0)
    shifted = kernel_inception_distance(gaussian(200, np.zeros(8), np.eye(8), 0), gaussian(200, np.ones(8), np.eye(8), 1),
                                        subset_size=50, subsets=50, seed=0)
    assert abs(same[0]) < 0.05 and same[2] == 50
    assert shifted[0] > 1.0 and shifted[0] > 20 * abs(same[0])
    assert kernel_inception_distance(torch.randn(7, 8), torch.randn(30, 8), 50, 5, 0)[2] == 7  # capped at n


def test_kid_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone():
    real, fake = gaussian(60, np.zeros(4), np.eye(4), 0), gaussian(60, np.ones(4), np.eye(4), 1)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = kernel_inception_distance(real, fake, 20, 10, seed=5)
    assert torch.rand(1) == before
    assert kernel_inception_distance(real, fake, 20, 10, seed=5) == first


def test_is_style_score_is_1_for_constant_and_n_classes_for_confident_even_coverage():
    assert inception_style_score(torch.tensor([[0.9, 0.2, 0.1]]).repeat(30, 1)) == pytest.approx(1.0)
    confident = torch.eye(4).repeat(5, 1)  # 20 images, 5 per class, sigmoid 1 on their class only
    assert inception_style_score(confident) == pytest.approx(4.0, rel=1e-6)
    assert 1.0 < inception_style_score(torch.eye(4)[[0, 0, 0, 1]]) < 4.0


def test_bad_settings_and_missing_inception_weights_fail_with_one_line(tmp_path):
    with pytest.raises(StageError, match="^params.yaml: gen_metrics.extractor: 'clip' is not one of judge, inception$"):
        section(GenMetricsSettings, "gen_metrics", tiny_params(gen_metrics={"extractor": "clip"}))
    with pytest.raises(StageError, match="inception_weights: 'nowhere.pth' is not a file"):
        InceptionFeatures("nowhere.pth")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(StageError, match="pip install torch-fidelity"):
            InceptionFeatures(weights)


# --- the stage on tiny_prepared + a tiny random judge -----------------------------------------------------

def write_synthetic_copy_of_test(root: Path, folder: Path) -> pd.DataFrame:
    """`folder`: the real test images copied as 'generated' ones, target = their first tag (clean: skipped)."""
    real = pd.read_csv(root / "data/prepared/manifest.csv", keep_default_na=False)
    real = real[(real["split"] == "test") & (real["tags"] != "")]
    (folder / "images").mkdir(parents=True)
    rows = []
    for _, row in real.iterrows():
        shutil.copy(root / "data/prepared" / row["path"], folder / "images" / f"{row['image_id']}.png")
        rows.append({"image_id": row["image_id"], "path": f"images/{row['image_id']}.png",
                     "target": row["tags"].split(";")[0]})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "manifest.csv", index=False)
    return frame


@pytest.fixture
def metrics_dir(tiny_prepared, tmp_path, monkeypatch) -> Path:
    tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE, seed=2).save_pretrained(tmp_path / "models/judge")
    write_params(tmp_path, gen_metrics=TINY_METRICS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_on_real_images_as_generated_gives_full_precision_and_per_class_figures(metrics_dir, capsys):
    synthetic = write_synthetic_copy_of_test(metrics_dir, metrics_dir / "data/synthetic")
    noise = np.random.default_rng(0).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    (metrics_dir / "data/synthetic/control/images").mkdir(parents=True)
    for i, image in enumerate(noise):
        Image.fromarray(image).save(metrics_dir / f"data/synthetic/control/images/c{i}.png")
    pd.DataFrame({"image_id": [f"c{i}" for i in range(3)], "path": [f"images/c{i}.png" for i in range(3)],
                  "target": TINY_CLASSES}).to_csv(metrics_dir / "data/synthetic/control/manifest.csv", index=False)

    assert stage.main([]) == 0
    report = json.loads((metrics_dir / "reports/gen_metrics.json").read_text())
    assert report["extractor"] == "judge" and report["n_real"] == 6 and report["feature_dim"] == 16
    overall = report["sets"]["guided"]["overall"]
    assert overall["extractor"] == "judge" and (overall["n_real"], overall["n_generated"]) == (6, len(synthetic))
    assert overall["precision"] == 1.0 and overall["recall"] >= 0.8333  # covers the 5 tagged of the 6 real test images
    assert overall["fd"] >= 0 and overall["kid_subset_size"] == min(6, len(synthetic))
    assert set(report["sets"]) == {"guided", "control"} and report["sets"]["control"]["overall"]["n_generated"] == 3
    for metrics in [overall, *report["sets"]["guided"]["per_class"].values()]:
        hits = metrics["judge_hit_rate"] * metrics["n_generated"]  # a count of images, rounded to 4 decimals
        assert metrics["extractor"] == "judge" and abs(hits - round(hits)) < 1e-3

    judge = stage.load_classifier("models/judge")
    images = load_images([metrics_dir / "data/synthetic" / p for p in synthetic["path"]], judge.config.image_size)
    probs = judge_probs(judge, images, 8)
    target = torch.tensor([TINY_CLASSES.index(t) for t in synthetic["target"]])
    expected_hits = (probs[torch.arange(len(target)), target] >= 0.5).double().mean().item()
    assert overall["judge_hit_rate"] == pytest.approx(expected_hits, abs=1e-4)
    assert overall["judge_is"] == pytest.approx(inception_style_score(probs), abs=1e-4)
    can = report["sets"]["guided"]["per_class"]["can"]  # test images tagged can: patterns [1], [0, 1], [1, 2]
    assert can["n_real"] == 3 and can["precision"] == 1.0
    assert "same n" in report["note"] and "FD" in capsys.readouterr().out


def test_identical_sets_have_fd_about_0(metrics_dir):
    write_synthetic_copy_of_test(metrics_dir, metrics_dir / "data/synthetic")
    manifest = pd.read_csv(metrics_dir / "data/prepared/manifest.csv", keep_default_na=False)
    manifest.loc[(manifest["split"] == "test") & (manifest["tags"] == ""), "split"] = "val"  # real = generated
    manifest.to_csv(metrics_dir / "data/prepared/manifest.csv", index=False)
    assert stage.main([]) == 0
    overall = json.loads((metrics_dir / "reports/gen_metrics.json").read_text())["sets"]["guided"]["overall"]
    assert abs(overall["fd"]) < 1e-3 and (overall["precision"], overall["recall"]) == (1.0, 1.0)


def test_stage_errors_are_one_line(metrics_dir, capsys):
    assert stage.main([]) == 2  # no synthetic images yet
    assert capsys.readouterr().err.strip() == "error: data/synthetic/manifest.csv: not found; run the generate stage first"
    write_params(metrics_dir, gen_metrics={**TINY_METRICS, "extractor": "inception",
                                           "inception_weights": "w/inception.pth"})
    write_synthetic_copy_of_test(metrics_dir, metrics_dir / "data/synthetic")
    assert stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: params.yaml: gen_metrics.inception_weights: 'w/inception.pth' is not a file")
    assert "\n" not in err and not (metrics_dir / "reports/gen_metrics.json").exists()
