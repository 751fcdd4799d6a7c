"""Realism judged by the task: what the real-only baseline detector makes of each synthetic source,
per class, and the quality gate that keeps a failing class out of the detector's training data.

Sources (`SOURCES`): the layouts under `paths.pseudo` that a variant adds to the real `train` images.

- `synthetic` (variant augmented): generated scenes, each guided toward one `target` class. They have
  no box of their own (their boxes are the baseline's pseudo-labels), so their object is the target
  and it counts as found when the detector boxes that class anywhere in the scene. Every guided
  scene is measured (<paths.upsampled>), not only those pseudo_label kept: that filter already
  required a target box, so the kept ones agree by construction.
- `inpaint` and `copypaste`: real canvases whose last `n_inserted` / `n_pasted` label lines are the
  synthetic objects (measured insertion boxes, pasted real cut-outs: the reference).

Figures per source and class, over every baseline seed (`yolo.seeds`), with the detector run as in
`pseudo_label.predict` (its confidence floor decides what "finds" means):

- agreement: share of (object, seed) pairs where the detector returns a box of the object's class
  with IoU >= `quality_gate.iou` against the object's box (scenes: any box of the target class).
- box IoU: median over (object, seed) pairs of the IoU between the object's box and the detector's
  best-overlapping box of its class, among pairs where that IoU > 0 (the detector saw the object
  somewhere near it): how tight a measured box is against what the detector calls the object.
- crop FD (the stage adds it): Frechet distance between crops of real boxes and of synthetic boxes
  of the class (`object_crop`; the scenes: their pseudo-label boxes), in the generative-metrics
  feature space.

The gate: a class passes a source when its agreement >= `quality_gate.min_agreement`; the images
that hold an object of a failing class leave that source's training images (`gated_out`). The gate
reads only the baseline and the synthetic images; the test split plays no part.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from core.errors import StageError
from core.tables import read_table
from scenes.boxes import Detections, read_labels_px
from scenes.prepared import load_manifest, read_rgb, resample_rgb

# source folder under paths.pseudo -> (variant it feeds, manifest column counting its synthetic label lines
# (None: every line), the stage that writes it).
SOURCES = {"synthetic": ("augmented", None, "pseudo_label"), "inpaint": ("inpaint", "n_inserted", "inpaint"),
           "copypaste": ("copypaste", "n_pasted", "copypaste")}
GATE_DIR = "gate"  # under paths.pseudo: <source>.json each, so one source's decision retrains only its variant


@dataclass(frozen=True)
class QualityGateSettings:
    """params.yaml `quality_gate`."""

    min_agreement: float      # a class below this share of detector-found objects is not trained on
    iou: float                # an object is found by a box of its class with at least this IoU

    def __post_init__(self) -> None:
        for key in ("min_agreement", "iou"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key}: must be in [0, 1], got {getattr(self, key)}")


@dataclass(frozen=True)
class SyntheticObject:
    image: Path
    name: str                 # the image's file stem in its layout
    cls: int
    xyxy: tuple[float, float, float, float] | None  # px; None: a generated scene's target (no box of its own)


# ---- the objects of each source

def scene_objects(generated: pd.DataFrame, names: Sequence[str]) -> list[SyntheticObject]:
    """One boxless object per generated scene (`abspath`, `image_id`, `target` columns)."""
    return [SyntheticObject(Path(row.abspath), row.image_id, names.index(row.target), None)
            for row in generated.itertuples()]


def layout_objects(layout: Path, count_column: str | None, made_by: str) -> list[SyntheticObject]:
    """The synthetic objects of a layout that stage `made_by` wrote: the last `count_column` label lines of
    each image (None: every line, as in the pseudo-labelled generated scenes)."""
    manifest = layout / "manifest.csv"
    frame = read_table(manifest, ("image_id", "path", *filter(None, [count_column])), made_by=made_by,
                       text_columns=("image_id", "path"))
    objects = []
    for row in frame.itertuples():
        image = layout / row.path
        height, width = read_rgb(image).shape[:2]
        xyxy, cls = read_labels_px(image, width, height)
        count = len(cls) if count_column is None else getattr(row, count_column)
        if count > len(cls):
            raise StageError(f"{manifest}: image {row.image_id}: {count_column} {count} exceeds its "
                             f"{len(cls)} label lines")
        for box, c in zip(xyxy[len(cls) - count:], cls[len(cls) - count:].tolist()):
            objects.append(SyntheticObject(image, Path(row.path).stem, c, tuple(float(v) for v in box)))
    return objects


# ---- what the detector makes of them

def box_ious(box: Sequence[float], others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of others [n, 4] (torchvision's, in float64)."""
    # train_yolo reads the gate through this module and must not load torch before its thread count is set.
    import torch
    import torchvision

    if not len(others):
        return np.zeros(0)
    one = torch.as_tensor([list(box)], dtype=torch.float64)
    return torchvision.ops.box_iou(one, torch.as_tensor(np.asarray(others), dtype=torch.float64))[0].numpy()


def best_iou(obj: SyntheticObject, detections: Detections) -> float:
    """The object's best IoU with a detection of its class (a boxless object: 1 if there is any, else 0)."""
    same = detections.xyxy[detections.cls == obj.cls]
    if obj.xyxy is None:
        return 1.0 if len(same) else 0.0
    ious = box_ious(obj.xyxy, same)
    return float(ious.max()) if len(ious) else 0.0


def class_figures(objects: Sequence[SyntheticObject], ious: np.ndarray, names: Sequence[str],
                  iou_threshold: float) -> dict[str, dict[str, Any]]:
    """Per class: objects, agreement and median box IoU from `ious` [seeds, objects] (`best_iou`)."""
    cls = np.array([o.cls for o in objects], np.int64)
    boxed = np.array([o.xyxy is not None for o in objects], bool)
    out = {}
    for c, name in enumerate(names):
        mine = ious[:, cls == c]
        near = mine[:, boxed[cls == c]]
        near = near[near > 0]
        out[name] = {"objects": int((cls == c).sum()),
                     "agreement": round(float((mine >= iou_threshold).mean()), 4) if mine.size else None,
                     "box_iou": round(float(np.median(near)), 4) if near.size else None}
    return out


def gate(figures: Mapping[str, Mapping[str, Any]], min_agreement: float) -> dict[str, bool | None]:
    """class -> passed (agreement >= min_agreement), None where the source has no object of it."""
    return {name: None if f["agreement"] is None else f["agreement"] >= min_agreement for name, f in figures.items()}


def gated_out(objects: Sequence[SyntheticObject], passed: Mapping[str, bool | None], names: Sequence[str]) -> list[str]:
    """Names of the images holding an object of a class that failed the gate, sorted."""
    return sorted({o.name for o in objects if passed[names[o.cls]] is False})


def gate_file(pseudo_root: Path | str, source: str) -> Path:
    """Where stage realism writes the gate's decision for `source`."""
    return Path(pseudo_root) / GATE_DIR / f"{source}.json"


def gate_left_out(pseudo_root: Path | str, source: str) -> set[str]:
    """The images of `source` that the gate (stage realism) leaves out of training."""
    path = gate_file(pseudo_root, source)
    if not path.is_file():
        raise StageError(f"{path}: not found; run the realism stage first")
    try:
        return set(json.loads(path.read_text())["gated_out"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StageError(f"{path}: no list of gated-out images ({type(err).__name__}: {err}); "
                         "rerun the realism stage") from None


# ---- crops for the per-class FD

def split_boxes(prepared: Path | str, split: str) -> list[tuple[str, np.ndarray, int]]:
    """(image path, xyxy px, class) of every box of a boxed split of `prepared`, in manifest order."""
    boxes = []
    for row in load_manifest(prepared, (split,)).itertuples():
        xyxy, cls = read_labels_px(row.abspath, row.width, row.height)
        boxes += [(row.abspath, box, c) for box, c in zip(xyxy, cls.tolist())]
    return boxes


def object_crops(boxes: Sequence[tuple], n_classes: int, px: int) -> list[list[np.ndarray]]:
    """Per class, `object_crop` at px x px of each (image path, xyxy, cls), every image read once."""
    out: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    images: dict = {}
    for path, xyxy, c in boxes:
        if path not in images:
            images[path] = read_rgb(path)
        out[c].append(object_crop(images[path], xyxy, px))
    return out

def object_crop(rgb: np.ndarray, xyxy: Sequence[float], px: int) -> np.ndarray:
    """uint8 [px, px, 3]: the square of side max(w, h) centred on the box (moved inside the image, at most
    the image), area-resampled to px: every crop shows its object at the same scale relative to the crop."""
    height, width = rgb.shape[:2]
    side = min(max(1, math.ceil(max(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]))), width, height)
    x0 = int(min(max(round((xyxy[0] + xyxy[2]) / 2 - side / 2), 0), width - side))
    y0 = int(min(max(round((xyxy[1] + xyxy[3]) / 2 - side / 2), 0), height - side))
    return resample_rgb(np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side]), px)


def realism_line(source: str, figures: Mapping[str, Mapping[str, Any]], passed: Mapping[str, bool | None]) -> str:
    """One printed line per source: agreement per class and the classes the gate keeps out."""
    parts = [f"{name} {f['agreement']:.2f}" for name, f in figures.items() if f["agreement"] is not None]
    failed = [name for name, ok in passed.items() if ok is False]
    return (f"realism {source}: detector agreement {', '.join(parts) or 'no objects'}; "
            f"gated out: {', '.join(failed) or 'none'}")
