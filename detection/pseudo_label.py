"""Pseudo-labelling with the baseline detector, and the policy that decides which images to keep.

Two pools go through the same code (`pseudo_label_pool`):

- synthetic images (`generate`): each was guided toward one `target` class. `required` = {target}
  when `require_target` (else nothing), `allowed` = every class: boxes of other classes are kept
  (the diffusion model may draw more litter than the class it was steered to).
- the real `tagged` pool (`selftrain`): the image-level tags are the consistency check.
  `required` = `allowed` = the tags: boxes of untagged classes are removed (the tags say the class
  is absent, so they are false positives) and the image is kept only if every tagged class still
  has a box. A clean-tagged image with no box left is a background image. The `unlabelled` images
  join this pool with nothing to check against: every class allowed, no class required, but at
  least one box (group `(unknown)`). One with no box is dropped, never kept as background: that
  the detector found nothing does not make an unknown image a clean road.

An image with no box left and nothing required is background; background images are capped so
they make up at most `max_background_fraction` of the kept images (a seeded random choice).

Test-time augmentation (`tta: true`): the detector also sees the horizontally flipped image; the
flipped boxes are mirrored back and both sets are merged with class-aware NMS at `iou` (a box
found in both views keeps the higher confidence).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image

from core.params import check_at_least
from detection.yolo import PredictSettings, load_model, predict
from scenes.boxes import Detections, pixels_to_labels
from scenes.prepared import read_rgb
from scenes.synthetic import read_generated

REASONS = ("kept", "kept_background", "missing_required", "background_cap")


@dataclass(frozen=True)
class PseudoLabelSettings:
    """params.yaml `pseudo_label` (both pools)."""

    predict: PredictSettings             # conf: boxes below it are discarded (after NMS); iou: NMS and TTA merge
    tta: bool                            # also predict on the horizontally flipped image
    require_target: bool                 # synthetic: keep an image only if a box of its target is found
    max_background_fraction: float       # at most this share of the kept images may have no box
    seed: int                            # which background images survive the cap

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_background_fraction < 1.0:
            raise ValueError(f"max_background_fraction: must be in [0, 1), got {self.max_background_fraction}")
        check_at_least(self, 0, "seed")


@dataclass(frozen=True)
class PoolImage:
    """One image to label: `group` names it in the report (synthetic target / tag set)."""

    image_id: str
    path: Path
    required: frozenset[int]
    allowed: frozenset[int] | None      # None: every class allowed
    group: str
    needs_a_box: bool = False           # True: kept only with a box (an unknown image is never background)


@dataclass(frozen=True)
class Decision:
    image: PoolImage
    detections: Detections
    reason: str                          # one of REASONS


def synthetic_pool(synthetic: Path | str, names: Sequence[str], require_target: bool) -> list[PoolImage]:
    """Synthetic images in the contract of scenes.synthetic (stage upsample's), grouped by target class."""
    frame = read_generated(synthetic, names)
    return [PoolImage(row.image_id, Path(row.abspath),
                      frozenset({names.index(row.target)}) if require_target else frozenset(), None, row.target)
            for row in frame.itertuples()]


def tagged_pool(frame: pd.DataFrame, names: Sequence[str]) -> list[PoolImage]:
    """The real `tagged` and `unlabelled` images (a `load_manifest` frame): a tagged image's tags are both
    required and the only allowed classes; an unlabelled one requires nothing and allows everything."""
    pool = []
    for row in frame.itertuples():
        if row.split == "unlabelled":
            pool.append(PoolImage(row.image_id, Path(row.abspath), frozenset(), None, "(unknown)", needs_a_box=True))
            continue
        tags = frozenset(names.index(t) for t in row.tags)
        pool.append(PoolImage(row.image_id, Path(row.abspath), tags, tags, ";".join(sorted(row.tags)) or "(clean)"))
    return pool


def predict_tta(model, images: Sequence[np.ndarray], settings: PredictSettings, imgsz: int,
                tta: bool) -> list[Detections]:
    """Predictions per image; with `tta` merged with those of the mirrored image (class-aware NMS)."""
    plain = predict(model, images, settings, imgsz)
    if not tta:
        return plain
    flipped = predict(model, [im[:, ::-1] for im in images], settings, imgsz)
    merged = []
    for image, a, b in zip(images, plain, flipped):
        width = image.shape[1]
        b_xyxy = b.xyxy.copy()
        b_xyxy[:, [0, 2]] = width - b.xyxy[:, [2, 0]]
        both = Detections(np.concatenate([a.xyxy, b_xyxy]), np.concatenate([a.conf, b.conf]),
                          np.concatenate([a.cls, b.cls]))
        keep = torchvision.ops.batched_nms(torch.from_numpy(both.xyxy), torch.from_numpy(both.conf),
                                           torch.from_numpy(both.cls), settings.iou).numpy()
        merged.append(both.select(keep))
    return merged


def decide(image: PoolImage, detections: Detections, conf: float) -> Decision:
    """Keep the boxes above `conf` of allowed classes; keep the image if every required class has a box
    (and, for an image that `needs_a_box`, if any box is left)."""
    keep = detections.conf >= conf
    if image.allowed is not None:
        keep &= np.isin(detections.cls, sorted(image.allowed))
    kept = detections.select(keep)
    present = set(kept.cls.tolist())
    if not image.required <= present or (image.needs_a_box and not present):
        return Decision(image, kept, "missing_required")
    return Decision(image, kept, "kept" if len(kept.cls) else "kept_background")


def cap_background(decisions: list[Decision], fraction: float, seed: int) -> list[Decision]:
    """Turn surplus background images into `background_cap` drops: background <= fraction * kept."""
    background = [i for i, d in enumerate(decisions) if d.reason == "kept_background"]
    n_boxed = sum(d.reason == "kept" for d in decisions)
    allowed = int(np.floor(fraction / (1.0 - fraction) * n_boxed + 1e-9))
    if len(background) <= allowed:
        return decisions
    chosen = set(random.Random(seed).sample(background, allowed))
    return [Decision(d.image, d.detections, "background_cap") if i in background and i not in chosen else d
            for i, d in enumerate(decisions)]


def pseudo_label_pool(model, pool: Sequence[PoolImage], images: Sequence[np.ndarray], settings: PseudoLabelSettings,
                      imgsz: int) -> list[Decision]:
    """Predict on the `images` of `pool` and apply the keep policy (module docstring)."""
    detections = predict_tta(model, images, settings.predict, imgsz, settings.tta)
    decisions = [decide(p, d, settings.predict.conf) for p, d in zip(pool, detections)]
    return cap_background(decisions, settings.max_background_fraction, settings.seed)


def write_layout(decisions: Sequence[Decision], images: Sequence[np.ndarray], out_dir: Path,
                 names: Sequence[str]) -> pd.DataFrame:
    """Save the kept `images` to `out_dir/images`, their labels to `out_dir/labels`, and a manifest."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for d, rgb in zip(decisions, images):
        if d.reason not in ("kept", "kept_background"):
            continue
        image_path = out_dir / "images" / f"{d.image.image_id}.png"
        Image.fromarray(rgb).save(image_path)
        height, width = rgb.shape[:2]
        (out_dir / "labels" / f"{d.image.image_id}.txt").write_text(pixels_to_labels(d.detections, width, height))
        rows.append({"image_id": d.image.image_id, "path": f"images/{d.image.image_id}.png",
                     "source_path": os.path.relpath(d.image.path),  # relative: the same bytes in any clone
                     "group": d.image.group, "n_boxes": len(d.detections.cls),
                     "classes": ";".join(sorted({names[c] for c in d.detections.cls.tolist()}))})
    manifest = pd.DataFrame(rows, columns=["image_id", "path", "source_path", "group", "n_boxes", "classes"])
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    return manifest


def report(decisions: Sequence[Decision], names: Sequence[str]) -> dict[str, Any]:
    """Per group (target class or tag set): images kept and dropped by reason, boxes kept per class."""
    groups: dict[str, dict[str, Any]] = {}
    for d in decisions:
        g = groups.setdefault(d.image.group, {"images": 0, **{r: 0 for r in REASONS},
                                              "boxes": {n: 0 for n in names}})
        g["images"] += 1
        g[d.reason] += 1
        if d.reason == "kept":
            for c in d.detections.cls.tolist():
                g["boxes"][names[c]] += 1
    total = {r: sum(g[r] for g in groups.values()) for r in ("images", *REASONS)}
    n_kept = total["kept"] + total["kept_background"]
    return {"total": {**total, "kept_fraction": n_kept / max(total["images"], 1)},
            "reasons": {"kept": "a box of every required class (and only allowed classes)",
                        "kept_background": "no box, nothing required; within the background cap",
                        "missing_required": "no box (above conf) of the target class / of some tagged class / "
                                            "at all (an unknown image)",
                        "background_cap": "no box, but over max_background_fraction of the kept images"},
            "per_group": dict(sorted(groups.items()))}


def run(pool: Sequence[PoolImage], weights: Path | str, settings: PseudoLabelSettings, imgsz: int,
        names: Sequence[str], out_dir: Path, size: int) -> dict[str, Any]:
    """Label `pool` with the detector at `weights`, write the kept images as a YOLO layout; the report.

    Every image is first brought to size x size, the prepared images' (`scenes.prepared.resample_rgb`;
    stage upsample already delivers the synthetic ones at that size). An empty pool (`split.mode:
    use_all_boxes` without an unlabelled folder) writes an empty layout: its variant adds nothing."""
    images = [read_rgb(p.path, size) for p in pool]
    decisions = pseudo_label_pool(load_model(weights), pool, images, settings, imgsz) if pool else []
    write_layout(decisions, images, out_dir, names)
    (out_dir / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    return report(decisions, names)
