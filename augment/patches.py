"""Crops at the detector's scale for the patch models (`patch_unet`, `patch_classifier`, `patch_judge`).

The scene models see whole images area-downsampled to their `image_size` (4x on the demo, so a
cigarette butt is 3-4 px). The patch models see fixed-size crops of `crops.px` cut from the prepared
(detector-resolution) images and resampled to `image_size` (64 -> 32 px on the demo: 2x), the
patch view of SinDiffusion: a convolutional denoiser that only ever sees a window. `inpaint`
(augment.inpaint) edits windows of the same size in real images with these models.

Which images: those whose every box is known, i.e. the boxed splits asked for and, among `tagged`
images, the clean ones (no tags). A `tagged` image with litter has no boxes to centre on or to
label a crop with, so it is never cut.

Small objects at their own scale (`crops.small_px`): a 64-px crop downsampled to 32 leaves a 12-px
cigarette butt 6 px wide and every inserted object soft. With `small_px` set (32 on the demo, the
models' own size: no resampling at all), a box whose longer side is at most half of it is cut in a
crop of that side instead, and half of the random crops are too, so the models learn road and
small litter at the detector's own resolution beside the larger litter at `px`; `inpaint` then
renders such objects in windows of that side (`augment.inpaint`).

The crop set is drawn once, from one generator seeded (crops.seed, the splits):
- `litter_share` of the crops are centred on a box, its class drawn uniformly among the classes
  that have boxes (so the rare classes are seen as often as the common ones), the box uniformly
  among that class's, the crop's side `small_px` when the box fits half of it, else `px`, the
  centre moved by up to +-jitter * side in x and y;
- the rest are uniform random crops of a uniformly drawn image (road, and whatever litter they
  hit), of side `px` or, with `small_px`, either side with equal chance;
- every crop lies wholly inside its image. Its labels are the classes of the boxes that have at
  least `min_inside` of their area inside it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from augment.data import ImageSet, load_image_set
from core.errors import StageError
from core.params import check_at_least
from scenes.canvases import canvases
from scenes.prepared import class_names, resample_rgb


@dataclass(frozen=True)
class CropSettings:
    """The `crops` mapping of the patch model sections (`patch_unet`, `patch_classifier`, `patch_judge`)."""

    px: int                  # crop side in px of the prepared images; resampled to the section's image_size
    small_px: int | None     # also crops of this side, for boxes of at most half of it (None: px only)
    litter_share: float      # share of the crops centred on a box
    jitter: float            # box-centred crops: centre moved by up to +-jitter * px
    min_inside: float        # a crop is labelled with a box's class when this share of the box is inside
    count: int               # crops drawn (once, kept in memory)
    seed: int

    def __post_init__(self) -> None:
        check_at_least(self, 1, "px", "count")
        if self.small_px is not None and not 1 <= self.small_px < self.px:
            raise ValueError(f"small_px: must be null or in [1, px = {self.px}), got {self.small_px}")
        check_at_least(self, 0, "jitter", "seed")
        for name in ("litter_share", "min_inside"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


def inside_share(xyxy: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Per box [n, 4]: the share of its area inside the xyxy `window`."""
    ix = np.clip(np.minimum(xyxy[:, 2], window[2]) - np.maximum(xyxy[:, 0], window[0]), 0, None)
    iy = np.clip(np.minimum(xyxy[:, 3], window[3]) - np.maximum(xyxy[:, 1], window[1]), 0, None)
    area = np.maximum((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]), 1e-9)
    return ix * iy / area


def crop_origin(centre: float, px: int, extent: int) -> int:
    """The crop's first px along one axis: centred on `centre`, moved to lie inside [0, extent)."""
    return int(min(max(round(centre - px / 2), 0), extent - px))


def crop_sides(crops: CropSettings) -> list[int]:
    """The crop sides in use, smallest first."""
    return [crops.px] if crops.small_px is None else [crops.small_px, crops.px]


def window_side(object_px: float, small_limit: float, crops: CropSettings) -> int:
    """`small_px` for an object whose longer side is at most `small_limit` px, else `px`."""
    return crops.small_px if crops.small_px is not None and object_px <= small_limit else crops.px


def load_crop_set(prepared: Path | str, splits: Sequence[str], size: int, crops: CropSettings) -> ImageSet:
    """`crops.count` crops of the fully boxed images of `splits` (module docstring), resampled to `size`."""
    names = class_names(prepared)
    sources = canvases(prepared, splits)
    if not sources:
        raise StageError(f"{Path(prepared) / 'manifest.csv'}: no image of split(s) {', '.join(splits)} has all its "
                         "boxes known (boxed, or tagged without tags); the patch models have nothing to crop")
    small = next((s for s in sources if min(s.rgb.shape[:2]) < crops.px), None)
    if small is not None:
        raise StageError(f"params.yaml: crops.px {crops.px} exceeds image {small.image_id} "
                         f"({small.rgb.shape[1]}x{small.rgb.shape[0]} px)")
    for side in crop_sides(crops):
        if side < size or side % size:
            raise StageError(f"params.yaml: crops side {side} must be a multiple of image_size {size} (crops are "
                             "only downsampled, by a whole factor)")
    by_class: dict[int, list[tuple[int, int]]] = {}
    for i, source in enumerate(sources):
        for j, c in enumerate(source.cls.tolist()):
            by_class.setdefault(c, []).append((i, j))
    rng = np.random.default_rng([crops.seed, zlib.crc32(",".join(splits).encode())])
    n_litter = round(crops.count * crops.litter_share) if by_class else 0
    classes = sorted(by_class)
    arrays, targets, ids = [], [], []
    for k in range(crops.count):
        if k < n_litter:
            c = classes[int(rng.integers(len(classes)))]
            i, j = by_class[c][int(rng.integers(len(by_class[c])))]
            box = sources[i].xyxy[j]
            side = window_side(max(box[2] - box[0], box[3] - box[1]), (crops.small_px or 0) / 2, crops)
            dx, dy = rng.uniform(-crops.jitter, crops.jitter, size=2) * side
            cx, cy = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
        else:
            i = int(rng.integers(len(sources)))
            height, width = sources[i].rgb.shape[:2]
            side = crops.px if crops.small_px is None else crop_sides(crops)[int(rng.integers(2))]
            cx = rng.integers(width - side + 1) + side / 2
            cy = rng.integers(height - side + 1) + side / 2
        source = sources[i]
        height, width = source.rgb.shape[:2]
        x0, y0 = crop_origin(cx, side, width), crop_origin(cy, side, height)
        window = (x0, y0, x0 + side, y0 + side)
        present = source.cls[inside_share(source.xyxy, window) >= crops.min_inside] if len(source.cls) else []
        target = np.zeros(len(names), np.float32)
        target[np.asarray(present, np.int64)] = 1.0
        arrays.append(resample_rgb(source.rgb[y0:y0 + side, x0:x0 + side], size))
        targets.append(target)
        ids.append(f"{source.image_id}@{x0},{y0}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.from_numpy(np.stack(targets)), tuple(names), tuple(ids))


def load_training_set(prepared: Path | str, splits: Sequence[str], cfg) -> ImageSet:
    """What a generative model section trains (or is evaluated) on: crops when it has `crops`, else whole
    images at its image_size."""
    crops = getattr(cfg, "crops", None)
    if crops is None:
        return load_image_set(prepared, tuple(splits), cfg.image_size)
    return load_crop_set(prepared, splits, cfg.image_size, crops)
