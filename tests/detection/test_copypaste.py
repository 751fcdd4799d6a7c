"""Copy-paste control: alpha and instances, placement, and the stage end to end on tiny fixtures."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import StageError
from detection.copypaste import Canvas, Instance, box_instance, feather_alpha, mask_instance, place, plan
from pipelines import copypaste
from scenes.boxes import disjoint, labels_to_pixels
from scenes.prepared import load_manifest, read_rgb, read_yolo_labels
from tests.support import TINY_CLASSES, write_inpaint_layout, write_params, write_tiny_masks, write_tiny_prepared

# the objects stage inpaint inserted: 7 images, one that kept none
INSERTED = [[0], [1, 2], [2, 2, 0], [], [1], [0, 1], [2]]


def instance(h: int, w: int, cls: int = 0) -> Instance:
    return Instance("x#1", cls, np.full((h, w, 3), 255, np.uint8), np.ones((h, w), np.float32), False)


def canvas(boxes, size: int = 16) -> Canvas:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return Canvas("c", Path("c.png"), "train", np.zeros((size, size, 3), np.uint8), xyxy,
                  np.zeros(len(xyxy), np.int64), "")


def test_feathered_alpha_is_one_inside_and_positive_up_to_the_edge():
    alpha = feather_alpha(5, 8, 1.5)
    assert alpha.shape == (5, 8) and alpha.min() == pytest.approx(0.5 / 1.5) and alpha[2, 3] == 1.0
    np.testing.assert_array_equal(alpha, alpha[::-1, ::-1])
    assert (feather_alpha(3, 4, 0.0) == 1).all()


def test_instances_are_cut_to_their_pixels():
    rgb = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    instances = np.zeros((8, 8), np.int64)
    instances[2:5, 3] = 1
    instances[4, 3:6] = 1  # an L: extent rows 2..4, cols 3..5
    cut = mask_instance(rgb, instances, 1, 2, "a#1")
    assert cut.from_mask and cut.alpha.shape == (3, 3) and cut.alpha.sum() == 5
    np.testing.assert_array_equal(cut.rgb, rgb[2:5, 3:6])
    assert mask_instance(rgb, instances, 2, 2, "a#2") is None
    crop = box_instance(rgb, np.array([1.4, 0.6, 4.5, 3.2]), 1, "a#3", 1.0)  # edges round to 1, 1, 5, 3
    assert not crop.from_mask and crop.rgb.shape == (2, 4, 3) and (crop.alpha > 0).all()
    np.testing.assert_array_equal(crop.rgb, rgb[1:3, 1:5])


def test_placement_never_overlaps_known_or_pasted_boxes():
    rng = np.random.default_rng(0)
    known = [[0, 0, 6, 6], [9.5, 9.5, 16, 16]]
    pool = {0: [instance(3, 3)], 1: [instance(2, 5, 1)]}
    for _ in range(30):
        pasted, unplaced = place([(0, None), (1, [7, 7, 9, 9]), (0, None), (1, None)], canvas(known), pool, rng,
                                 tries=40)
        boxes = [p.xyxy for p in pasted]
        assert len(pasted) + len(unplaced) == 4
        for i, box in enumerate(boxes):
            assert 0 <= box[0] and 0 <= box[1] and box[2] <= 16 and box[3] <= 16
            assert all(disjoint(box, k) for k in known)
            assert all(disjoint(box, other) for other in boxes[i + 1:])
    # no free place for a 12x12 object beside the known boxes: unplaced, never forced in
    assert place([(0, None)], canvas(known), {0: [instance(12, 12)]}, rng, tries=200) == ([], [0])


def test_an_object_is_centred_on_its_insertion_where_that_place_is_free():
    rng = np.random.default_rng(0)
    pasted, _ = place([(0, [6, 6, 10, 10]), (0, [0, 0, 2, 2])], canvas([]), {0: [instance(4, 4)]}, rng, tries=5)
    assert [p.xyxy for p in pasted] == [(6, 6, 10, 10), (0, 0, 4, 4)]  # the second moved inside the canvas
    # the centred place overlaps a known box: a random free one instead
    pasted, unplaced = place([(0, [6, 6, 10, 10])], canvas([[5, 5, 11, 11]]), {0: [instance(4, 4)]}, rng, tries=50)
    assert not unplaced and disjoint(pasted[0].xyxy, (5, 5, 11, 11))


def test_plan_takes_the_class_and_box_of_every_inserted_object(tmp_path):
    write_tiny_prepared(tmp_path)
    layout = write_inpaint_layout(tmp_path, [[0, 2], []])
    wanted = plan(layout, 3)
    assert [(m.name, [c for c, _ in m.objects]) for m in wanted] == [("000000", [0, 2]), ("000001", [])]
    for m in wanted:
        labels = read_yolo_labels(layout / "labels" / f"{m.name}.txt")
        xyxy, cls = labels_to_pixels(labels[len(labels) - len(m.objects):], 16, 16)
        np.testing.assert_allclose(np.reshape([box for _, box in m.objects], (-1, 4)), xyxy, atol=1e-5)
        assert (tmp_path / m.canvas).is_file()
    with pytest.raises(StageError, match=r"000000.txt: class index out of range 0..1: \[0, 2\]$"):
        plan(layout, 2)


@pytest.fixture
def layout(tmp_path):
    """Tiny prepared data (half the train images with instance maps), an inpaint layout, params."""
    prepared = write_tiny_prepared(tmp_path)
    masked = write_tiny_masks(prepared)
    write_inpaint_layout(tmp_path, INSERTED)
    write_params(tmp_path, copypaste={"feather_px": 1.5, "grid_images": 4, "grid_scale": 2})
    return tmp_path, prepared, masked


def pasted_rows(out: Path, image_id: str, n_canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(canvas boxes, pasted boxes) in px of an output image, from its label file."""
    labels = read_yolo_labels(out / "labels" / f"{image_id}.txt")
    xyxy, cls = labels_to_pixels(labels, 16, 16)
    return xyxy[:n_canvas], np.column_stack([cls[n_canvas:], xyxy[n_canvas:]])


def test_stage_pastes_train_instances_into_train_and_clean_images_only(layout, monkeypatch):
    root, prepared, masked = layout
    for split in ("val", "test"):  # the stage must not need them
        shutil.rmtree(prepared / "images" / split)
        shutil.rmtree(prepared / "labels" / split)
    monkeypatch.chdir(root)
    assert copypaste.main([]) == 0
    out = root / "data/pseudo/copypaste"
    report = json.loads((root / "reports/copypaste.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False, dtype={"image_id": str})
    assert len(manifest) == report["images"] == len(INSERTED) == len(list((out / "images").glob("*.png")))
    assert report["form"] == "mask and box"

    requested = Counter(c for classes in INSERTED for c in classes)
    for c, name in enumerate(TINY_CLASSES):
        row = report["per_class"][name]
        assert row["requested"] == row["pasted"] == requested[c]
        assert row["from_masks"] + row["from_boxes"] == row["pasted"] and row["unplaced"] == row["no_source"] == 0
    assert report["total"]["from_masks"] > 0 and report["total"]["from_boxes"] > 0

    frame = load_manifest(prepared, ("train", "tagged")).set_index("image_id")
    canvases = {Path(p).resolve(): i for i, p in frame["abspath"].items()
                if frame.loc[i, "split"] == "train" or not frame.loc[i, "tags"]}
    pasted_classes = Counter()
    inpaint = pd.read_csv(root / "data/pseudo/inpaint/manifest.csv", dtype={"image_id": str}).set_index("image_id")
    for row in manifest.itertuples():
        assert row.source_path == inpaint.loc[row.image_id, "source_path"]  # the insertions' canvas
        canvas_id = canvases[(root / row.source_path).resolve()]  # a train or clean tagged image
        canvas_labels = read_yolo_labels(prepared / "labels/train" / f"{canvas_id}.txt") if row.group == "train" \
            else np.zeros((0, 5), np.float32)
        known, pasted = pasted_rows(out, row.image_id, len(canvas_labels))
        np.testing.assert_allclose(read_yolo_labels(out / "labels" / f"{row.image_id}.txt")[:len(canvas_labels)],
                                   canvas_labels, atol=1e-6)
        sources = [s.split(":") for s in filter(None, row.pasted.split(";"))]
        assert len(sources) == len(pasted) == row.n_pasted and row.n_boxes == len(canvas_labels) + len(pasted)
        assert all(frame.loc[s[1].split("#")[0], "split"] == "train" for s in sources)
        assert all((s[2] == "mask") == (s[1].split("#")[0] in masked) for s in sources)
        pasted_classes.update(int(c) for c in pasted[:, 0])
        check_pasted_pixels(read_rgb(root / row.source_path), read_rgb(out / row.path), known, pasted, sources)
    assert pasted_classes == requested
    assert (root / "reports/copypaste/examples.png").is_file()
    assert json.loads((out / "params.json").read_text())["copypaste"]["feather_px"] == 1.5


def check_pasted_pixels(before: np.ndarray, after: np.ndarray, known: np.ndarray, pasted: np.ndarray, sources):
    """Pasted boxes lie inside, overlap nothing, and are exactly the extent of the pixels that changed;
    a mask instance changes its mask only (the tiny blob without its corners)."""
    changed = np.any(before != after, axis=2)
    inside = np.zeros_like(changed)
    boxes = np.rint(pasted[:, 1:]).astype(int)
    np.testing.assert_allclose(pasted[:, 1:], boxes, atol=1e-4)  # whole px
    for k, ((x0, y0, x1, y1), source) in enumerate(zip(boxes, sources)):
        assert 0 <= x0 < x1 <= 16 and 0 <= y0 < y1 <= 16
        assert all(disjoint((x0, y0, x1, y1), b) for b in [*known.tolist(), *boxes[k + 1:].tolist()])
        rows, cols = np.nonzero(changed[y0:y1, x0:x1])
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (0, 0, x1 - x0, y1 - y0)
        if source[2] == "mask":
            assert not changed[y0, x0] and not changed[y1 - 1, x1 - 1]  # the corners were not pasted
        inside[y0:y1, x0:x1] = True
    assert not (changed & ~inside).any()


def test_stage_is_deterministic(layout, monkeypatch):
    root, _, _ = layout
    monkeypatch.chdir(root)
    assert copypaste.main([]) == 0
    out = root / "data/pseudo/copypaste"
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert copypaste.main([]) == 0
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first


@pytest.mark.parametrize("breakage, message", [
    ("no_inpaint", "data/pseudo/inpaint/manifest.csv: not found; run the inpaint stage first"),
    ("feather", "params.yaml: copypaste.feather_px: must be >= 0, got -1"),
    ("mask_size", ("instance map: expected 16x16 with values 0..1 (its label lines), got 8x8 up to 1; "
                   "rerun the import stage")),
])
def test_errors_are_one_line_and_write_nothing(layout, monkeypatch, capsys, breakage, message):
    root, prepared, masked = layout
    if breakage == "no_inpaint":
        shutil.rmtree(root / "data/pseudo/inpaint")
    elif breakage == "feather":
        write_params(root, copypaste={"feather_px": -1})
    else:
        from PIL import Image
        Image.fromarray(np.ones((8, 8), np.uint8)).save(prepared / "masks/train" / f"{masked[0]}.png")
    monkeypatch.chdir(root)
    assert copypaste.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (root / "data/pseudo/copypaste").exists() and not (root / "reports").exists()
