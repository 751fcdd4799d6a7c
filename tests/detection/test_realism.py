"""Realism judged by the detector: IoU, agreement and box IoU on constructed detections, the gate, the
layouts' synthetic objects, the crops, and the gate file train_yolo reads."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import StageError
from detection.realism import (
    QualityGateSettings,
    SyntheticObject,
    best_iou,
    box_ious,
    class_figures,
    gate,
    gate_left_out,
    gated_out,
    layout_objects,
    object_crop,
    realism_line,
    scene_objects,
)
from detection.yolo import YoloParams, added_images
from scenes.boxes import Detections
from tests.support import TINY_CLASSES, settings, write_inpaint_layout, write_pseudo_layout, write_tiny_prepared


def detections(*rows) -> Detections:
    """Detections from (x0, y0, x1, y1, cls) rows."""
    array = np.array(rows, np.float32).reshape(-1, 5)
    return Detections(array[:, :4], np.ones(len(array), np.float32), array[:, 4].astype(np.int64))


def obj(cls: int, box=None, name: str = "a") -> SyntheticObject:
    return SyntheticObject(Path(f"{name}.png"), name, cls, None if box is None else tuple(map(float, box)))


def test_box_iou_is_intersection_over_union():
    others = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [10, 0, 20, 10], [2, 2, 4, 4]], np.float32)
    # 25 / (100 + 100 - 25), touching edges share nothing, a box inside: its area over the outer's
    np.testing.assert_allclose(box_ious((0, 0, 10, 10), others), [1.0, 25 / 175, 0.0, 4 / 100])
    assert box_ious((0, 0, 1, 1), np.zeros((0, 4))).shape == (0,)


def test_best_iou_counts_only_boxes_of_the_objects_class():
    found = detections((0, 0, 10, 10, 1), (0, 0, 8, 10, 0), (20, 20, 30, 30, 0))
    assert best_iou(obj(0, (0, 0, 10, 10)), found) == pytest.approx(0.8)
    assert best_iou(obj(1, (0, 0, 10, 10)), found) == 1.0
    assert best_iou(obj(2, (0, 0, 10, 10)), found) == 0.0
    # a generated scene's object has no box: any box of its class finds it
    assert best_iou(obj(0), found) == 1.0 and best_iou(obj(2), found) == 0.0


def test_agreement_and_box_iou_per_class():
    objects = [obj(0, (0, 0, 4, 4)), obj(0, (0, 0, 4, 4)), obj(1, (0, 0, 4, 4)), obj(2), obj(2)]
    ious = np.array([[0.9, 0.0, 0.4, 1.0, 0.0],    # seed 0
                     [0.6, 0.3, 0.55, 1.0, 1.0]])  # seed 1
    figures = class_figures(objects, ious, TINY_CLASSES, iou_threshold=0.5)
    # bottle: 2 of 4 (object, seed) pairs at IoU >= 0.5; the median IoU of the 3 pairs the detector saw at all
    assert figures["bottle"] == {"objects": 2, "agreement": 0.5, "box_iou": 0.6}
    assert figures["can"] == {"objects": 1, "agreement": 0.5, "box_iou": pytest.approx(0.475)}
    # boxless objects give agreement only
    assert figures["paper"] == {"objects": 2, "agreement": 0.75, "box_iou": None}
    empty = class_figures([obj(0, (0, 0, 4, 4))], np.zeros((2, 1)), TINY_CLASSES, 0.5)
    assert empty["bottle"] == {"objects": 1, "agreement": 0.0, "box_iou": None}
    assert empty["can"] == {"objects": 0, "agreement": None, "box_iou": None}


def test_gate_leaves_out_the_images_of_failing_classes_only():
    figures = {"bottle": {"agreement": 0.49}, "can": {"agreement": 0.5}, "paper": {"agreement": None}}
    passed = gate(figures, min_agreement=0.5)
    assert passed == {"bottle": False, "can": True, "paper": None}
    objects = [obj(0, name="x"), obj(1, name="x"), obj(1, name="y"), obj(0, name="z")]
    assert gated_out(objects, passed, TINY_CLASSES) == ["x", "z"]  # x holds a bottle beside its can
    assert gated_out(objects, gate(figures, 0.0), TINY_CLASSES) == []
    line = realism_line("inpaint", {"bottle": {"agreement": 0.49}, "can": {"agreement": 0.5},
                                    "paper": {"agreement": None}}, passed)
    assert line == "realism inpaint: detector agreement bottle 0.49, can 0.50; gated out: bottle"


@pytest.mark.parametrize("values, message", [
    ({"min_agreement": 1.5, "iou": 0.5}, "min_agreement: must be in [0, 1], got 1.5"),
    ({"min_agreement": 0.5, "iou": -0.1}, "iou: must be in [0, 1], got -0.1"),
])
def test_settings_are_checked(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        QualityGateSettings(**values)


def test_layout_objects_are_the_last_counted_label_lines(tmp_path):
    write_tiny_prepared(tmp_path)
    layout = write_inpaint_layout(tmp_path, [[0, 2], [], [1]])
    objects = layout_objects(layout, "n_inserted", "inpaint")
    assert [(o.name, o.cls) for o in objects] == [("000000", 0), ("000000", 2), ("000002", 1)]
    lines = (layout / "labels/000000.txt").read_text().splitlines()
    cx, cy = (float(v) for v in lines[-2].split()[1:3])  # the first inserted box: 0.25 of 16 px
    assert objects[0].xyxy == pytest.approx((cx * 16 - 2, cy * 16 - 2, cx * 16 + 2, cy * 16 + 2), abs=1e-4)
    # the pseudo-labelled scenes: every line is synthetic
    scenes = layout_objects(write_pseudo_layout(tmp_path, "synthetic", [[1, 1], [2]]), None, "pseudo_label")
    assert [(o.name, o.cls) for o in scenes] == [("p000", 1), ("p000", 1), ("p001", 2)]
    frame = pd.read_csv(layout / "manifest.csv", dtype={"image_id": str})
    frame.loc[0, "n_inserted"] = 9
    frame.to_csv(layout / "manifest.csv", index=False)
    with pytest.raises(StageError, match=r"manifest.csv: image 000000: n_inserted 9 exceeds its \d+ label lines$"):
        layout_objects(layout, "n_inserted", "inpaint")
    with pytest.raises(StageError, match="copypaste/manifest.csv: not found; run the copypaste stage first"):
        layout_objects(tmp_path / "data/pseudo/copypaste", "n_pasted", "copypaste")


def test_scene_objects_are_their_targets():
    frame = pd.DataFrame({"abspath": ["a.png", "b.png"], "image_id": ["can_0", "paper_0"], "target": ["can", "paper"]})
    assert [(o.name, o.cls, o.xyxy) for o in scene_objects(frame, TINY_CLASSES)] == [("can_0", 1, None),
                                                                                       ("paper_0", 2, None)]


def test_object_crop_is_the_boxs_square_at_a_fixed_size():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[10:14, 4:12] = 255                                      # an 8 x 4 object
    crop = object_crop(rgb, (4, 10, 12, 14), 8)
    assert crop.shape == (8, 8, 3)
    np.testing.assert_array_equal(crop[2:6, :, 0], 255)         # the square of side 8 holds it, centred
    assert (crop[:2] == 0).all() and (crop[6:] == 0).all()
    corner = object_crop(rgb, (-2, -2, 3, 3), 10)               # moved inside the image, upsampled
    assert corner.shape == (10, 10, 3)
    assert object_crop(rgb, (0, 0, 64, 64), 16).shape == (16, 16, 3)  # at most the image


def test_the_variants_leave_out_what_the_gate_names(tmp_path):
    pseudo = tmp_path / "data/pseudo"
    write_pseudo_layout(tmp_path, "inpaint", [[0], [1], [2], [0]])
    params = settings(YoloParams, "yolo", mix={"synthetic_ratio": 10.0})
    with pytest.raises(StageError, match="gate/inpaint.json: not found; run the realism stage first"):
        added_images("inpaint", params, pseudo, 4)
    (pseudo / "gate").mkdir()
    (pseudo / "gate/inpaint.json").write_text(json.dumps({"failed": ["bottle"], "gated_out": ["p000", "p003"]}))
    assert [i.name for i in added_images("inpaint", params, pseudo, 4)] == ["inpaint_p001", "inpaint_p002"]
    with pytest.raises(StageError, match="gate/inpaint.json: no list of gated-out images"):
        (pseudo / "gate/inpaint.json").write_text("{}")
        gate_left_out(pseudo, "inpaint")
    # the capped sample is drawn from what the gate kept
    (pseudo / "gate/inpaint.json").write_text(json.dumps({"failed": [], "gated_out": ["p000"]}))
    capped = settings(YoloParams, "yolo", mix={"synthetic_ratio": 0.5})
    assert len(added_images("inpaint", capped, pseudo, 4)) == 2
    assert "inpaint_p000" not in {i.name for i in added_images("inpaint", capped, pseudo, 4)}
