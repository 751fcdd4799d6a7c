"""The procedural demo dataset: determinism, exact boxes and outlines, class mix, clean share, COCO, the stage."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import StageError
from core.params import from_dict
from detection.demo import SPRITES, SUPERSAMPLE, DemoSettings, compose, write_demo
from detection.masks import polygon_mask
from pipelines import demo_data
from tests import support

MAGENTA = np.float32([255, 0, 255])   # far from every litter colour, so any covered pixel changes


def flat_scene(classes: list[str], size: int, seed: int):
    side = size * SUPERSAMPLE
    albedo = np.broadcast_to(MAGENTA, (side, side, 3)).copy()
    light = np.ones((side, side, 1), np.float32)
    return compose(albedo, light, classes, np.random.default_rng(seed), size)


def changed_pixels(image: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(np.int16) - MAGENTA.astype(np.int16)).max(axis=2) > 2


def render(tmp_path: Path, name: str, **overrides) -> tuple[Path, dict]:
    settings = support.settings(DemoSettings, "demo", **{"n_images": 24, "image_size": 32, **overrides})
    out = tmp_path / name
    write_demo(settings, out)
    return out, json.loads((out / "annotations.json").read_text())


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    a, _ = render(tmp_path, "a", seed=3)
    b, _ = render(tmp_path, "b", seed=3)
    c, _ = render(tmp_path, "c", seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 25
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "annotations.json").read_bytes() != (c / "annotations.json").read_bytes()
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) >= 20


@pytest.mark.parametrize("name", list(SPRITES))
def test_single_item_box_is_the_tight_box_of_its_drawn_pixels(name):
    for seed in range(6):
        for size in (32, 64):
            scene = flat_scene([name], size, seed)
            assert len(scene.boxes) == 1 and scene.boxes[0].category == name
            rows, cols = np.nonzero(changed_pixels(scene.image))
            x, y, w, h = scene.boxes[0].bbox
            assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert 0 < scene.boxes[0].area <= w * h


@pytest.mark.parametrize("name", list(SPRITES))
def test_sprite_fits_inside_its_declared_radius(name):
    rng = np.random.default_rng(0)
    for _ in range(40):
        radius, paint = SPRITES[name](rng, 128.0)
        grid = np.linspace(-radius, radius, 96, dtype=np.float32)
        u, v = np.meshgrid(grid, grid)
        cover, rgb, alpha = paint(u, v)
        assert cover.any() and rgb.shape == u.shape + (3,) and alpha.shape == u.shape
        assert not (cover[0].any() or cover[-1].any() or cover[:, 0].any() or cover[:, -1].any())


def test_every_drawn_pixel_is_inside_a_box_even_with_overlap():
    names = list(SPRITES)
    overlaps = 0
    for seed in range(20):
        scene = flat_scene([names[(seed + k) % 5] for k in range(6)], 32, seed)
        inside = np.zeros((32, 32), bool)
        for box in scene.boxes:
            x, y, w, h = box.bbox
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 32 and y + h <= 32
            overlaps += int(inside[y:y + h, x:x + w].any())
            inside[y:y + h, x:x + w] = True
        assert not (changed_pixels(scene.image) & ~inside).any()
    assert overlaps > 0


def test_relative_sizes_follow_real_litter():
    def mean_side(name):
        return np.mean([max(flat_scene([name], 64, s).boxes[0].bbox[2:]) for s in range(10)])

    sides = {name: mean_side(name) for name in SPRITES}
    assert sides["cigarette_butt"] == min(sides.values())
    assert max(sides, key=sides.get) in ("plastic_bag", "bottle")
    assert 5 <= sides["cigarette_butt"] <= 10 and 15 <= sides["bottle"] <= 30


def test_class_mix_follows_frequencies_and_clean_share_is_exact(tmp_path):
    frequency = {"bottle": 1.0, "can": 0.5, "cigarette_butt": 0.15}
    _, coco = render(tmp_path, "mix", n_images=300, clean_fraction=0.25, class_frequency=frequency)
    counts = coco["info"]["object_counts"]
    total = sum(counts.values())
    assert total > 400
    for name, weight in frequency.items():
        assert counts[name] / total == pytest.approx(weight / sum(frequency.values()), abs=0.05)
    littered = {a["image_id"] for a in coco["annotations"]}
    assert coco["info"]["clean_images"] == 300 - len(littered) == 75


def test_coco_json_is_valid_and_info_matches_annotations(tmp_path):
    out, coco = render(tmp_path, "coco")
    assert [c["name"] for c in coco["categories"]] == list(support.repo_params()["demo"]["class_frequency"])
    assert all(c["supercategory"] == "litter" for c in coco["categories"])
    category_ids = {c["id"] for c in coco["categories"]}
    image_ids = {i["id"] for i in coco["images"]}
    assert len(image_ids) == 24 and len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for image in coco["images"]:
        assert Image.open(out / image["file_name"]).size == (image["width"], image["height"]) == (32, 32)
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["image_id"] in image_ids and ann["category_id"] in category_ids and ann["iscrowd"] == 0
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 32 and y + h <= 32
        assert 0 < ann["area"] <= w * h
    names = {c["id"]: c["name"] for c in coco["categories"]}
    made = {n: sum(names[a["category_id"]] == n for a in coco["annotations"]) for n in names.values()}
    assert coco["info"]["object_counts"] == made
    assert coco["info"]["seed"] == 0 and coco["info"]["version"] and coco["info"]["clean_images"] == 5


@pytest.mark.parametrize("values, message", [
    ({"colour": "red"}, "demo: unknown key(s) colour"),
    ({"class_frequency": {"bottle": 1.0, "can": 0}}, "demo: class_frequency.can must be a positive number"),
    ({"class_frequency": {"bottle": 1.0, "tyre": 0.5}}, "demo.class_frequency: no renderer for class 'tyre'"),
    ({"clean_fraction": 1.5}, "demo.clean_fraction: must be a number in [0, 1]"),
    ({"n_images": 0}, "demo.n_images: must be an integer >= 1"),
])
def test_bad_settings_fail_with_one_clear_line(values, message):
    with pytest.raises(StageError, match=r"^params.yaml: " + re.escape(message)):
        from_dict(DemoSettings, {**support.repo_params()["demo"], **values}, where="params.yaml: demo")


def write_params(tmp_path: Path, **demo) -> None:
    support.write_params(tmp_path, demo={"seed": 0, "n_images": 12, "image_size": 32, "clean_fraction": 0.25,
                                         "max_objects": 3, **demo})


def test_stage_writes_dataset_and_resolved_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert demo_data.main([]) == 0
    out = tmp_path / "data/raw/demo"
    assert len(list((out / "images").glob("*.png"))) == 12
    params = json.loads((out / "meta/params.json").read_text())
    assert sorted(p.name for p in out.glob("*.json")) == ["annotations.json"]
    assert params["n_images"] == 12 and params["class_frequency"]["bottle"] == 1.0
    assert demo_data.main(["--out", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere/annotations.json").read_bytes() == (out / "annotations.json").read_bytes()


def test_failed_stage_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, colour="red")
    assert demo_data.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "params.yaml: demo: unknown key(s) colour" in err
    assert not (tmp_path / "data").exists()


def test_stage_failing_mid_render_leaves_no_partial_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)

    def broken(settings, out):
        (out / "images").mkdir()
        (out / "images/000000.png").write_bytes(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(demo_data, "write_demo", broken)
    with pytest.raises(RuntimeError, match="killed"):
        demo_data.main([])
    assert not (tmp_path / "data/raw/demo").exists() and list((tmp_path / "data/raw").iterdir()) == []


def ss_polygons(box) -> list[list[float]]:
    return [[v * SUPERSAMPLE for v in polygon] for polygon in box.segmentation]


@pytest.mark.parametrize("name", list(SPRITES))
def test_segmentation_gives_the_items_coverage_and_box(name):
    for seed in range(6):
        size = 32
        scene = flat_scene([name], size, seed)
        (box,) = scene.boxes
        side = size * SUPERSAMPLE
        coverage = polygon_mask(ss_polygons(box), side, side).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
        # the supersampled outline is exact: its coverage is the item's (plastic bags' handle holes are filled)
        if name == "plastic_bag":
            assert coverage.sum() >= box.area
        else:
            assert round(float(coverage.sum()), 2) == box.area
        assert not (changed_pixels(scene.image) & (coverage == 0)).any()
        x, y, w, h = box.bbox
        xs = np.concatenate([p[0::2] for p in box.segmentation])
        ys = np.concatenate([p[1::2] for p in box.segmentation])
        assert (math.floor(xs.min()), math.floor(ys.min()), math.ceil(xs.max()), math.ceil(ys.max())) == (x, y, x + w, y + h)
        # at the output size, every fully covered pixel is inside and nothing outside the item is
        output = polygon_mask(box.segmentation, size, size)
        assert output[coverage == 1].all() and not output[coverage == 0].any()


def test_segmentation_of_overlapping_items_follows_what_stays_visible():
    names = list(SPRITES)
    for seed in range(10):
        scene = flat_scene([names[(seed + k) % 5] for k in range(5)], 32, seed)
        for box in scene.boxes:
            x, y, w, h = box.bbox
            mask = polygon_mask(ss_polygons(box), 64, 64)
            rows, cols = np.nonzero(mask)
            assert (cols.min() // 2, rows.min() // 2, -(-(cols.max() + 1) // 2), -(-(rows.max() + 1) // 2)) == \
                (x, y, x + w, y + h)
            assert mask.sum() / SUPERSAMPLE**2 >= box.area


def test_coco_segmentation_is_polygons_rounded_to_two_decimals(tmp_path):
    _, coco = render(tmp_path, "seg", n_images=8)
    assert coco["info"]["version"] == "1.1" and coco["annotations"]
    for ann in coco["annotations"]:
        assert ann["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        assert all(round(v, 2) == v for p in ann["segmentation"] for v in p)
