"""Dataset format readers: COCO / TACO, YOLO / Roboflow, Pascal VOC, auto-detection, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from core.errors import StageError
from detection.formats import detect_format, read_dataset
from detection.records import Problems, SourceImage
from tests.support import H, W, make_image, roboflow_yolo, voc_devkit, voc_object, voc_xml, write


def corners(image: SourceImage) -> list[tuple]:
    return [(b.label, round(b.x0, 4), round(b.y0, 4), round(b.x1, 4), round(b.y1, 4)) for b in image.boxes]


def by_key(images: list[SourceImage]) -> dict[str, SourceImage]:
    return {image.key: image for image in images}


def fails_and_skips(path: Path, fmt: str, file_name: str, record: str, reason: str) -> list[SourceImage]:
    """fail mode: one-line StageError 'file: record: reason'; skip mode: recorded, rest read."""
    with pytest.raises(StageError) as err:
        read_dataset(path, fmt, Problems("fail", "fail"))
    message = str(err.value)
    assert "\n" not in message
    assert f"{file_name}: {record}: " in message and reason in message, message
    problems = Problems("skip", "fail")
    images, _ = read_dataset(path, fmt, problems)
    assert any(Path(s["file"]).name == file_name and s["record"] == record and reason in s["reason"]
               for s in problems.skipped), problems.skipped
    return images


# --- COCO ---------------------------------------------------------------------------------

def coco_data() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png", "width": W, "height": H},
                   {"id": 3, "file_name": "clean.png"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 3, 4, 5], "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 3, "bbox": [],
             "segmentation": [[1, 2, 9, 2, 9, 6], [4, 1, 5, 8, 4, 8]]},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 20, 16], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "Clear plastic bottle", "supercategory": "Bottle"},
                       {"id": 3, "name": "Drink can", "supercategory": "Can"}],
    }


def coco_dataset(root: Path, data: dict | None = None, images: tuple[str, ...] = ("a", "b", "clean")) -> Path:
    for name in images:
        make_image(root / f"{name}.png")
    write(root / "annotations.json", json.dumps(coco_data() if data is None else data))
    return root


def test_coco_taco_style(tmp_path):
    problems = Problems("fail", "fail")
    images, names = read_dataset(coco_dataset(tmp_path), "coco", problems)
    assert names == ["Drink can", "Clear plastic bottle"]  # categories by id
    found = by_key(images)
    assert set(found) == {"a", "b", "clean"}
    assert corners(found["a"]) == [("Clear plastic bottle", 2, 3, 6, 8)]  # [x, y, w, h] -> corners
    assert found["a"].boxes[0].supercategory == "Bottle"
    assert found["a"].boxes[0].record == "annotation id 10"
    assert corners(found["b"]) == [("Drink can", 1, 1, 9, 8)]  # enclosing box of both polygons
    assert found["b"].boxes[0].supercategory == "Can"
    assert found["clean"].boxes == () and found["clean"].declared_size is None
    assert found["a"].declared_size == (W, H) and found["a"].record == "image id 1"
    assert found["a"].split is None and found["a"].annotation_file == tmp_path / "annotations.json"
    assert problems.fixed == [{"file": str(tmp_path / "annotations.json"), "record": "annotation id 12",
                               "reason": "iscrowd annotation ignored"}]


def test_coco_file_names_under_images_folder_and_json_path(tmp_path):
    make_image(tmp_path / "images" / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [],
            "categories": [{"id": 1, "name": "can"}]}
    write(tmp_path / "labels.json", json.dumps(data))
    images, names = read_dataset(tmp_path / "labels.json", "coco", Problems("fail", "fail"))
    assert [(i.key, i.path) for i in images] == [("images/a", tmp_path / "images" / "a.png")] and names == ["can"]


def test_coco_split_files(tmp_path):
    for split_file, name in [("instances_train2017.json", "t"), ("instances_val2017.json", "v"), ("test.json", "e")]:
        make_image(tmp_path / f"{name}.png")
        write(tmp_path / split_file, json.dumps({"images": [{"id": 1, "file_name": f"{name}.png"}],
                                                 "annotations": [], "categories": [{"id": 1, "name": "can"}]}))
    images, _ = read_dataset(tmp_path, "coco", Problems("fail", "fail"))
    assert {i.key: i.split for i in images} == {"t": "train", "v": "val", "e": "test"}


def test_coco_roboflow_split_folders(tmp_path):
    for folder in ("train", "valid"):
        make_image(tmp_path / folder / "x.jpg")
        write(tmp_path / folder / "_annotations.coco.json", json.dumps(
            {"images": [{"id": 0, "file_name": "x.jpg"}], "annotations": [],
             "categories": [{"id": 0, "name": "litter", "supercategory": "none"}]}))
    assert detect_format(tmp_path) == "coco"
    images, _ = read_dataset(tmp_path, "coco", Problems("fail", "fail"))
    assert {i.key: i.split for i in images} == {"train/x": "train", "valid/x": "val"}


def test_coco_single_split_is_no_split(tmp_path):
    make_image(tmp_path / "a.png")
    write(tmp_path / "train.json", json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                               "annotations": [], "categories": []}))
    images, _ = read_dataset(tmp_path, "coco", Problems("fail", "fail"))
    assert [i.split for i in images] == [None]


def test_coco_malformed_json_and_empty_file_are_fatal_in_both_modes(tmp_path):
    coco_dataset(tmp_path)
    write(tmp_path / "annotations.json", '{"images": [\n  {"id": 1}\n  {"id": 2}\n]}')
    for mode in ("fail", "skip"):
        with pytest.raises(StageError, match=r"annotations.json: JSON: Expecting ',' delimiter at line 3 column 3$"):
            read_dataset(tmp_path, "coco", Problems(mode, "fail"))
    write(tmp_path / "annotations.json", "  \n")
    for mode in ("fail", "skip"):
        with pytest.raises(StageError, match=r"annotations.json: file: empty file$"):
            read_dataset(tmp_path, "coco", Problems(mode, "fail"))
    write(tmp_path / "annotations.json", json.dumps({"images": []}))
    with pytest.raises(StageError, match=r"annotations.json: annotations: missing or not a list"):
        read_dataset(tmp_path, "coco", Problems("skip", "fail"))


@pytest.mark.parametrize("change, record, reason", [
    (lambda d: d["annotations"][0].update(category_id=9), "annotation id 10", "unknown category_id 9"),
    (lambda d: d["annotations"][0].update(image_id=99), "annotation id 10", "unknown image_id 99"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "annotation id 10", "negative width or height"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]), "annotation id 10", "must be finite numbers, got 'x'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation id 10", "bbox must be [x, y, w, h]"),
    (lambda d: d["images"][2].update(id=1), "image id 1", "duplicate image id (also images[0])"),
    (lambda d: d["images"][2].update(file_name="a.png"), "image id 3",
     "duplicate image 'a' (also annotations.json: image id 1)"),
    (lambda d: d["images"][2].update(file_name="../outside.png"), "image id 3",
     "'../outside.png' escapes the dataset root"),
    (lambda d: d["images"][2].update(file_name="/etc/passwd"), "image id 3", "'/etc/passwd' is absolute"),
    (lambda d: d["images"][2].update(file_name="gone.png"), "image id 3", "image file 'gone.png' not found"),
])
def test_coco_bad_records(tmp_path, change, record, reason):
    data = coco_data()
    change(data)
    images = fails_and_skips(coco_dataset(tmp_path, data), "coco", "annotations.json", record, reason)
    assert "b" in by_key(images)  # the untouched image survives in skip mode
    if (record == "annotation id 10" and "image_id" not in reason) or "duplicate image id" in reason:
        assert "a" not in by_key(images)  # a bad annotation drops its whole image


def test_coco_symlink_leading_out_of_root(tmp_path):
    outside = make_image(tmp_path / "outside.png")
    root = coco_dataset(tmp_path / "ds")
    (root / "clean.png").unlink()
    os.symlink(outside, root / "clean.png")
    images = fails_and_skips(root, "coco", "annotations.json", "image id 3", "resolves outside the dataset root")
    assert set(by_key(images)) == {"a", "b"}


# --- YOLO ---------------------------------------------------------------------------------

def test_yolo_ultralytics_layout_pixels(tmp_path):
    make_image(tmp_path / "images" / "train" / "a.png")
    make_image(tmp_path / "images" / "train" / "clean.png")  # no label file: a clean image
    make_image(tmp_path / "images" / "val" / "b.jpg", size=(32, 24))
    write(tmp_path / "labels" / "train" / "a.txt", "1 0.5 0.5 0.5 0.25\n\n0 0.1 0.25 0.2 0.5\n")
    write(tmp_path / "labels" / "val" / "b.txt", "0 0.25 0.25 0.75 0.25 0.5 0.75\n")  # segment line
    write(tmp_path / "labels" / "train" / "orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    write(tmp_path / "data.yaml", yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                  "names": {0: "can", 1: "bottle"}}))
    assert detect_format(tmp_path) == "yolo" and detect_format(tmp_path / "data.yaml") == "yolo"
    problems = Problems("fail", "fail")
    images, names = read_dataset(tmp_path, "yolo", problems)
    found = by_key(images)
    assert names == ["can", "bottle"]
    # cx, cy, w, h = 10, 8, 10, 4 px -> corners (5, 6, 15, 10); second line 2, 4, 4, 8 px
    assert corners(found["images/train/a"]) == [("bottle", 5, 6, 15, 10), ("can", 0, 0, 4, 8)]
    assert [b.record for b in found["images/train/a"].boxes] == ["line 1", "line 3"]
    assert corners(found["images/val/b"]) == [("can", 8, 6, 24, 18)]  # polygon enclosing box on 32x24
    assert found["images/train/clean"].boxes == () and found["images/val/b"].split == "val"
    assert found["images/train/a"].annotation_file == tmp_path / "labels" / "train" / "a.txt"
    assert problems.fixed == [{"file": str(tmp_path / "labels" / "train" / "orphan.txt"),
                               "record": "label file", "reason": "no matching image; ignored"}]


def test_yolo_roboflow_layout(tmp_path):
    problems = Problems("fail", "fail")
    images, names = read_dataset(roboflow_yolo(tmp_path), "yolo", problems)
    assert names == ["bottle", "can"]
    assert {i.key: i.split for i in images} == {"train/images/train1": "train", "valid/images/valid1": "val",
                                                "test/images/test1": "test"}
    assert corners(images[0]) == [("bottle", 5, 4, 15, 12)]
    assert [f["record"] for f in problems.fixed] == ["train", "val", "test"]
    assert "read as 'train/images'" in problems.fixed[0]["reason"]


def test_yolo_only_train_split_is_no_split(tmp_path):
    root = roboflow_yolo(tmp_path, splits=("train",))
    write(root / "data.yaml", "train: ../train/images\nnames: ['bottle', 'can']\n")
    images, _ = read_dataset(root, "yolo", Problems("fail", "fail"))
    assert [i.split for i in images] == [None]


def test_yolo_bare_folders_with_classes_txt_and_txt_list(tmp_path):
    make_image(tmp_path / "images" / "a.png")
    write(tmp_path / "labels" / "a.txt", "0 0.5 0.5 1 1\n")
    write(tmp_path / "classes.txt", "paper\nbottle\n")
    assert detect_format(tmp_path) == "yolo"
    images, names = read_dataset(tmp_path, "yolo", Problems("fail", "fail"))
    assert names == ["paper", "bottle"] and corners(images[0]) == [("paper", 0, 0, 20, 16)]
    write(tmp_path / "train.txt", "./images/a.png\n")
    write(tmp_path / "data.yaml", "train: train.txt\nnames: [paper, bottle]\n")
    images, _ = read_dataset(tmp_path / "data.yaml", "yolo", Problems("fail", "fail"))
    assert [i.key for i in images] == ["images/a"]


def test_yolo_stale_absolute_path_is_ignored(tmp_path):
    make_image(tmp_path / "images" / "a.png")
    write(tmp_path / "data.yaml", "path: /home/someone/datasets/litter\ntrain: images\nnames: [can]\n")
    problems = Problems("fail", "fail")
    images, _ = read_dataset(tmp_path, "yolo", problems)
    assert [i.key for i in images] == ["images/a"] and [f["record"] for f in problems.fixed] == ["path"]


def yolo_dataset(root: Path, label_text: str) -> Path:
    make_image(root / "images" / "a.png")
    make_image(root / "images" / "good.png")
    write(root / "labels" / "a.txt", label_text)
    write(root / "labels" / "good.txt", "0 0.5 0.5 0.5 0.5\n")
    write(root / "data.yaml", "train: images\nnames: [bottle, can]\n")
    return root


@pytest.mark.parametrize("label_text, record, reason", [
    ("0 0.5 0.5 0.5 0.5\n1 0.5 0.5 0.5\n", "line 2", "expected 'class cx cy w h' (5 numbers), got 4 values"),
    ("7 0.5 0.5 0.5 0.5\n", "line 1", "unknown class id 7 (names has 2)"),
    ("1.5 0.5 0.5 0.5 0.5\n", "line 1", "class id '1.5' is not an integer"),
    ("0 0.5 nan 0.5 0.5\n", "line 1", "coordinates must be finite numbers"),
    ("0 10 8 4 4\n", "line 1", "coordinates not normalised to [0, 1]"),
    ("0 0.5 x 0.5 0.5\n", "line 1", "not a number in '0 0.5 x 0.5 0.5'"),
])
def test_yolo_bad_label_lines(tmp_path, label_text, record, reason):
    images = fails_and_skips(yolo_dataset(tmp_path, label_text), "yolo", "a.txt", record, reason)
    assert [i.key for i in images] == ["images/good"]


def test_yolo_unreadable_image_and_symlink_out(tmp_path):
    root = yolo_dataset(tmp_path / "ds", "0 0.5 0.5 0.5 0.5\n")
    write(root / "images" / "a.png", "not an image")
    images = fails_and_skips(root, "yolo", "a.png", "image", "unreadable image")
    assert [i.key for i in images] == ["images/good"]
    (root / "images" / "a.png").unlink()
    os.symlink(make_image(tmp_path / "secret.png"), root / "images" / "a.png")
    fails_and_skips(root, "yolo", "a.png", "image", "resolves outside the dataset root")


@pytest.mark.parametrize("text, mode, message", [
    ("train: images\nnames: [bottle, can\n", "skip", r"data.yaml: line 3: malformed YAML: expected ',' or ']'"),
    ("", "skip", r"data.yaml: file: empty file$"),
    ("train: images\nnames: {0: bottle, 2: can}\n", "skip", r"data.yaml: names: dict keys must be 0..1"),
    ("train: /abs/images\nnames: [bottle]\n", "fail", r"data.yaml: train: file name '/abs/images' is absolute"),
])
def test_yolo_whole_file_problems_are_fatal(tmp_path, text, mode, message):
    root = yolo_dataset(tmp_path, "")
    write(root / "data.yaml", text)
    with pytest.raises(StageError, match=message):
        read_dataset(root, "yolo", Problems(mode, "fail"))


# --- Pascal VOC ---------------------------------------------------------------------------

def test_voc_devkit_one_based_corners_and_splits(tmp_path):
    assert detect_format(voc_devkit(tmp_path)) == "voc"
    images, names = read_dataset(tmp_path, "voc", Problems("fail", "fail"))
    found = by_key(images)
    assert names == ["can", "bottle"]  # first seen, xml files in sorted order
    # 1-based inclusive (1, 2, 10, 12) -> 0-based corners (0, 1, 10, 12); difficult kept
    assert corners(found["JPEGImages/001"]) == [("can", 0, 1, 10, 12), ("bottle", 4, 4, 5, 6)]
    assert {k: i.split for k, i in found.items()} == {"JPEGImages/001": "train", "JPEGImages/002": "val",
                                                      "JPEGImages/003": None}
    assert found["JPEGImages/003"].boxes == () and found["JPEGImages/002"].declared_size == (W, H)
    assert found["JPEGImages/001"].annotation_file == tmp_path / "Annotations" / "001.xml"


def test_voc_plain_folders_with_splits_and_stem_fallback(tmp_path):
    make_image(tmp_path / "train" / "a.jpg")
    write(tmp_path / "train" / "a.xml", voc_xml("a.jpg", voc_object("paper")))
    make_image(tmp_path / "valid" / "b.png")
    write(tmp_path / "valid" / "b.xml", voc_xml("renamed.jpg", voc_object("paper"), size=""))
    assert detect_format(tmp_path) == "voc"
    problems = Problems("fail", "fail")
    images, names = read_dataset(tmp_path, "voc", problems)
    assert {i.key: (i.split, i.declared_size) for i in images} == {"train/a": ("train", (W, H)),
                                                                   "valid/b": ("val", None)}
    assert problems.fixed[0]["record"] == "filename" and "using b.png" in problems.fixed[0]["reason"]


@pytest.mark.parametrize("xml_text, record, reason", [
    ("<annotation><filename>002.jpg</filename><object>", "XML", "malformed XML: no element found: line 1"),
    (voc_xml("002.jpg", voc_object("can", xmax="")), "object 1", "'can': <bndbox><xmax> is missing"),
    (voc_xml("002.jpg", voc_object("can", ymin="two")), "object 1", "'can': <bndbox><ymin> is not a number: 'two'"),
    (voc_xml("002.jpg", voc_object("can", xmin="9", xmax="3")), "object 1", "xmax < xmin or ymax < ymin"),
    (voc_xml("002.jpg", "<object><difficult>0</difficult></object>"), "object 1", "missing <name>"),
    (voc_xml("../../outside.jpg", ""), "filename", "'../../outside.jpg' escapes the dataset root"),
])
def test_voc_bad_records(tmp_path, xml_text, record, reason):
    write(voc_devkit(tmp_path) / "Annotations" / "002.xml", xml_text)
    images = fails_and_skips(tmp_path, "voc", "002.xml", record, reason)
    assert set(by_key(images)) == {"JPEGImages/001", "JPEGImages/003"}


def test_voc_imageset_listing_unknown_image(tmp_path):
    write(voc_devkit(tmp_path) / "ImageSets" / "Main" / "test.txt", "001\n999\n")
    images = fails_and_skips(tmp_path, "voc", "test.txt", "line 1", "001 is also listed in train.txt")
    assert len(images) == 3
    write(tmp_path / "ImageSets" / "Main" / "test.txt", "999\n")
    fails_and_skips(tmp_path, "voc", "test.txt", "line 1", "no Annotations/999.xml")


# --- auto-detection -----------------------------------------------------------------------

def test_detect_format_files_and_unknown(tmp_path):
    coco_dataset(tmp_path / "coco")
    assert detect_format(tmp_path / "coco") == "coco"
    assert detect_format(tmp_path / "coco" / "annotations.json") == "coco"
    assert detect_format(roboflow_yolo(tmp_path / "rf")) == "yolo"
    write(tmp_path / "xmls" / "a.xml", voc_xml("a.jpg", ""))
    assert detect_format(tmp_path / "xmls") == "voc"
    make_image(tmp_path / "nothing" / "a.png")
    with pytest.raises(StageError, match=r"nothing: cannot detect the dataset format: looked for a Pascal VOC"):
        detect_format(tmp_path / "nothing")
    with pytest.raises(StageError, match=r"missing: dataset path not found"):
        detect_format(tmp_path / "missing")
    with pytest.raises(StageError, match=r"unknown dataset format 'csv'"):
        read_dataset(tmp_path / "coco", "csv", Problems("fail", "fail"))


# --- COCO segmentation -> masks ----------------------------------------------------------

RLE = {"counts": [5, 3, 13, 3, 296], "size": [16, 20]}  # column-major: rows 5..7 of columns 0 and 1


def test_coco_polygons_and_uncompressed_rle_become_masks(tmp_path):
    data = coco_data()
    data["annotations"][0]["segmentation"] = [[2, 3, 6, 3, 6, 8]]
    data["annotations"][1]["segmentation"] = RLE
    data["annotations"][1]["bbox"] = []  # derived from the RLE's pixels
    images, _ = read_dataset(coco_dataset(tmp_path, data), "coco", Problems("fail", "fail"))
    found = by_key(images)
    mask = found["a"].boxes[0].mask
    assert mask.polygons == ((2.0, 3.0, 6.0, 3.0, 6.0, 8.0),) and mask.rle_size is None
    mask = found["b"].boxes[0].mask
    assert mask.polygons == () and mask.rle_counts == (5, 3, 13, 3, 296) and mask.rle_size == (16, 20)
    assert corners(found["b"]) == [("Drink can", 0, 5, 2, 8)]


def test_coco_compressed_rle_keeps_the_box_without_a_mask_and_says_so(tmp_path):
    data = coco_data()
    data["annotations"][0]["segmentation"] = {"counts": "PPY1", "size": [16, 20]}
    problems = Problems("fail", "fail")
    images, _ = read_dataset(coco_dataset(tmp_path, data), "coco", problems)
    assert corners(by_key(images)["a"]) == [("Clear plastic bottle", 2, 3, 6, 8)] and by_key(images)["a"].boxes[0].mask is None
    assert {"file": str(tmp_path / "annotations.json"), "record": "annotation id 10",
            "reason": "compressed RLE segmentation not decoded: the box is used without a mask"} in problems.fixed
    data["annotations"][0]["bbox"] = []
    fails_and_skips(coco_dataset(tmp_path, data), "coco", "annotations.json", "annotation id 10",
                    "no bbox, and the segmentation is a compressed RLE (not decoded here)")


@pytest.mark.parametrize("segmentation, reason", [
    ([[1, 2, 3, 4]], "segmentation polygon must be a list of at least 3 x, y points"),
    ([[1, 2, 3, 4, 5]], "segmentation polygon must be a list of at least 3 x, y points"),
    ([[1, 2, 3, "x", 5, 6]], "segmentation values must be finite numbers, got 'x'"),
    ("polygon", "segmentation must be a list of polygons or an RLE {counts, size}, got 'polygon'"),
    ({"counts": [5, 3], "size": [16, 20]}, "segmentation RLE counts sum to 8, not 16 x 20 = 320 pixels"),
    ({"counts": [5, -3, 318], "size": [16, 20]}, "segmentation RLE counts must be a list of non-negative integers"),
    ({"counts": [320], "size": [16]}, "segmentation RLE size must be [height, width], got [16]"),
])
def test_coco_malformed_segmentation_is_a_bad_record(tmp_path, segmentation, reason):
    data = coco_data()
    data["annotations"][0]["segmentation"] = segmentation
    images = fails_and_skips(coco_dataset(tmp_path, data), "coco", "annotations.json", "annotation id 10", reason)
    assert "a" not in by_key(images) and "b" in by_key(images)
