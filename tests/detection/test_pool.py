"""The unlabelled pool through the `import` stage: unknown is not clean, tags.csv, bad input; the split modes."""

import json

import numpy as np
import pytest
from PIL import Image

from augment.data import GENERATIVE_SPLITS, ROAD_SPLITS, load_image_set
from detection.pseudo_label import tagged_pool
from scenes.canvases import canvases
from scenes.prepared import load_manifest
from tests.detection.test_import import CLASSES, make_coco, many_images, run_import, write_params


def pool_image(path, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 60, 3), value, np.uint8)).save(path)


def make_pool(tmp_path, tags_csv=None):
    """tmp_path/pool: a.png, b.jpg, sub/c.png, d.png; tags.csv when given."""
    for name in ("a.png", "b.jpg", "sub/c.png", "d.png"):
        pool_image(tmp_path / "pool" / name)
    if tags_csv is not None:
        (tmp_path / "pool" / "tags.csv").write_text(tags_csv)


def imported(tmp_path, monkeypatch, split_overrides=None, **dataset):
    make_coco(tmp_path / "src", many_images(16))
    write_params(tmp_path, split_overrides, **dataset)
    assert run_import(tmp_path, monkeypatch) == 0
    return load_manifest(tmp_path / "data/prepared"), json.loads((tmp_path / "reports/import.json").read_text())


def test_untagged_pool_images_import_as_unknown_never_as_clean(tmp_path, monkeypatch, capsys):
    make_pool(tmp_path)
    manifest, report = imported(tmp_path, monkeypatch)
    pool = manifest[manifest["image_id"].str.startswith("unlabelled__")]
    assert sorted(pool["image_id"]) == ["unlabelled__a", "unlabelled__b", "unlabelled__d", "unlabelled__sub__c"]
    assert set(pool["split"]) == {"unlabelled"} and set(pool["tags"]) == {()} and set(pool["n_boxes"]) == {0}
    assert sorted(pool["source"]) == ["unlabelled/a.png", "unlabelled/b.jpg", "unlabelled/d.png",
                                      "unlabelled/sub/c.png"]
    for row in pool.itertuples():  # resized as the boxed images, no label file
        assert Image.open(row.abspath).size == (32, 32)
        assert not (tmp_path / "data/prepared/labels/unlabelled" / f"{row.image_id}.txt").exists()
    assert report["unlabelled"] == {**report["unlabelled"], "images": 4, "tagged": 0, "clean": 0, "unknown": 4}
    assert report["splits"]["unlabelled"]["unknown_images"] == 4
    assert report["splits"]["unlabelled"]["clean_images"] == 0
    assert sum(s["clean_images"] for s in report["splits"].values()) == 4  # the boxed dataset's own 4 clean roads
    # never a canvas, never a negative example for the classifier or judge; the UNet's road images
    prepared = tmp_path / "data/prepared"
    assert not [c for c in canvases(prepared) if c.image_id.startswith("unlabelled__")]
    every_split = canvases(prepared, ("train", "tagged", "unlabelled"))
    assert not [c for c in every_split if c.image_id.startswith("unlabelled__")]
    assert not [i for i in load_image_set(prepared, GENERATIVE_SPLITS, 16).image_ids if i.startswith("unlabelled__")]
    assert len(load_image_set(prepared, ROAD_SPLITS, 16).image_ids) == 4 + 4 + 4  # train, tagged, unlabelled
    # the self-training pool: nothing required, everything allowed
    unknown = [p for p in tagged_pool(load_manifest(prepared, ("tagged", "unlabelled")), CLASSES)
               if p.group == "(unknown)"]
    assert len(unknown) == 4 and all(p.required == frozenset() and p.allowed is None and p.needs_a_box
                                     for p in unknown)
    assert "unlabelled pool pool: 4 images (0 tagged, 0 clean, 4 unknown)" in capsys.readouterr().out


def test_tags_csv_makes_tags_known_and_clean_explicit(tmp_path, monkeypatch):
    make_pool(tmp_path, "file,tags\na.png,can;bottle\nb.jpg,clean\nsub/c.png,\n")
    manifest, report = imported(tmp_path, monkeypatch)
    rows = manifest.set_index("image_id")
    assert rows.loc["unlabelled__a", "split"] == "tagged" and rows.loc["unlabelled__a", "tags"] == ("bottle", "can")
    assert rows.loc["unlabelled__b", "split"] == "tagged" and rows.loc["unlabelled__b", "tags"] == ()
    assert rows.loc["unlabelled__sub__c", "split"] == "unlabelled"  # listed with an empty cell: unknown
    assert rows.loc["unlabelled__d", "split"] == "unlabelled"       # not listed: unknown
    counts = {k: report["unlabelled"][k] for k in ("tagged", "clean", "unknown")}
    assert counts == {"tagged": 1, "clean": 1, "unknown": 2}
    assert report["splits"]["tagged"]["images_per_class"]["can"] >= 1
    # a known-clean pool image is a canvas and a negative example; a tagged one is neither a canvas nor boxed
    kinds = {c.image_id: c.kind for c in canvases(tmp_path / "data/prepared")}
    assert kinds["unlabelled__b"] == "clean" and "unlabelled__a" not in kinds
    pool = {p.image_id: p for p in tagged_pool(load_manifest(tmp_path / "data/prepared", ("tagged", "unlabelled")),
                                               CLASSES)}
    assert pool["unlabelled__a"].required == pool["unlabelled__a"].allowed == frozenset({0, 1})
    assert pool["unlabelled__b"].group == "(clean)" and pool["unlabelled__d"].group == "(unknown)"


def test_pool_tags_follow_the_class_map(tmp_path, monkeypatch):
    make_pool(tmp_path, "file,tags\na.png,Drink can\nd.png,Pizza box\n")
    manifest, report = imported(tmp_path, monkeypatch, class_map={"Drink can": "can"})
    rows = manifest.set_index("image_id")
    assert rows.loc["unlabelled__a", "tags"] == ("can",)
    assert rows.loc["unlabelled__d", "split"] == "tagged" and rows.loc["unlabelled__d", "tags"] == ()  # dropped tag
    assert any("tag 'Pizza box' of d.png not mapped: dropped" in f["reason"] for f in report["fixed"])


@pytest.mark.parametrize("tags_csv, record, message", [
    ("file,tags\na.png,tyre\n", "tags of a.png", "unknown class 'tyre'"),
    ("file,tags\nmissing.png,can\n", "line 2", "image file 'missing.png' is not in the pool folder"),
    ("file,tags\n../src/img01.png,can\n", "line 2", "escapes the dataset root"),
    ("file,tags\n/etc/passwd,can\n", "line 2", "is absolute"),
    ("file,tags\na.png,can\na.png,bottle\n", "line 3", "listed twice (also line 2)"),
    ("file,tags\nb.jpg,clean;can\n", "line 2", "'clean' (no litter) cannot go with other tags"),
    ("file,labels\na.png,can\n", None, "missing column(s) tags"),
    ("file,tags\na.png,can,extra\n", None, "line 2: 3 fields where the header has 2"),
])
def test_bad_tags_csv_stops_with_one_line_naming_file_and_record(tmp_path, monkeypatch, capsys, tags_csv, record,
                                                                 message):
    make_pool(tmp_path, tags_csv)
    make_coco(tmp_path / "src", many_images(8))
    write_params(tmp_path, unmapped="fail")
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pool/tags.csv: " in err and message in err
    assert record is None or f"tags.csv: {record}: " in err
    assert not [p for p in tmp_path.glob("data/**/*") if p.is_file()] and not (tmp_path / "reports").exists()


def test_a_corrupt_pool_image_is_a_bad_record_and_skip_leaves_it_out(tmp_path, monkeypatch, capsys):
    make_pool(tmp_path)
    (tmp_path / "pool" / "d.png").write_bytes(b"not a png")
    make_coco(tmp_path / "src", many_images(8))
    write_params(tmp_path)
    assert run_import(tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pool/d.png: unlabelled image: unreadable image d.png" in err
    manifest, report = imported(tmp_path, monkeypatch, on_error="skip")
    assert "unlabelled__d" not in set(manifest["image_id"]) and report["unlabelled"]["images"] == 3
    assert [s["record"] for s in report["skipped"]] == ["unlabelled image"]


def test_a_missing_pool_folder_is_one_line(tmp_path, monkeypatch, capsys):
    make_coco(tmp_path / "src", many_images(8))
    write_params(tmp_path, unlabelled="no_such_folder")
    assert run_import(tmp_path, monkeypatch) == 2
    assert capsys.readouterr().err == ("error: no_such_folder: unlabelled pool folder not found (params.yaml "
                                       "dataset.unlabelled); an empty folder means no pool\n")


@pytest.mark.parametrize("mode, expected", [
    ("benchmark", {"train": 4, "tagged": 4, "val": 4, "test": 4}),       # 0.25 each of the 16 boxed images
    ("use_all_boxes", {"train": 8, "val": 4, "test": 4, "unlabelled": 4}),  # tagged's share keeps its boxes in train
])
def test_the_two_split_modes_give_the_documented_splits(tmp_path, monkeypatch, mode, expected):
    make_pool(tmp_path)
    manifest, report = imported(tmp_path, monkeypatch, {"mode": mode})
    boxed = manifest[~manifest["image_id"].str.startswith("unlabelled__")]
    counts = boxed["split"].value_counts().to_dict()
    assert counts == {k: v for k, v in expected.items() if k != "unlabelled"}
    assert report["split_mode"] == mode and report["splits"]["unlabelled"]["images"] == 4
    train_labels = list((tmp_path / "data/prepared/labels/train").glob("*.txt"))
    assert len(train_labels) == expected["train"]  # every train image has its boxes written
    assert report["boxes_per_class"] == {n: sum(report["splits"][s]["boxes_per_class"][n] for s in report["splits"])
                                         for n in CLASSES}
