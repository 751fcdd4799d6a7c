"""Crops at the detector's scale for the patch models (`patch_unet`, `patch_classifier`, `patch_judge`).

The scene models see whole images area-downsampled to their `image_size` (4x on the demo, so a
cigarette butt is 3-4 px). The patch models see fixed-size crops of `crops.px` cut from the prepared
(detector-resolution) images and resampled to `image_size` (64 -> 32 px on the demo: 2x), the
patch view of SinDiffusion: a convolutional denoiser that only ever sees a window. `inpaint`
(augment.insert) edits windows of the same size in real images with these models.

Which images: those whose every box is known, i.e. the boxed splits asked for and, among `tagged`
images, the clean ones (no tags). A `tagged` image with litter has no boxes to centre on or to
label a crop with, so it is never cut.

The crop set is drawn once, from one generator seeded (crops.seed, the splits):
- `litter_share` of the crops are centred on a box, its class drawn uniformly among the classes
  that have boxes (so the rare classes are seen as often as the common ones), the box uniformly
  among that class's, the centre moved by up to +-jitter * px in x and y;
- the rest are uniform random crops of a uniformly drawn image (road, and whatever litter they hit);
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
from detection.canvases import canvases
from detection.prepared import class_names, resample_rgb


@dataclass(frozen=True)
class CropSettings:
    """The `crops` mapping of the patch model sections (`patch_unet`, `patch_classifier`, `patch_judge`)."""

    px: int                  # crop side in px of the prepared images; resampled to the section's image_size
    litter_share: float      # share of the crops centred on a box
    jitter: float            # box-centred crops: centre moved by up to +-jitter * px
    min_inside: float        # a crop is labelled with a box's class when this share of the box is inside
    count: int               # crops drawn (once, kept in memory)
    seed: int

    def __post_init__(self) -> None:
        check_at_least(self, 1, "px", "count")
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
    if size > crops.px:
        raise StageError(f"params.yaml: image_size {size} exceeds crops.px {crops.px}; crops are only downsampled")
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
            dx, dy = rng.uniform(-crops.jitter, crops.jitter, size=2) * crops.px
            cx, cy = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
        else:
            i = int(rng.integers(len(sources)))
            height, width = sources[i].rgb.shape[:2]
            cx = rng.integers(width - crops.px + 1) + crops.px / 2
            cy = rng.integers(height - crops.px + 1) + crops.px / 2
        source = sources[i]
        height, width = source.rgb.shape[:2]
        x0, y0 = crop_origin(cx, crops.px, width), crop_origin(cy, crops.px, height)
        window = (x0, y0, x0 + crops.px, y0 + crops.px)
        present = source.cls[inside_share(source.xyxy, window) >= crops.min_inside] if len(source.cls) else []
        target = np.zeros(len(names), np.float32)
        target[np.asarray(present, np.int64)] = 1.0
        arrays.append(resample_rgb(source.rgb[y0:y0 + crops.px, x0:x0 + crops.px], size))
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
