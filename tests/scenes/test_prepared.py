import numpy as np
import pytest
from PIL import Image

from core.errors import StageError
from scenes.prepared import image_size, label_path, read_rgb, resample_rgb


def test_read_rgb_returns_uint8_hwc_and_converts_grey(tmp_path):
    Image.new("L", (5, 3), 200).save(tmp_path / "grey.png")
    rgb = read_rgb(tmp_path / "grey.png")
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.uint8 and (rgb == 200).all()


def test_read_rgb_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(StageError, match=r"missing.png: image not found"):
        read_rgb(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(StageError, match=r"bad.png: unreadable image"):
        read_rgb(tmp_path / "bad.png")


def test_label_path_swaps_the_last_images_folder():
    assert str(label_path("/d/images/x/images/train/a.png")) == "/d/images/x/labels/train/a.txt"


def test_resample_shrinks_by_area_enlarges_bicubically_and_keeps_its_own_size():
    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    assert resample_rgb(rgb, 4) is rgb
    small = resample_rgb(rgb, 2)
    assert small.shape == (2, 2, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(float) - rgb.astype(float).reshape(2, 2, 2, 2, 3).mean(axis=(1, 3))).max() <= 1.0
    flat = np.full((4, 4, 3), 77, np.uint8)
    assert resample_rgb(flat, 16).shape == (16, 16, 3) and (resample_rgb(flat, 16) == 77).all()
    with pytest.raises(StageError, match="expected a square image, got 4x2"):
        resample_rgb(np.zeros((2, 4, 3), np.uint8), 8)


def test_read_rgb_at_a_size_and_the_prepared_image_size(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "a.png", 4).shape == (4, 4, 3)
    (tmp_path / "data.yaml").write_text("names: {0: can}\nimage_size: 128\n")
    assert image_size(tmp_path) == 128
    (tmp_path / "data.yaml").write_text("names: {0: can}\n")
    with pytest.raises(StageError, match=r"data.yaml: image_size: expected a positive integer, got None"):
        image_size(tmp_path)
