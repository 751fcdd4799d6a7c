"""detection.figures: boxes drawn where they are, grids written."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from detection.figures import PALETTE, draw_boxes, image_grid


def test_draw_boxes_upscales_and_outlines_each_box_in_its_class_colour():
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = draw_boxes(rgb, np.array([[1, 1, 4, 4]], np.float32), np.array([1]), scale=3)
    assert out.shape == (24, 24, 3)
    assert tuple(out[3, 6]) == PALETTE[1] and tuple(out[6, 6]) == (0, 0, 0)  # on the outline / inside the box


def test_image_grid_saves_one_png_for_rows_of_different_lengths(tmp_path):
    matplotlib.use("Agg")
    tile = np.zeros((8, 8, 3), np.uint8)
    image_grid(tmp_path / "grid.png", [[tile, tile, tile], [tile]], ["a", "b"], ["x", "y", "z"], ["can", "bottle"])
    with Image.open(tmp_path / "grid.png") as image:
        assert image.width > image.height > 0
