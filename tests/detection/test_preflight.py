"""The preflight of object sizes: per-class figures, the warning and the image size that fixes it."""

import json

import pytest

from detection.preflight import box_sizes, preflight, size_warning
from tests.detection.test_import import make_coco, run_import, write_params


def test_box_sizes_are_the_median_and_10th_percentile_of_the_shorter_sides():
    sizes = box_sizes([float(v) for v in range(1, 11)], [2.0 * v for v in range(1, 11)])
    assert sizes == {"boxes": 10, "median_px": 5.5, "p10_px": 1.9, "source_median_px": 11.0}
    assert box_sizes([], []) == {"boxes": 0, "median_px": None, "p10_px": None, "source_median_px": None}


@pytest.mark.parametrize("median, source_median, expected", [
    (8.0, 40.0, None),                                          # at the floor: fine
    (4.0, 40.0, "yolo.train.imgsz 256 would make it 8.0 px"),  # 128 * 8 / 4 = 256
    (3.0, 40.0, "yolo.train.imgsz 352 would make it 8.2 px"),  # 341.3 -> the next multiple of 32
    (3.0, 6.0, "even at the source images' own resolution the median is 6 px, so no image_size fixes it (crop the "
               "images around the objects, or drop the class)"),
])
def test_a_small_median_warns_with_the_image_size_that_fixes_it(median, source_median, expected):
    sizes = {"boxes": 5, "median_px": median, "p10_px": median / 2, "source_median_px": source_median}
    warning = size_warning("cigarette_butt", sizes, 128, 8.0)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith(f"class cigarette_butt: median box {median:g} px (shorter side, 10th percentile "
                                  f"{median / 2:g}) at image_size 128, under 8 px")
        assert warning.endswith(expected)


def test_classes_without_boxes_are_reported_and_not_warned():
    report = preflight({"bottle": [20.0, 30.0], "can": []}, {"bottle": [40.0, 60.0], "can": []}, 64, 8.0)
    assert report["per_class"]["can"]["boxes"] == 0 and report["warnings"] == []
    assert report["per_class"]["bottle"]["median_px"] == 25.0


def test_the_import_of_a_dataset_of_tiny_boxes_warns(tmp_path, monkeypatch, capsys):
    # 640x480 photos with 12x40 px bottles and 40x40 px cans: at image_size 64 (scale 0.1) 1.2 and 4 px wide
    images = [{"file": f"img{i:02d}.png", "size": (640, 480), "boxes": [(1, 100, 100, 12, 40), (2, 300, 200, 40, 40)]}
              for i in range(8)]
    make_coco(tmp_path / "src", images)
    write_params(tmp_path, image_size=64, small_box_px=8.0)
    assert run_import(tmp_path, monkeypatch) == 0
    preflight_report = json.loads((tmp_path / "reports/import.json").read_text())["preflight"]
    assert preflight_report["per_class"]["bottle"] == {"boxes": 8, "median_px": 1.2, "p10_px": 1.2,
                                                       "source_median_px": 12.0}
    assert preflight_report["per_class"]["can"]["median_px"] == 4.0
    out, err = capsys.readouterr()
    assert "box sizes at 64 px (shorter side, median / 10th percentile): bottle 1.2 / 1.2; can 4 / 4" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning: import: ")]
    assert len(warnings) == 2 == len(preflight_report["warnings"])
    assert warnings[0].endswith("dataset.image_size and yolo.train.imgsz 448 would make it 8.4 px")  # 64*8/1.2
    assert warnings[1].endswith("dataset.image_size and yolo.train.imgsz 128 would make it 8.0 px")
