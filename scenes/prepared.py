"""Read the prepared-dataset contract that `import` writes (DESIGN.md, "Splits").

    data/prepared/
      data.yaml                      class names (index -> name), split folders, image_size (px)
      manifest.csv                   image_id, split, path, width, height, source, tags, n_boxes
      images/{split}/{image_id}.png  RGB, image_size x image_size, every split
      labels/{split}/{image_id}.txt  YOLO `cls cx cy w h` (normalised); train, val, test only
      masks/{split}/{image_id}.png   instance map, 8-bit (16-bit past 255 boxes) grey, image_size square;
                                     train, val, test, only images with a mask pixel

Splits: `train`, `val`, `test` (boxed), `tagged` (image-level tags known, no boxes: the boxed
images whose boxes the benchmark withholds, and the unlabelled pool's tagged or clean images) and
`unlabelled` (pool images whose content is unknown). `tags` is the ';'-joined class names present
in the image: '' is a clean road in every split but `unlabelled`, where it means unknown. `n_boxes`
counts the source boxes kept, also for `tagged` images whose boxes are withheld.

Instance map: 0 is background, k the instance of the k-th line (1-based) of the image's label
file; a box whose source has no mask (YOLO, VOC, a compressed COCO RLE) or whose mask covers no
output pixel by half or more has no pixel there, and an image without any has no map
(`read_instance_masks` -> None). Masks come from COCO / TACO segmentation and the demo's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from core.errors import StageError
from core.tables import read_table

SPLITS = ("train", "tagged", "val", "test", "unlabelled")
BOXED_SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("image_id", "split", "path", "width", "height", "source", "tags", "n_boxes")


def read_data_yaml(prepared: Path | str) -> tuple[Path, dict]:
    """(path, content) of the prepared data's data.yaml; missing is one StageError line."""
    data_yaml = Path(prepared) / "data.yaml"
    if not data_yaml.is_file():
        raise StageError(f"{data_yaml}: not found; run the import stage first")
    return data_yaml, yaml.safe_load(data_yaml.read_text())


def class_names(prepared: Path | str) -> list[str]:
    names = read_data_yaml(prepared)[1]["names"]
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


def read_rgb(path: Path | str, size: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] of an image file, resampled to size x size when `size` is given (`resample_rgb`);
    missing or unreadable is one StageError line."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except OSError as err:
        raise StageError(f"{path}: unreadable image ({err})") from None
    return rgb if size is None else resample_rgb(rgb, size)


def resample_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """A square image at size x size: box filter (area average) when shrinking, bicubic when enlarging,
    unchanged at its own size. The generative models read the prepared images through this at their
    own resolution, and their images reach the detector through it at the prepared one."""
    height, width = rgb.shape[:2]
    if height != width:
        raise StageError(f"resample: expected a square image, got {width}x{height}")
    if width == size:
        return rgb
    image = Image.fromarray(rgb)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX if size < width else Image.Resampling.BICUBIC))


def image_size(prepared: Path | str) -> int:
    """The side in px of every prepared image (data.yaml `image_size`), the detector's resolution."""
    data_yaml, data = read_data_yaml(prepared)
    size = data.get("image_size")
    if not isinstance(size, int) or size < 1:
        raise StageError(f"{data_yaml}: image_size: expected a positive integer, got {size!r}; rerun the import stage")
    return size


def sibling_path(image_path: Path | str, folder: str, suffix: str) -> Path:
    """`image_path` with its last `images` folder replaced by `folder` and its suffix by `suffix`."""
    parts = list(Path(image_path).parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = folder
    return Path(*parts).with_suffix(suffix)


def label_path(image_path: Path | str) -> Path:
    """The YOLO label file of an image under the images/ -> labels/ convention ultralytics uses."""
    return sibling_path(image_path, "labels", ".txt")


def mask_path(image_path: Path | str) -> Path:
    """The instance map of a prepared image: images/{split}/x.png -> masks/{split}/x.png."""
    return sibling_path(image_path, "masks", ".png")


def read_instance_masks(image_path: Path | str) -> np.ndarray | None:
    """int64 [H, W] instance map of an image (0 background, k the k-th label line); None when it has none."""
    path = mask_path(image_path)
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            instances = np.asarray(image).astype(np.int64)
    except OSError as err:
        raise StageError(f"{path}: unreadable instance map ({err})") from None
    if instances.ndim != 2:
        raise StageError(f"{path}: an instance map must be a single-channel image, got shape {instances.shape}")
    return instances


def read_yolo_labels(path: Path | str) -> np.ndarray:
    """float32 [n, 5] rows of (cls, cx, cy, w, h); [0, 5] for a missing or empty file."""
    path = Path(path)
    if not path.is_file() or not path.read_text().strip():
        return np.zeros((0, 5), dtype=np.float32)
    return np.loadtxt(path, dtype=np.float32, ndmin=2)
