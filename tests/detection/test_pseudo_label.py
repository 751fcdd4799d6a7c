"""Pseudo-label keep policies, TTA box un-flipping, and both stages end to end on tiny fixtures."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from core.errors import StageError
from detection.pseudo_label import PoolImage, cap_background, decide, predict_tta, synthetic_pool, tagged_pool
from detection.yolo import PredictSettings
from pipelines import pseudo_label, train_yolo
from scenes.boxes import Detections
from scenes.prepared import load_manifest, read_rgb, read_yolo_labels
from tests.support import TINY_DETECTION, make_synthetic, move_tagged_to_unlabelled, write_params, write_tiny_prepared

NAMES = ["bottle", "can", "paper"]


def dets(boxes, conf, cls) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(conf, np.float32), np.array(cls, np.int64))


def pool_image(required=(), allowed=None, group="g"):
    allowed = None if allowed is None else frozenset(allowed)
    return PoolImage("x", None, frozenset(required), allowed, group)


BOX = [[1, 1, 5, 5]]


def test_synthetic_policy_requires_the_target_and_keeps_other_classes():
    image = pool_image(required={0})
    assert decide(image, dets(BOX * 2, [0.9, 0.8], [0, 1]), conf=0.5).reason == "kept"
    assert len(decide(image, dets(BOX * 2, [0.9, 0.8], [0, 1]), conf=0.5).detections.cls) == 2
    assert decide(image, dets(BOX, [0.9], [1]), conf=0.5).reason == "missing_required"
    assert decide(image, dets(BOX, [0.4], [0]), conf=0.5).reason == "missing_required"  # below conf
    assert decide(pool_image(), dets(BOX, [0.4], [0]), conf=0.5).reason == "kept_background"


def test_tagged_policy_drops_untagged_boxes_and_needs_every_tag():
    both = pool_image(required={0, 1}, allowed={0, 1})
    kept = decide(both, dets(BOX * 3, [0.9, 0.8, 0.7], [0, 1, 2]), conf=0.5)
    assert kept.reason == "kept" and sorted(kept.detections.cls.tolist()) == [0, 1]
    assert decide(both, dets(BOX, [0.9], [0]), conf=0.5).reason == "missing_required"
    clean = pool_image(required=(), allowed=())
    assert decide(clean, dets(BOX, [0.9], [2]), conf=0.5).reason == "kept_background"


def test_an_unknown_image_keeps_boxes_of_any_class_and_is_never_background():
    unknown = PoolImage("x", None, frozenset(), None, "(unknown)", needs_a_box=True)
    kept = decide(unknown, dets(BOX * 2, [0.9, 0.8], [2, 0]), conf=0.5)
    assert kept.reason == "kept" and sorted(kept.detections.cls.tolist()) == [0, 2]
    assert decide(unknown, dets(BOX, [0.4], [0]), conf=0.5).reason == "missing_required"  # below conf: no box left
    assert decide(unknown, Detections.empty(), conf=0.5).reason == "missing_required"


def test_background_cap_keeps_at_most_the_fraction_and_is_seeded():
    boxed = [decide(pool_image(), dets(BOX, [0.9], [0]), 0.5)] * 6
    background = [decide(pool_image(), Detections.empty(), 0.5)] * 10
    capped = cap_background(boxed + background, fraction=0.25, seed=0)
    reasons = [d.reason for d in capped]
    assert reasons.count("kept_background") == 2  # 2 / (6 + 2) = 0.25
    assert reasons.count("background_cap") == 8 and reasons.count("kept") == 6
    assert [d.reason for d in cap_background(boxed + background, 0.25, seed=0)] == reasons
    assert all(d.reason != "kept_background" for d in cap_background(background, 0.5, seed=0))  # nothing boxed


class MirrorModel:
    """Stands in for YOLO.predict: one box at x 2..6 in whatever image it gets (BGR HxWx3)."""

    def predict(self, images, **kwargs):
        from types import SimpleNamespace

        import torch

        out = []
        for image in images:
            left_half = image[:, : image.shape[1] // 2].mean() > image[:, image.shape[1] // 2:].mean()
            conf = 0.9 if left_half else 0.6
            boxes = SimpleNamespace(xyxy=torch.tensor([[2.0, 1.0, 6.0, 5.0]]), conf=torch.tensor([conf]),
                                    cls=torch.tensor([1.0]))
            out.append(SimpleNamespace(boxes=boxes))
        return out


def test_tta_unflips_the_mirrored_boxes_and_merges_with_nms():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = 200  # bright left half: the plain view scores 0.9, the mirrored one 0.6
    predict = PredictSettings(conf=0.1, iou=0.5, max_det=100, device="cpu", batch=8)
    plain = predict_tta(MirrorModel(), [image], predict, 32, tta=False)[0]
    merged = predict_tta(MirrorModel(), [image], predict, 32, tta=True)[0]
    assert len(plain.cls) == 1
    # the mirrored view's box x 2..6 maps back to x 10..14: no overlap, both kept
    np.testing.assert_allclose(sorted(merged.xyxy[:, 0].tolist()), [2.0, 10.0])
    assert sorted(merged.conf.tolist()) == pytest.approx([0.6, 0.9])


def test_pools_read_targets_and_tags(tmp_path, tiny_prepared):
    make_synthetic(tmp_path, n=3)
    pool = synthetic_pool(tmp_path / "data" / "synthetic", NAMES, require_target=True)
    assert [p.required for p in pool] == [frozenset({0}), frozenset({1}), frozenset({2})]
    assert all(p.allowed is None for p in pool)
    tagged = tagged_pool(load_manifest(tiny_prepared, ("tagged",)), NAMES)
    assert tagged[3].required == tagged[3].allowed == frozenset({0, 1}) and tagged[4].group == "(clean)"
    manifest = tmp_path / "data" / "synthetic" / "manifest.csv"
    frame = pd.read_csv(manifest)
    frame.loc[1, "target"] = "tyre"
    frame.to_csv(manifest, index=False)
    with pytest.raises(StageError, match=r"manifest.csv: target\(s\) 'tyre' not in classes bottle, can, paper$"):
        synthetic_pool(tmp_path / "data" / "synthetic", NAMES, require_target=True)


# pseudo_label reads stage upsample's output; these tests hand it generate's (the same contract) directly.
SYNTHETIC_AS_UPSAMPLED = {"upsampled": "data/synthetic"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A directory with tiny prepared data + synthetic images and a one-epoch baseline."""
    root = tmp_path_factory.mktemp("pseudo")
    write_tiny_prepared(root)
    make_synthetic(root, n=9, size=8)  # at half the prepared size: pseudo_label brings any size up to it
    write_params(root, **TINY_DETECTION, paths=SYNTHETIC_AS_UPSAMPLED)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert train_yolo.main(["--variant", "baseline"]) == 0
    return root


def check_layout(root, out, report_file):
    report = json.loads((root / report_file).read_text())
    total = report["total"]
    assert total["images"] == sum(total[r] for r in ("kept", "kept_background", "missing_required", "background_cap"))
    manifest = pd.read_csv(root / out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == total["kept"] + total["kept_background"]
    for row in manifest.itertuples():
        assert (root / out / row.path).is_file()
        labels = read_yolo_labels(root / out / "labels" / f"{row.image_id}.txt")
        assert len(labels) == row.n_boxes and ((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1)).all()
    assert total["kept_background"] <= 0.5 * max(len(manifest), 1)
    return report, manifest


@pytest.mark.slow
def test_pseudo_label_stages_end_to_end(trained, monkeypatch):
    root = trained
    monkeypatch.chdir(root)
    assert pseudo_label.main([]) == 0
    report, _ = check_layout(root, "data/pseudo/synthetic", "reports/pseudo_label.json")
    assert set(report["per_group"]) == set(NAMES) and report["total"]["images"] == 9
    assert report["total"]["kept"] > 0  # conf 1e-4 with require_target off: the untrained net's boxes pass
    assert json.loads((root / "data/pseudo/synthetic/params.json").read_text())["imgsz"] == 32
    kept = sorted((root / "data/pseudo/synthetic/images").glob("*.png"))
    assert kept and all(read_rgb(p).shape == (16, 16, 3) for p in kept)  # the prepared size, from 8 px
    assert pseudo_label.main(["--pool", "tagged"]) == 0
    report, manifest = check_layout(root, "data/pseudo/tagged", "reports/pseudo_label_tagged.json")
    assert report["total"]["images"] == 8
    tags = load_manifest(root / "data" / "prepared", ("tagged",)).set_index("image_id")["tags"]
    for row in manifest.itertuples():  # the consistency rule: predicted classes == tags
        assert set(filter(None, row.classes.split(";"))) == set(tags[row.image_id])


def test_pseudo_label_needs_the_baseline(tmp_path, tiny_prepared, monkeypatch, capsys):
    make_synthetic(tmp_path)
    write_params(tmp_path, **TINY_DETECTION, paths=SYNTHETIC_AS_UPSAMPLED)
    monkeypatch.chdir(tmp_path)
    assert pseudo_label.main([]) == 2
    assert capsys.readouterr().err == "error: models/yolo/baseline/seed_0/best.pt: weights not found; run train_yolo first\n"
    assert not (tmp_path / "data" / "pseudo").exists() or not any((tmp_path / "data" / "pseudo").iterdir())


@pytest.mark.slow
def test_the_self_training_pool_takes_unknown_images_unchecked_and_an_empty_pool_trains_real_only(
        trained, tmp_path, monkeypatch, capsys):
    root = tmp_path / "copy"
    shutil.copytree(trained, root)
    move_tagged_to_unlabelled(root, 3)
    monkeypatch.chdir(root)
    assert pseudo_label.main(["--pool", "tagged"]) == 0
    report, manifest = check_layout(root, "data/pseudo/tagged", "reports/pseudo_label_tagged.json")
    assert report["total"]["images"] == 8 and report["per_group"]["(unknown)"]["images"] == 3
    unknown = report["per_group"]["(unknown)"]
    assert unknown["kept_background"] == unknown["background_cap"] == 0  # an unknown image is never background
    assert unknown["kept"] + unknown["missing_required"] == 3
    # no pool at all (split.mode use_all_boxes, no unlabelled folder): an empty layout, a warning, real-only training
    frame = pd.read_csv(root / "data/prepared/manifest.csv", keep_default_na=False)
    frame[~frame["split"].isin(["tagged", "unlabelled"])].to_csv(root / "data/prepared/manifest.csv", index=False)
    capsys.readouterr()
    assert pseudo_label.main(["--pool", "tagged"]) == 0
    assert "warning: pseudo_label: the tagged pool is empty" in capsys.readouterr().err
    assert json.loads((root / "reports/pseudo_label_tagged.json").read_text())["total"]["images"] == 0
    assert pd.read_csv(root / "data/pseudo/tagged/manifest.csv").empty
    assert train_yolo.main(["--variant", "selftrain"]) == 0
    params = json.loads((root / "models/yolo/selftrain/params.json").read_text())
    assert params["n_images"]["train"] == 8  # the real train images only
