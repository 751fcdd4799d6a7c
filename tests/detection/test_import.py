"""The `import` stage end to end on COCO fixtures built here: outputs, box transforms, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import import_dataset
from scenes.prepared import class_names, load_manifest, mask_path, read_instance_masks, read_yolo_labels
from tests import support
from tests.support import REPO, make_image, roboflow_yolo, voc_devkit

CLASSES = ["bottle", "can", "plastic_bag", "paper", "cigarette_butt"]


def write_params(tmp_path: Path, split_overrides=None, **dataset_overrides) -> None:
    """Params for an import of tmp_path/src, with the unlabelled pool at tmp_path/pool (created empty)."""
    (tmp_path / "pool").mkdir(exist_ok=True)
    dataset = {"path": "src", "format": "coco", "classes": CLASSES, "class_map": {}, "unmapped": "drop",
               "image_size": 32, "resize": "letterbox", "clip_tolerance_px": 2.0, "min_box_px": 1.0,
               "on_error": "fail", "on_missing_split": "skip", "unlabelled": "pool", "small_box_px": 2.0,
               **dataset_overrides}
    split = {"mode": "benchmark", "seed": 0, "train": 0.25, "tagged": 0.25, "val": 0.25, "test": 0.25,
             "use_source_splits": True, **(split_overrides or {})}
    support.write_params(tmp_path, dataset=dataset, split=split, upsampler={"image_size": dataset["image_size"]})


def make_coco(root: Path, images: list[dict], categories=None) -> Path:
    """images: {file, size=(w, h), boxes=[(category_id, x, y, w, h)], masks={box index: segmentation}};
    writes PNGs + annotations.json."""
    root.mkdir(parents=True, exist_ok=True)
    categories = categories or [{"id": i + 1, "name": n, "supercategory": "litter"} for i, n in enumerate(CLASSES)]
    coco = {"images": [], "annotations": [], "categories": categories}
    rng = np.random.default_rng(0)
    for image_id, spec in enumerate(images, start=1):
        w, h = spec.get("size", (48, 48))
        if spec.get("write", True):
            pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
            (root / spec["file"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / spec["file"])
        coco["images"].append({"id": image_id, "file_name": spec["file"], "width": w, "height": h})
        for k, (cat, x, y, bw, bh) in enumerate(spec.get("boxes", [])):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cat, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                                        **({"segmentation": spec["masks"][k]} if k in spec.get("masks", {}) else {})})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def many_images(n=16):
    return [{"file": f"img{i:02d}.png", "boxes": [((i % 5) + 1, 4, 4, 20, 16)] if i % 4 else []} for i in range(n)]


def run_import(tmp_path: Path, monkeypatch) -> int:
    monkeypatch.chdir(tmp_path)
    return import_dataset.main([])


def test_import_writes_the_prepared_contract(tmp_path, monkeypatch):
    make_coco(tmp_path / "src", many_images(16))
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 0
    prepared = tmp_path / "data/prepared"
    assert class_names(prepared) == CLASSES
    manifest = load_manifest(prepared)
    assert len(manifest) == 16
    assert sorted(manifest["split"].value_counts().to_dict().items()) == [("tagged", 4), ("test", 4), ("train", 4), ("val", 4)]
    for row in manifest.itertuples():
        with Image.open(row.abspath) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
        label_file = prepared / "labels" / row.split / f"{row.image_id}.txt"
        assert label_file.exists() == (row.split != "tagged")
        if row.split != "tagged":
            assert len(read_yolo_labels(label_file)) == row.n_boxes
        assert len(row.tags) == (1 if row.n_boxes else 0)
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert report["images"] == 16 and report["format"] == "coco"
    assert sum(report["boxes_per_class"].values()) == 12
    assert sum(s["images"] for s in report["splits"].values()) == 16
    assert sum(s["clean_images"] for s in report["splits"].values()) == 4
    assert json.loads((prepared / "params.json").read_text())["dataset"]["image_size"] == 32


@pytest.mark.parametrize("resize, expected", [
    # 64x32 image, box x 0..32, y 0..32 (whole left half)
    ("letterbox", [0, 0.25, 0.5, 0.5, 0.5]),   # scale 0.5 -> 32x16 pasted at y offset 8
    ("stretch", [0, 0.25, 0.5, 0.5, 1.0]),     # x scaled by 0.5, y by 1
])
def test_boxes_follow_the_resize(tmp_path, monkeypatch, resize, expected):
    make_coco(tmp_path / "src", [{"file": "wide.png", "size": (64, 32), "boxes": [(1, 0, 0, 32, 32)]}])
    write_params(tmp_path, {"train": 1.0, "tagged": 0.0, "val": 0.0, "test": 0.0}, resize=resize)
    assert run_import(tmp_path, monkeypatch) == 0
    labels = read_yolo_labels(tmp_path / "data/prepared/labels/train/wide.txt")
    np.testing.assert_allclose(labels[0], expected, atol=1e-5)
    if resize == "letterbox":
        pixels = np.asarray(Image.open(tmp_path / "data/prepared/images/train/wide.png"))
        assert (pixels[:8] == 114).all() and (pixels[24:] == 114).all()


def test_boxes_slightly_outside_are_clipped_and_reported(tmp_path, monkeypatch):
    images = many_images(8)
    images[1]["boxes"] = [(1, -1.5, 2, 20, 47.5)]  # 1.5 px left, 1.5 px below
    make_coco(tmp_path / "src", images)
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 0
    fixed = json.loads((tmp_path / "reports/import.json").read_text())["fixed"]
    assert [f["reason"] for f in fixed] == ["box clipped to the 48x48 image"]
    assert fixed[0]["record"] == "annotation id 1"


@pytest.mark.parametrize("mutate, message", [
    (lambda imgs, root: imgs[1].update(boxes=[(1, 30, 30, 25, 10)]), "lies outside the 48x48 image by more than 2 px"),
    (lambda imgs, root: imgs[1].update(boxes=[(1, 10, 10, 0.5, 10)]), "degenerate box"),
    # inside the tolerance, but nothing is left of it once clipped to the 48x48 image
    (lambda imgs, root: imgs[1].update(boxes=[(1, 48.5, 10, 1.2, 10)]), "degenerate box (48.5, 10, 49.7, 20)"),
    (lambda imgs, root: imgs[1].update(write=False), "image file 'img01.png' not found"),
    (lambda imgs, root: imgs[1].update(size=(40, 48)), "declared size"),
])
def test_bad_records_stop_with_one_line_and_no_outputs(tmp_path, monkeypatch, capsys, mutate, message):
    images = many_images(8)
    mutate(images, tmp_path / "src")
    make_coco(tmp_path / "src", images)
    if images[1].get("size") == (40, 48):  # the file on disk says 48x48, the annotation 40x48
        Image.new("RGB", (48, 48)).save(tmp_path / "src" / images[1]["file"])
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "annotations.json" in err and message in err
    assert not (tmp_path / "reports").exists()
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_unreadable_images_are_bad_records(tmp_path, monkeypatch, capsys, corrupt):
    make_coco(tmp_path / "src", many_images(8))
    target = tmp_path / "src/img01.png"
    data = target.read_bytes()
    target.write_bytes(b"not an image at all" if corrupt == "garbage" else data[: len(data) // 2])
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "image id 2" in err and "unreadable image img01.png" in err


def test_skip_mode_imports_the_rest_and_reports_each_skip(tmp_path, monkeypatch):
    images = many_images(12)
    images[1]["boxes"] = [(1, 30, 30, 25, 10)]
    images[2]["write"] = False
    make_coco(tmp_path / "src", images)
    write_params(tmp_path, on_error="skip")
    assert run_import(tmp_path, monkeypatch) == 0
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert report["images"] == 10
    assert sorted(s["record"] for s in report["skipped"]) == ["image id 2", "image id 3"]
    assert all(s["file"].endswith("annotations.json") for s in report["skipped"])


def test_class_mapping_by_name_supercategory_and_unmapped_policy(tmp_path, monkeypatch, capsys):
    categories = [{"id": 1, "name": "Clear plastic bottle", "supercategory": "Bottle"},
                  {"id": 2, "name": "Drink can", "supercategory": "Can"},
                  {"id": 3, "name": "Cigarette", "supercategory": "Cigarette"},
                  {"id": 4, "name": "Pizza box", "supercategory": "Carton"}]
    images = [{"file": f"i{i}.png", "boxes": [((i % 4) + 1, 2, 2, 10, 10)]} for i in range(8)]
    make_coco(tmp_path / "src", images, categories)
    class_map = {"Bottle": "bottle", "Drink can": "can", "Cigarette": "cigarette_butt"}
    write_params(tmp_path, class_map=class_map, unmapped="drop")
    assert run_import(tmp_path, monkeypatch) == 0
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert report["boxes_per_class"] == {"bottle": 2, "can": 2, "plastic_bag": 0, "paper": 0, "cigarette_butt": 2}
    assert sum("'Pizza box' not mapped" in f["reason"] for f in report["fixed"]) == 2

    write_params(tmp_path, class_map=class_map, unmapped="paper")
    assert run_import(tmp_path, monkeypatch) == 0
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert report["boxes_per_class"]["paper"] == 2

    write_params(tmp_path, class_map=class_map, unmapped="fail")
    assert run_import(tmp_path, monkeypatch) == 2
    assert "unknown class 'Pizza box'" in capsys.readouterr().err


def test_failed_import_keeps_the_previous_outputs_whole(tmp_path, monkeypatch):
    make_coco(tmp_path / "src", many_images(8))
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*"))
    (tmp_path / "src/img03.png").write_bytes(b"broken")
    assert run_import(tmp_path, monkeypatch) == 2
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*")) == before
    assert not list((tmp_path / "data").glob(".*tmp"))


def test_bad_settings_name_the_key(tmp_path, monkeypatch, capsys):
    make_coco(tmp_path / "src", many_images(4))
    write_params(tmp_path, resize="crop")
    assert run_import(tmp_path, monkeypatch) == 2
    assert capsys.readouterr().err == "error: params.yaml: dataset.resize: 'crop' is not one of letterbox, stretch\n"
    write_params(tmp_path, colour="red")
    assert run_import(tmp_path, monkeypatch) == 2
    assert "unknown key(s) colour" in capsys.readouterr().err


def test_command_line_exit_code_and_single_line(tmp_path):
    make_coco(tmp_path / "src", many_images(4))
    (tmp_path / "src/img01.png").write_bytes(b"broken")
    write_params(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pipelines.import_dataset"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def test_dataset_path_may_name_the_annotation_file(tmp_path, monkeypatch):
    make_coco(tmp_path / "src", many_images(8))
    write_params(tmp_path, path="src/annotations.json", format="auto")
    assert run_import(tmp_path, monkeypatch) == 0
    manifest = load_manifest(tmp_path / "data/prepared")
    assert sorted(manifest["source"])[:2] == ["img00.png", "img01.png"]


@pytest.mark.parametrize("builder, fmt", [("roboflow_yolo", "yolo"), ("voc_devkit", "voc")])
def test_yolo_and_voc_sources_import_through_the_stage(tmp_path, monkeypatch, builder, fmt):
    {"roboflow_yolo": roboflow_yolo, "voc_devkit": voc_devkit}[builder](tmp_path / "src")
    write_params(tmp_path, format="auto", class_map={"can": "can", "bottle": "bottle"})
    assert run_import(tmp_path, monkeypatch) == 0
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert report["format"] == fmt
    manifest = load_manifest(tmp_path / "data/prepared")
    assert len(manifest) == 3
    if fmt == "yolo":  # Roboflow train/valid/test: val and test are honoured
        assert manifest.set_index("source").loc["valid/images/valid1.jpg", "split"] == "val"
        assert manifest.set_index("source").loc["test/images/test1.jpg", "split"] == "test"
    else:  # VOC ImageSets: 002 is in val.txt
        assert manifest.set_index("source").loc["JPEGImages/002.jpg", "split"] == "val"
    assert report["boxes_per_class"]["bottle"] + report["boxes_per_class"]["can"] == sum(manifest["n_boxes"])


def test_a_declared_split_the_export_does_not_ship_is_skipped_and_reported(tmp_path, monkeypatch, capsys):
    roboflow_yolo(tmp_path / "src", splits=("train", "valid"))  # data.yaml still lists test: ../test/images
    write_params(tmp_path, format="auto", class_map={"can": "can", "bottle": "bottle"})
    assert run_import(tmp_path, monkeypatch) == 0
    report = json.loads((tmp_path / "reports/import.json").read_text())
    assert [m["split"] for m in report["missing_splits"]] == ["test"] and report["images"] == 2
    assert "warning: " in capsys.readouterr().err
    write_params(tmp_path, format="auto", class_map={"can": "can", "bottle": "bottle"}, on_missing_split="fail")
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data.yaml: test: '../test/images' not found" in err and err.count("\n") == 1


def test_a_dataset_without_a_single_box_is_refused(tmp_path, monkeypatch, capsys):
    root = tmp_path / "src"
    for name in ("a", "b", "c"):
        make_image(root / "images" / f"{name}.png")
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("bottle\ncan\n")
    write_params(tmp_path, format="yolo")
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "none of the 3 images has a box of dataset.classes" in err and err.count("\n") == 1
    assert not (tmp_path / "data/prepared").exists()


def column_major_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a bool [h, w] mask."""
    flat = mask.T.ravel().astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], edges])).tolist(), "size": list(mask.shape)}


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_masks_follow_the_resize_into_an_instance_map(tmp_path, monkeypatch, resize):
    # 64x32 image: box 1 the left half (a polygon), box 2 the bottom right quarter (an RLE), box 3 no mask
    quarter = np.zeros((32, 64), bool)
    quarter[16:, 48:] = True
    spec = {"file": "wide.png", "size": (64, 32), "boxes": [(1, 0, 0, 32, 32), (2, 48, 16, 16, 16), (3, 34, 2, 8, 8)],
            "masks": {0: [[0, 0, 32, 0, 32, 32, 0, 32]], 1: column_major_rle(quarter)}}
    make_coco(tmp_path / "src", [spec, {"file": "plain.png", "boxes": [(1, 4, 4, 8, 8)]}])
    write_params(tmp_path, {"train": 1.0, "tagged": 0.0, "val": 0.0, "test": 0.0}, resize=resize)
    assert run_import(tmp_path, monkeypatch) == 0
    image = tmp_path / "data/prepared/images/train/wide.png"
    assert mask_path(image) == tmp_path / "data/prepared/masks/train/wide.png"
    instances = read_instance_masks(image)
    expected = np.zeros((32, 32), np.int64)
    top, bottom = (8, 24) if resize == "letterbox" else (0, 32)  # letterbox: 32x16 at y offset 8
    expected[top:bottom, :16] = 1
    expected[(top + bottom) // 2:bottom, 24:] = 2
    np.testing.assert_array_equal(instances, expected)
    assert read_instance_masks(tmp_path / "data/prepared/images/train/plain.png") is None  # no mask: no map
    masks = json.loads((tmp_path / "reports/import.json").read_text())["masks"]
    assert (masks["boxes_with_source_mask"], masks["boxes_with_mask"], masks["lost_in_resize"]) == (2, 2, 0)


def test_an_rle_of_another_size_than_its_image_is_a_bad_record(tmp_path, monkeypatch, capsys):
    images = many_images(8)
    images[1]["masks"] = {0: {"counts": [10, 6], "size": [4, 4]}}
    make_coco(tmp_path / "src", images)
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "annotations.json: image id 2: annotation id 1: segmentation RLE size 4x4 differs from the 48x48 image" in err


def test_yolo_and_voc_sources_have_no_masks(tmp_path, monkeypatch):
    voc_devkit(tmp_path / "src")
    write_params(tmp_path, format="auto", class_map={"can": "can", "bottle": "bottle"})
    assert run_import(tmp_path, monkeypatch) == 0
    assert not (tmp_path / "data/prepared/masks").exists()
    assert json.loads((tmp_path / "reports/import.json").read_text())["masks"]["boxes_with_source_mask"] == 0


def test_demo_outlines_import_as_instance_maps_inside_their_boxes(tmp_path, monkeypatch):
    from detection.demo import DemoSettings, write_demo

    write_demo(support.settings(DemoSettings, "demo", n_images=24, image_size=64), tmp_path / "src")
    write_params(tmp_path, image_size=32)
    assert run_import(tmp_path, monkeypatch) == 0
    masks = json.loads((tmp_path / "reports/import.json").read_text())["masks"]
    assert masks["boxes_with_mask"] > 0 and masks["boxes_with_source_mask"] >= masks["boxes_with_mask"]
    for row in load_manifest(tmp_path / "data/prepared", ("train", "val", "test")).itertuples():
        instances = read_instance_masks(row.abspath)
        assert (instances is None) == (row.n_boxes == 0)
        if instances is None:
            continue
        labels = read_yolo_labels(mask_path(row.abspath).parent.parent.parent / "labels" / row.split / f"{row.image_id}.txt")
        assert instances.max() <= len(labels)
        for k, (_, cx, cy, w, h) in enumerate(labels, start=1):
            rows, cols = np.nonzero(instances == k)
            if len(rows):  # the item's pixels at the prepared size lie in the pixels its box touches
                x0, y0, x1, y1 = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 32
                assert cols.min() >= np.floor(x0 + 1e-3) and cols.max() + 1 <= np.ceil(x1 - 1e-3)
                assert rows.min() >= np.floor(y0 + 1e-3) and rows.max() + 1 <= np.ceil(y1 - 1e-3)
