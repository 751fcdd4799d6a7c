"""Instance masks in COCO conventions: polygons and uncompressed RLE to pixels, pixels to polygons.

Coordinates are pixel-edge positions: pixel (row r, column c) is the square [c, c + 1] x [r, r + 1],
and it belongs to a polygon when its centre (c + 0.5, r + 0.5) lies inside (even-odd rule). The
polygons of one instance are unioned, as pycocotools does, so they cannot carry holes.
cv2.fillPoly is not used to fill them: it also fills every pixel the outline touches, one pixel
too many along the right and bottom edges. An uncompressed RLE is `counts`, alternating run
lengths starting with background, over the pixels of a (height, width) image in column-major
order.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from detection.records import BadRecord, SourceMask


def polygon_mask(polygons: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """bool [height, width]: the pixels whose centres lie inside any flat [x1, y1, x2, y2, ...] polygon."""
    mask = np.zeros((height, width), bool)
    for flat in polygons:
        points = np.asarray(flat, np.float64).reshape(-1, 2)
        x0, y0 = points[:, 0], points[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        top, bottom = max(0, math.floor(y0.min())), min(height, math.ceil(y0.max()))
        left, right = max(0, math.floor(x0.min())), min(width, math.ceil(x0.max()))
        if top >= bottom or left >= right:
            continue
        ys = np.arange(top, bottom) + 0.5                                          # [R] row centres
        rows, edges = np.nonzero((y0 <= ys[:, None]) != (y1 <= ys[:, None]))        # edges spanning a row centre
        xs = x0[edges] + (ys[rows] - y0[edges]) / (y1[edges] - y0[edges]) * (x1[edges] - x0[edges])
        # pixel c is inside when an odd number of crossings lie at or left of its centre c + 0.5
        first = np.clip(np.ceil(xs - 0.5) - left, 0, right - left).astype(np.int64)
        toggles = np.zeros((len(ys), right - left + 1), np.uint8)
        np.add.at(toggles, (rows, first), 1)
        mask[top:bottom, left:right] |= (np.cumsum(toggles, axis=1, dtype=np.uint8)[:, :-1] & 1).astype(bool)
    return mask


def rle_mask(counts: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """bool [height, width] of an uncompressed RLE of a `size` = (height, width) image."""
    height, width = size
    runs = np.repeat(np.arange(len(counts)) % 2 == 1, np.asarray(counts, np.int64))
    return runs.reshape(width, height).T


def source_mask_pixels(mask: SourceMask, width: int, height: int) -> np.ndarray:
    """bool [height, width] of a source mask on its width x height image; an RLE of another size is a BadRecord."""
    if mask.rle_size is None:
        return polygon_mask(mask.polygons, width, height)
    if tuple(mask.rle_size) != (height, width):
        raise BadRecord(f"segmentation RLE size {mask.rle_size[1]}x{mask.rle_size[0]} differs from the "
                        f"{width}x{height} image")
    return rle_mask(mask.rle_counts, mask.rle_size)


def outline_polygons(mask: np.ndarray, scale: int) -> list[list[float]]:
    """The outer outlines of a bool mask as flat COCO polygons along pixel edges, coordinates / `scale`.

    `polygon_mask` of them at the mask's own resolution gives the mask back, with holes filled.
    cv2.findContours traces pixel centres; on the mask doubled (each pixel 2 x 2) the traced centre
    i of a half pixel maps to the pixel edge (i + 1) // 2, which turns the trace into the staircase
    of pixel edges around the mask.
    """
    doubled = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        corners = (contour[:, 0, :] + 1) // 2                                      # [n, 2] x, y
        corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]  # each corner once
        d_in, d_out = corners - np.roll(corners, 1, axis=0), np.roll(corners, -1, axis=0) - corners
        straight = (d_in[:, 0] * d_out[:, 1] == d_in[:, 1] * d_out[:, 0]) & ((d_in * d_out).sum(axis=1) > 0)
        polygons.append([round(float(v) / scale, 2) for v in corners[~straight].ravel()])
    return polygons


def instance_map(coverages: Sequence[np.ndarray | None], shape: tuple[int, int], threshold: float) -> np.ndarray:
    """uint8 (uint16 past 255 instances) [h, w]: k where instance k (1-based) covers the pixel most,
    by at least `threshold`; 0 elsewhere. `coverages[k - 1]` is float [h, w] in 0..1, None for no mask."""
    dtype = np.uint8 if len(coverages) < 256 else np.uint16
    best = np.zeros(shape, np.float32)
    out = np.zeros(shape, dtype)
    for k, coverage in enumerate(coverages, start=1):
        if coverage is None:
            continue
        wins = (coverage >= threshold) & (coverage > best)
        out[wins], best[wins] = k, coverage[wins]
    return out
