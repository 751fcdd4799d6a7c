"""scenes.figures: boxes drawn where they are, grids written."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from scenes.figures import PALETTE, draw_boxes, image_grid


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


def test_box_lines_are_at_least_two_pixels_wide_even_without_upscaling():
    out = draw_boxes(np.zeros((16, 16, 3), np.uint8), np.array([[2, 2, 12, 12]], np.float32), np.array([0]), scale=1)
    column = out[:, 7]
    assert [tuple(column[y]) for y in (2, 3)] == [PALETTE[0]] * 2 and tuple(column[4]) == (0, 0, 0)


def test_a_grid_never_draws_an_image_smaller_than_its_pixels(tmp_path):
    matplotlib.use("Agg")
    tile = draw_boxes(np.zeros((128, 128, 3), np.uint8), np.array([[10, 10, 60, 60]], np.float32), np.array([2]), 2)
    image_grid(tmp_path / "grid.png", [[tile] * 4] * 2, ["a", "b"], ["w", "x", "y", "z"], ["can", "bottle", "paper"])
    with Image.open(tmp_path / "grid.png") as image:
        assert image.width >= 4 * tile.shape[1] and image.height >= 2 * tile.shape[0]
        rgb = np.asarray(image.convert("RGB")).astype(int)
    box_pixels = np.abs(rgb - np.array(PALETTE[2])).sum(axis=-1) < 60
    # the boxes' left and right sides (2 px wide, 100 px long in each of the 2 rows) keep both pixels
    assert (box_pixels.sum(axis=0) >= 2 * 95).sum() >= 4 * 2 * 2
