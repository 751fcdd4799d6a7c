"""The copy-paste control (Ghiasi et al. 2021, "Simple Copy-Paste"; Dwibedi et al. 2017, "Cut,
Paste and Learn"): real litter pasted into real road images at the places and counts of the
insertions (`augment.inpaint`, stage inpaint), so the two compare like for like: the bar an inserted
object has to reach is a real one cut out and pasted where it was inserted.

- Plan: image i of the inpaint layout (`<paths.pseudo>/inpaint`) gives copy-paste image i (the same
  name) its canvas and, per inserted object (its last `n_inserted` label lines), a class and a
  place: the same number of images, objects per image and objects per class.
- Canvases: the inpaint image's own canvas, a `train` image (boxes from its label file) or a clean
  `tagged` one (no tags, so no litter). `val` and `test` images are never read, as canvas or source.
- Sources: the `train` boxes. Where the prepared data have an instance map
  (`scenes.prepared.read_instance_masks`), the instance's pixels are pasted with alpha 1 (the
  paper's hard masks: form `mask`); otherwise, as in most exports (YOLO, Roboflow: boxes only), the
  box crop, with an alpha that falls linearly from 1 to 0 over `feather_px` towards the crop's edge,
  measured from each pixel's centre, so every crop pixel keeps alpha > 0 (form `box`). A box crop
  also carries the road inside the box.
- Placement: the object centred on the inserted box's centre (moved inside the canvas), else at a
  random integer offset wholly inside the canvas, in `placement_tries` draws; its box has zero
  intersection with every known box of the canvas and every box pasted before it. That box is the
  extent of the object's pixels with alpha > 0: exact. An object with no free place is reported as
  unplaced. Objects are not scaled or flipped.
- Determinism: image i draws from its own generator, seeded (seed, i).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from core.errors import StageError
from core.params import check_at_least
from core.tables import read_table
from scenes.boxes import Detections, disjoint, labels_to_pixels, pixels_to_labels, read_labels_px
from scenes.canvases import Canvas, canvases
from scenes.figures import draw_boxes, image_grid
from scenes.prepared import load_manifest, read_instance_masks, read_rgb, read_yolo_labels

MANIFEST = ("image_id", "path", "source_path", "group", "n_boxes", "classes", "n_pasted", "pasted")


@dataclass(frozen=True)
class CopyPasteSettings:
    """params.yaml `copypaste`."""

    seed: int                 # image i draws canvas, sources and offsets from a generator seeded (seed, i)
    feather_px: float         # box crops (no mask): alpha ramp width at the crop's edge; 0 = hard edge
    placement_tries: int      # random offsets per object on one canvas
    grid_images: int          # report: pasted examples shown
    grid_scale: int           # report: nearest-neighbour upscale of the examples

    def __post_init__(self) -> None:
        check_at_least(self, 0, "seed", "feather_px")
        check_at_least(self, 1, "placement_tries", "grid_images", "grid_scale")


@dataclass(frozen=True)
class Instance:
    """A pasteable object cut to its pixel box: `alpha > 0` reaches every edge of the crop."""

    source: str               # <train image_id>#<label line, 1-based>
    cls: int
    rgb: np.ndarray           # uint8 [h, w, 3]
    alpha: np.ndarray         # float32 [h, w]: > 0 on the object, 0 off it
    from_mask: bool


@dataclass(frozen=True)
class Pasted:
    instance: Instance
    x: int
    y: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        height, width = self.instance.alpha.shape
        return self.x, self.y, self.x + width, self.y + height


@dataclass(frozen=True)
class PastedImage:
    image_id: str             # the name of the inpaint image it mirrors
    canvas: Canvas
    pasted: tuple[Pasted, ...]
    unplaced: tuple[int, ...]  # classes that found no free place
    no_source: tuple[int, ...]  # classes without a single train instance


# ---- inputs: the inpaint plan, canvases, source instances

@dataclass(frozen=True)
class Mirrored:
    """An image of the inpaint layout: its name, its canvas's file and its inserted objects."""

    name: str
    canvas: Path
    objects: tuple[tuple[int, tuple[float, float, float, float]], ...]  # (class, xyxy px)


def plan(layout: Path, n_classes: int) -> list[Mirrored]:
    """Every image of the inpaint layout `layout` with the class and box of each inserted object."""
    frame = read_table(layout / "manifest.csv", ("image_id", "path", "source_path", "n_inserted"), made_by="inpaint",
                       text_columns=("image_id", "path", "source_path"))
    out = []
    for row in frame.itertuples():
        image = layout / row.path
        labels_file = layout / "labels" / f"{Path(row.path).stem}.txt"
        labels = read_yolo_labels(labels_file)
        if not 0 <= row.n_inserted <= len(labels):
            raise StageError(f"{layout / 'manifest.csv'}: image {row.image_id}: n_inserted {row.n_inserted} is not "
                             f"within its {len(labels)} label lines; rerun the inpaint stage")
        height, width = read_rgb(image).shape[:2]
        xyxy, cls = labels_to_pixels(labels[len(labels) - row.n_inserted:], width, height)
        if any(c < 0 or c >= n_classes for c in cls.tolist()):
            raise StageError(f"{labels_file}: class index out of range 0..{n_classes - 1}: {sorted(set(cls.tolist()))}")
        objects = tuple((c, tuple(float(v) for v in box)) for c, box in zip(cls.tolist(), xyxy))
        out.append(Mirrored(Path(row.path).stem, Path(row.source_path), objects))
    return out


def feather_alpha(height: int, width: int, feather_px: float) -> np.ndarray:
    """float32 [h, w]: 1 inside, falling linearly to 0 at the crop's edge over feather_px (> 0 everywhere)."""
    if feather_px == 0:
        return np.ones((height, width), np.float32)
    rows = np.minimum(np.arange(height) + 0.5, height - np.arange(height) - 0.5)
    cols = np.minimum(np.arange(width) + 0.5, width - np.arange(width) - 0.5)
    return np.minimum(1.0, np.minimum.outer(rows, cols) / feather_px).astype(np.float32)


def box_instance(rgb: np.ndarray, box: np.ndarray, cls: int, source: str, feather_px: float) -> Instance:
    """The box crop (edges rounded to whole px, at least one px) with a feathered alpha."""
    height, width = rgb.shape[:2]
    x0 = min(max(math.floor(box[0] + 0.5), 0), width - 1)
    y0 = min(max(math.floor(box[1] + 0.5), 0), height - 1)
    x1 = min(max(math.floor(box[2] + 0.5), x0 + 1), width)
    y1 = min(max(math.floor(box[3] + 0.5), y0 + 1), height)
    return Instance(source, cls, rgb[y0:y1, x0:x1].copy(), feather_alpha(y1 - y0, x1 - x0, feather_px), False)


def mask_instance(rgb: np.ndarray, instances: np.ndarray, line: int, cls: int, source: str) -> Instance | None:
    """The pixels of instance `line` cut to their extent, alpha 1 on them; None when it has none."""
    rows, cols = np.nonzero(instances == line)
    if not len(rows):
        return None
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    alpha = (instances[y0:y1, x0:x1] == line).astype(np.float32)
    return Instance(source, cls, rgb[y0:y1, x0:x1].copy(), alpha, True)


def source_instances(prepared: Path, feather_px: float) -> dict[int, list[Instance]]:
    """class -> every `train` box as an Instance (its mask where there is one), in manifest order."""
    pool: dict[int, list[Instance]] = {}
    for row in load_manifest(prepared, ("train",)).itertuples():
        rgb = read_rgb(row.abspath)
        height, width = rgb.shape[:2]
        xyxy, cls = read_labels_px(row.abspath, width, height)
        instances = read_instance_masks(row.abspath)
        if instances is not None and (instances.shape != (height, width) or instances.max() > len(cls)):
            raise StageError(f"{row.abspath}: instance map: expected {width}x{height} with values 0..{len(cls)} "
                             f"(its label lines), got {instances.shape[1]}x{instances.shape[0]} up to "
                             f"{instances.max()}; rerun the import stage")
        for line, (box, c) in enumerate(zip(xyxy, cls.tolist()), start=1):
            source = f"{row.image_id}#{line}"
            instance = None if instances is None else mask_instance(rgb, instances, line, c, source)
            pool.setdefault(c, []).append(instance or box_instance(rgb, box, c, source, feather_px))
    return pool


# ---- placement and composition

def centred(box: Sequence[float], h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The offset that centres an h x w object on `box`, moved wholly inside the image."""
    x = round((box[0] + box[2]) / 2 - w / 2)
    y = round((box[1] + box[3]) / 2 - h / 2)
    return int(min(max(x, 0), width - w)), int(min(max(y, 0), height - h))


def place(objects: Sequence[tuple[int, Sequence[float] | None]], canvas: Canvas, pool: dict[int, list[Instance]],
          rng: np.random.Generator, tries: int) -> tuple[list[Pasted], list[int]]:
    """Objects (class, box to centre on or None) on `canvas` at free offsets: centred on the box
    first, then random; (pasted, classes that found no place)."""
    height, width = canvas.rgb.shape[:2]
    blocked = [tuple(b) for b in canvas.xyxy.tolist()]
    pasted, unplaced = [], []
    for c, box in objects:
        instance = pool[c][int(rng.integers(len(pool[c])))]
        h, w = instance.alpha.shape
        found = None
        fits = h <= height and w <= width
        first = [centred(box, h, w, height, width)] if fits and box is not None else []
        offsets = iter(first)
        for _ in range((len(first) + tries) if fits else 0):
            x, y = next(offsets, None) or (int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1)))
            candidate = Pasted(instance, x, y)
            if all(disjoint(candidate.xyxy, b) for b in blocked):
                found = candidate
                break
        if found is None:
            unplaced.append(c)
        else:
            pasted.append(found)
            blocked.append(found.xyxy)
    return pasted, unplaced


def paste_image(index: int, mirrored: Mirrored, canvas: Canvas, pool: dict[int, list[Instance]],
                settings: CopyPasteSettings) -> PastedImage:
    """Copy-paste image `index`: the mirrored image's objects, from train instances, on its canvas."""
    rng = np.random.default_rng([settings.seed, index])
    placeable = [(c, box) for c, box in mirrored.objects if pool.get(c)]
    pasted, unplaced = place(placeable, canvas, pool, rng, settings.placement_tries)
    return PastedImage(mirrored.name, canvas, tuple(pasted), tuple(unplaced),
                       tuple(c for c, _ in mirrored.objects if not pool.get(c)))


def compose(canvas: Canvas, pasted: Sequence[Pasted]) -> np.ndarray:
    """uint8 [H, W, 3]: the canvas with every object alpha-blended in (their boxes do not overlap)."""
    out = canvas.rgb.astype(np.float32)
    for p in pasted:
        x0, y0, x1, y1 = p.xyxy
        alpha = p.instance.alpha[..., None]
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + p.instance.rgb * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def pasted_boxes(image: PastedImage) -> Detections:
    """The pasted objects' boxes in px (confidence 1)."""
    xyxy = np.array([p.xyxy for p in image.pasted], np.float32).reshape(-1, 4)
    cls = np.array([p.instance.cls for p in image.pasted], np.int64)
    return Detections(xyxy, np.ones(len(cls), np.float32), cls)


def all_boxes(image: PastedImage) -> tuple[np.ndarray, np.ndarray]:
    """Every box of a pasted image, the canvas's first: xyxy float32 [n, 4] in px, cls int64 [n]."""
    pasted = pasted_boxes(image)
    return np.concatenate([image.canvas.xyxy, pasted.xyxy]), np.concatenate([image.canvas.cls, pasted.cls])


# ---- outputs

def write_layout(images: Sequence[PastedImage], out_dir: Path, names: Sequence[str]) -> pd.DataFrame:
    """images/, labels/ (the canvas's lines, then one per pasted object) and manifest.csv in `out_dir`."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for image in images:
        rgb = compose(image.canvas, image.pasted)
        height, width = rgb.shape[:2]
        Image.fromarray(rgb).save(out_dir / "images" / f"{image.image_id}.png")
        (out_dir / "labels" / f"{image.image_id}.txt").write_text(
            image.canvas.label_text + pixels_to_labels(pasted_boxes(image), width, height))
        classes = all_boxes(image)[1].tolist()
        rows.append({"image_id": image.image_id, "path": f"images/{image.image_id}.png",
                     "source_path": os.path.relpath(image.canvas.path), "group": image.canvas.kind,
                     "n_boxes": len(classes), "classes": ";".join(sorted({names[c] for c in classes})),
                     "n_pasted": len(image.pasted),
                     "pasted": ";".join(f"{names[p.instance.cls]}:{p.instance.source}:"
                                        f"{'mask' if p.instance.from_mask else 'box'}" for p in image.pasted)})
    manifest = pd.DataFrame(rows, columns=list(MANIFEST))
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    return manifest


def report(images: Sequence[PastedImage], requested: Sequence[int], pool: dict[int, list[Instance]],
           names: Sequence[str]) -> dict[str, Any]:
    """Per class: requested (the inserted objects), pasted (from masks / box crops), unplaced, and the
    train instances there were to choose from; `form`: which cut-outs ran (mask, box or both)."""
    per_class = {}
    for c, name in enumerate(names):
        pasted = [p for image in images for p in image.pasted if p.instance.cls == c]
        per_class[name] = {
            "requested": sum(1 for r in requested if r == c), "pasted": len(pasted),
            "from_masks": sum(p.instance.from_mask for p in pasted),
            "from_boxes": sum(not p.instance.from_mask for p in pasted),
            "unplaced": sum(u == c for image in images for u in image.unplaced),
            "no_source": sum(u == c for image in images for u in image.no_source),
            "source_instances": len(pool.get(c, [])),
            "source_masks": sum(i.from_mask for i in pool.get(c, [])),
        }
    total = {key: sum(v[key] for v in per_class.values()) for key in next(iter(per_class.values()))}
    forms = [f for f, key in (("mask", "from_masks"), ("box", "from_boxes")) if total[key]]
    return {"images": len(images), "form": " and ".join(forms) or None, "canvases": {k: sum(i.canvas.kind == k for i in images) for k in ("train", "clean")},
            "total": total, "per_class": per_class,
            "unplaced": [{"image_id": i.image_id, "class": names[c], "reason": reason} for i in images
                         for cs, reason in ((i.unplaced, "no free place"), (i.no_source, "no train instance"))
                         for c in cs]}


def examples_grid(images: Sequence[PastedImage], path: Path, names: Sequence[str], n: int, scale: int) -> bool:
    """Canvas (its known boxes) above the pasted image (every box), for the first `n` images with a
    pasted object, six per row; False when there is none."""
    shown = [image for image in images if image.pasted][:n]
    if not shown:
        return False
    rows, titles = [], []
    for start in range(0, len(shown), 6):
        block = shown[start:start + 6]
        rows.append([draw_boxes(i.canvas.rgb, i.canvas.xyxy, i.canvas.cls, scale) for i in block])
        rows.append([draw_boxes(compose(i.canvas, i.pasted), *all_boxes(i), scale) for i in block])
        titles += ["canvas", "pasted"]
    image_grid(path, rows, titles, [i.image_id for i in shown[:6]], names)
    return True


def paste_all(prepared: Path, layout: Path, settings: CopyPasteSettings,
              names: Sequence[str]) -> tuple[list[PastedImage], dict[str, Any]]:
    """One pasted image per image of the inpaint layout `layout`, and the report; reads, writes nothing."""
    wanted = plan(layout, len(names))
    by_path = {c.path.resolve(): c for c in canvases(prepared)}
    pool = source_instances(prepared, settings.feather_px)
    images = []
    for i, mirrored in enumerate(wanted):
        canvas = by_path.get(mirrored.canvas.resolve())
        if canvas is None:
            raise StageError(f"{layout / 'manifest.csv'}: image {mirrored.name}: canvas {mirrored.canvas} is not a "
                             f"train or clean tagged image of {prepared}; rerun the inpaint stage")
        images.append(paste_image(i, mirrored, canvas, pool, settings))
    return images, report(images, [c for m in wanted for c, _ in m.objects], pool, names)
