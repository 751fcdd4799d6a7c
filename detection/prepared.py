"""Read the prepared-dataset contract that `import` writes (DESIGN.md, "Splits").

    data/prepared/
      data.yaml                      class names (index -> name), split folders
      manifest.csv                   image_id, split, path, width, height, source, tags, n_boxes
      images/{split}/{image_id}.png  RGB, image_size x image_size, every split
      labels/{split}/{image_id}.txt  YOLO `cls cx cy w h` (normalised); train, val, test only

`tags` is the ';'-joined class names present in the image ('' for a clean road); `n_boxes`
counts the source boxes kept, also for `tagged` images whose boxes are withheld.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from core.errors import StageError
from core.tables import read_table

SPLITS = ("train", "tagged", "val", "test")
BOXED_SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("image_id", "split", "path", "width", "height", "source", "tags", "n_boxes")


def class_names(prepared: Path | str) -> list[str]:
    data_yaml = Path(prepared) / "data.yaml"
    if not data_yaml.is_file():
        raise StageError(f"{data_yaml}: not found; run the import stage first")
    names = yaml.safe_load(data_yaml.read_text())["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def load_manifest(prepared: Path | str, splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """The manifest rows of `splits`, with `tags` as a tuple of class names and `abspath` added."""
    prepared = Path(prepared)
    frame = read_table(prepared / "manifest.csv", MANIFEST_COLUMNS, made_by="import", text_columns=("image_id", "tags"))
    frame = frame[frame["split"].isin(splits)].reset_index(drop=True)
    frame["tags"] = frame["tags"].map(lambda s: tuple(t for t in s.split(";") if t))
    frame["abspath"] = frame["path"].map(lambda p: str((prepared / p).resolve()))
    return frame


def multi_hot(tags: tuple[str, ...], names: list[str]) -> np.ndarray:
    """float32 [n_classes] with 1 where the class is tagged."""
    target = np.zeros(len(names), dtype=np.float32)
    for tag in tags:
        target[names.index(tag)] = 1.0
    return target


def read_rgb(path: Path | str) -> np.ndarray:
    """uint8 [H, W, 3] of an image file; missing or unreadable is one StageError line."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise StageError(f"{path}: unreadable image ({err})") from None


def label_path(image_path: Path | str) -> Path:
    """The YOLO label file of an image under the images/ -> labels/ convention ultralytics uses."""
    image_path = Path(image_path)
    parts = list(image_path.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_yolo_labels(path: Path | str) -> np.ndarray:
    """float32 [n, 5] rows of (cls, cx, cy, w, h); [0, 5] for a missing or empty file."""
    path = Path(path)
    if not path.is_file() or not path.read_text().strip():
        return np.zeros((0, 5), dtype=np.float32)
    return np.loadtxt(path, dtype=np.float32, ndmin=2)
