"""Preflight of object sizes: are the boxes, at the detector's resolution, large enough to learn?

Per class, the shorter side of every box in px at `dataset.image_size` (what the detector sees;
a thin cigarette butt is limited by its width, not its area): median and 10th percentile, and the
median at the source images' own resolution. A class whose median is under `small_box_px` gets a
warning with the image size that would bring the median to it (a multiple of 32, as
`yolo.train.imgsz` must be), or, when even the source resolution is too coarse, the statement
that no image size fixes it. The generative models see the same boxes smaller still
(`unet.image_size` / `dataset.image_size`; the patch models `crops.px` / `image_size` of theirs).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DETECTOR_STRIDE = 32  # yolo.train.imgsz must be a multiple of it


def box_sizes(short_sides_px: Sequence[float], source_short_sides_px: Sequence[float]) -> dict:
    """Median and 10th percentile of the shorter sides at image_size, median at source resolution."""
    if not len(short_sides_px):
        return {"boxes": 0, "median_px": None, "p10_px": None, "source_median_px": None}
    sides = np.asarray(short_sides_px, np.float64)
    return {"boxes": int(sides.size), "median_px": round(float(np.median(sides)), 2),
            "p10_px": round(float(np.percentile(sides, 10)), 2),
            "source_median_px": round(float(np.median(np.asarray(source_short_sides_px, np.float64))), 2)}


def size_warning(name: str, sizes: dict, image_size: int, small_box_px: float) -> str | None:
    """One line when the class's median box is under `small_box_px` at `image_size`; None otherwise."""
    median = sizes["median_px"]
    if median is None or median >= small_box_px:
        return None
    line = (f"class {name}: median box {median:g} px (shorter side, 10th percentile {sizes['p10_px']:g}) at "
            f"image_size {image_size}, under {small_box_px:g} px, too small for the detector to learn")
    if sizes["source_median_px"] < small_box_px:
        return (f"{line}; even at the source images' own resolution the median is {sizes['source_median_px']:g} px, "
                "so no image_size fixes it (crop the images around the objects, or drop the class)")
    needed = DETECTOR_STRIDE * math.ceil(image_size * small_box_px / median / DETECTOR_STRIDE)
    fixed = median * needed / image_size
    return f"{line}; dataset.image_size and yolo.train.imgsz {needed} would make it {fixed:.1f} px"


def preflight(short_sides: dict[str, list[float]], source_short_sides: dict[str, list[float]], image_size: int,
              small_box_px: float) -> dict:
    """The `preflight` entry of reports/import.json: sizes per class (in class order) and the warnings."""
    per_class = {name: box_sizes(sides, source_short_sides[name]) for name, sides in short_sides.items()}
    warnings = [w for name, sizes in per_class.items() if (w := size_warning(name, sizes, image_size, small_box_px))]
    return {"image_size": image_size, "small_box_px": small_box_px, "measure": "shorter box side in px",
            "per_class": per_class, "warnings": warnings}
