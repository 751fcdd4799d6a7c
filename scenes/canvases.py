"""Prepared images whose every box is known: the images of the boxed splits, and the clean (untagged)
`tagged` images. Copy-paste and inpainting put litter into them (`train` and clean ones; never `val`
or `test`); the patch models cut their crops from them (augment.patches). An `unlabelled` image is
never one: its content is unknown, not clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from scenes.boxes import read_labels_px
from scenes.prepared import BOXED_SPLITS, label_path, load_manifest, read_rgb


@dataclass(frozen=True)
class Canvas:
    image_id: str
    path: Path
    kind: str                 # its split (train, val, test) | clean
    rgb: np.ndarray           # uint8 [H, W, 3]
    xyxy: np.ndarray          # float32 [n, 4] its known boxes in px
    cls: np.ndarray           # int64 [n]
    label_text: str           # its label file, newline-terminated ('' for a clean image)


def canvases(prepared: Path | str, splits: Sequence[str] = ("train", "tagged")) -> list[Canvas]:
    """The fully boxed images of `splits` (boxed splits whole, `tagged` only its clean images), in manifest order."""
    out = []
    for row in load_manifest(prepared, tuple(splits)).itertuples():
        boxed = row.split in BOXED_SPLITS
        if not boxed and (row.split != "tagged" or row.tags):
            continue
        rgb = read_rgb(row.abspath)
        xyxy, cls, text = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), ""
        if boxed:
            xyxy, cls = read_labels_px(row.abspath, rgb.shape[1], rgb.shape[0])
            text = label_path(row.abspath).read_text().rstrip("\n") + "\n" if len(cls) else ""
        out.append(Canvas(row.image_id, Path(row.abspath), row.split if boxed else "clean", rgb, xyxy, cls, text))
    return out
