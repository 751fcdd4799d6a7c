import numpy as np
import pytest
from PIL import Image

from core.errors import StageError
from detection.prepared import label_path, read_rgb


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
