"""Stage `inpaint`: litter inserted into real road scenes by classifier-guided RePaint, with measured boxes.

- Plan: `quota_c` objects per class (the `generate` quota rule, `augment.generate.plan_quota`);
  object k of class c has seed `image_seed(seed, c, k)`. The objects, shuffled with `seed`, are
  dealt `objects_per_image` to an image.
- Canvas: a real image whose boxes are all known, a boxed `train` image or a clean (untagged)
  `tagged` one (`scenes.canvases.canvases`); `val` and `test` are never read. Image i draws
  canvas, sizes and places from a generator seeded (seed, i), trying up to `canvas_tries`
  canvases (the first that takes every object wins, else the one that took the most).
- Place: a box of a size drawn from the `train` boxes of its class (shrunk, aspect kept, to leave
  `context_px` of real road around the hole in the window), the hole = that box grown by
  `hole_margin_px`, the window = the square of the patch models' crop side (`patch_unet.crops`:
  `small_px` when the box leaves `context_px` of road around its hole there, so small litter is
  rendered at that scale, native when it equals the models' size; else `px`) centred on the hole,
  moved inside the image. The hole never touches a known box; the window
  holds no known box of the object's class (the judge would see it) and no other object's window
  (so every window renders alone).
- Render: the window is area-downsampled to the patch UNet's size (a native window: not at all); a
  model pixel is unknown when any of its source pixels is in the hole. `augment.repaint.repaint` fills the unknown part, guided
  by the patch classifier toward the class; the result is brought back up (bicubic,
  `scenes.prepared.resample_rgb`) and only the hole's pixels replace the canvas's.
- Measure: the box is the tight box of the largest 8-connected component of hole pixels whose
  largest channel moved more than `change_threshold` levels (`augment.repaint.box_from_change`).
  The patch judge scores the window before and after (at the models' size). An insertion is kept
  when a box was measured, at least `min_box_px` on each side, the judge calls the finished window
  its class (p >= HIT_THRESHOLD), and the insertion raised that class's p more than any other's
  (litter of other classes already in the window scores the same before and after, so it does not
  count; a "paper" that the judge also reads as a can does); otherwise it is undone (the canvas's
  pixels stay) and reported with the reason: no change, too small, judge, another class.
- Controls: the first `control_per_class` insertions of each class are rendered again unguided
  (scale 0, the same seed, window and hole); guided vs control "verified" (the keep rule) is a
  paired comparison, tested like `generate`'s hit rates (`augment.generate.mcnemar`).

An insertion depends only on its seed, window and hole, never on its batch or process: each one
draws all its noise from its own generator (`augment.repaint.repaint`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from augment.data import to_model_range
from augment.generate import Models, image_seed, mcnemar, plan_batches, plan_quota
from augment.guidance import classifier_guidance
from augment.patches import CropSettings, crop_origin, window_side
from augment.repaint import box_from_change, repaint
from augment.settings import InpaintSettings
from core.errors import StageError
from scenes.boxes import Detections, disjoint, pixels_to_labels
from scenes.canvases import Canvas, canvases
from scenes.figures import draw_boxes, image_grid
from scenes.prepared import load_manifest, resample_rgb
from scenes.synthetic import HIT_THRESHOLD

Box = tuple[int, int, int, int]
MANIFEST = ("image_id", "path", "source_path", "group", "n_boxes", "classes", "n_inserted", "n_undone", "inserted")
UNDO_REASONS = ("no change", "too small", "judge", "another class")


@dataclass(frozen=True)
class Insertion:
    image_id: str
    cls: int
    k: int                    # the k-th object of its class
    seed: int
    box: Box                  # planned box, canvas px
    hole: Box                 # the pixels RePaint may change, canvas px
    window: Box               # the px x px square the models see, canvas px


@dataclass(frozen=True)
class PlannedImage:
    image_id: str
    canvas: Canvas
    insertions: tuple[Insertion, ...]
    unplaced: tuple[int, ...]  # classes that found no place


@dataclass(frozen=True)
class Job:
    insertion: Insertion
    guided: bool


@dataclass(frozen=True)
class Outcome:
    job: Job
    before: np.ndarray        # uint8 [px, px, 3]: the canvas's window
    window: np.ndarray        # uint8 [px, px, 3]: the window after the insertion (before any undo)
    box: Box | None           # measured, canvas px
    judge_prob: float
    reason: str | None        # why it is undone; None: kept

    @property
    def kept(self) -> bool:
        return self.reason is None


# ---- plan

def class_sizes(pool: Sequence[Canvas]) -> dict[int, np.ndarray]:
    """class -> float32 [n, 2] (w, h) px of the canvases' boxes (the `train` ones: clean canvases have none)."""
    sizes: dict[int, list] = {}
    for canvas in pool:
        for box, c in zip(canvas.xyxy, canvas.cls.tolist()):
            sizes.setdefault(c, []).append((box[2] - box[0], box[3] - box[1]))
    return {c: np.asarray(v, np.float32) for c, v in sizes.items()}


def object_size(sizes: np.ndarray, rng: np.random.Generator, limit: int) -> tuple[int, int]:
    """(w, h) of a random real box, shrunk (aspect kept) so that neither side exceeds `limit`; >= 1 px."""
    w, h = sizes[int(rng.integers(len(sizes)))].tolist()
    scale = min(1.0, limit / max(w, h))
    return max(1, min(limit, round(w * scale))), max(1, min(limit, round(h * scale)))


def hole_and_window(box: Box, margin: int, px: int, width: int, height: int) -> tuple[Box, Box]:
    """The hole (box grown by margin, clipped to the image) and the px-square window centred on it."""
    hole = (max(0, box[0] - margin), max(0, box[1] - margin), min(width, box[2] + margin), min(height, box[3] + margin))
    x0 = crop_origin((hole[0] + hole[2]) / 2, px, width)
    y0 = crop_origin((hole[1] + hole[3]) / 2, px, height)
    return hole, (x0, y0, x0 + px, y0 + px)


def place(objects: Sequence[tuple[int, int, int]], canvas: Canvas, sizes: dict[int, np.ndarray],
          rng: np.random.Generator, settings: InpaintSettings, crops: CropSettings,
          image_id: str) -> tuple[list[Insertion], list[int]]:
    """Objects (class, k, seed) on `canvas` at free places (module docstring); (insertions, unplaced classes)."""
    height, width = canvas.rgb.shape[:2]
    room = 2 * (settings.context_px + settings.hole_margin_px)
    limit = crops.px - room
    known = list(zip([tuple(b) for b in canvas.xyxy.tolist()], canvas.cls.tolist()))
    placed: list[Insertion] = []
    unplaced = []
    for c, k, seed in objects:
        w, h = object_size(sizes[c], rng, limit)
        px = window_side(max(w, h), (crops.small_px or 0) - room, crops)
        found = None
        for _ in range(settings.placement_tries if w <= width and h <= height else 0):
            x, y = int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1))
            box = (x, y, x + w, y + h)
            hole, window = hole_and_window(box, settings.hole_margin_px, px, width, height)
            if (all(disjoint(hole, b) for b, _ in known)
                    and all(disjoint(window, b) for b, kc in known if kc == c)
                    and all(disjoint(window, other.window) for other in placed)):
                found = Insertion(image_id, c, k, seed, box, hole, window)
                break
        if found is None:
            unplaced.append(c)
        else:
            placed.append(found)
    return placed, unplaced


def plan(prepared: Path, settings: InpaintSettings, names: Sequence[str],
         crops: CropSettings) -> tuple[list[PlannedImage], dict[str, int]]:
    """Every image to make (its canvas and placed insertions; module docstring) and the quota per class."""
    quota = plan_quota(settings, names, load_manifest(prepared, ("train",))["tags"])
    pool = canvases(prepared)
    if not pool:
        raise StageError(f"{prepared}/manifest.csv: no train or clean tagged image to insert into")
    sizes = class_sizes(pool)
    missing = [names[c] for c in range(len(names)) if quota[names[c]] and c not in sizes]
    if missing:
        raise StageError(f"{prepared}/manifest.csv: no train box of class(es) {', '.join(missing)} to size an "
                         "insertion by; set inpaint.quota to 0 for them")
    objects = [(c, k, image_seed(settings.seed, name, k)) for c, name in enumerate(names) for k in range(quota[name])]
    order = np.random.default_rng(settings.seed).permutation(len(objects))
    objects = [objects[i] for i in order]
    if min(min(c.rgb.shape[:2]) for c in pool) < crops.px:
        raise StageError(f"params.yaml: patch_unet.crops.px {crops.px} exceeds the prepared images' size")
    if crops.px - 2 * (settings.context_px + settings.hole_margin_px) < 1:
        raise StageError(f"params.yaml: inpaint.context_px {settings.context_px} and hole_margin_px "
                         f"{settings.hole_margin_px} leave no room for an object in a {crops.px}-px window")
    n_images = math.ceil(len(objects) / settings.objects_per_image)
    digits = max(6, len(str(n_images)))
    images = []
    for i in range(n_images):
        wanted = objects[i * settings.objects_per_image:(i + 1) * settings.objects_per_image]
        rng = np.random.default_rng([settings.seed, i])
        image_id, best = f"{i:0{digits}d}", None
        for _ in range(settings.canvas_tries):
            canvas = pool[int(rng.integers(len(pool)))]
            placed, unplaced = place(wanted, canvas, sizes, rng, settings, crops, image_id)
            if best is None or len(placed) > len(best[1]):
                best = (canvas, placed, unplaced)
            if not unplaced:
                break
        images.append(PlannedImage(image_id, best[0], tuple(best[1]), tuple(best[2])))
    return images, quota


def jobs(images: Sequence[PlannedImage], settings: InpaintSettings) -> list[Job]:
    """Every insertion guided, then the first `control_per_class` of each class (by k) unguided."""
    guided = [Job(ins, True) for image in images for ins in image.insertions]
    controls = sorted((j.insertion for j in guided if j.insertion.k < settings.control_per_class),
                      key=lambda ins: (ins.cls, ins.k))
    return guided + [Job(ins, False) for ins in controls]


# ---- render, measure, judge

def crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    return rgb[box[1]:box[3], box[0]:box[2]]


def hole_mask(insertion: Insertion) -> np.ndarray:
    """bool [px, px]: the hole inside the window."""
    x0, y0, x1, y1 = insertion.window
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    hx0, hy0, hx1, hy1 = insertion.hole
    mask[hy0 - y0:hy1 - y0, hx0 - x0:hx1 - x0] = True
    return mask


def known_at(mask: np.ndarray, size: int) -> np.ndarray:
    """float32 [size, size]: 1 where no source pixel of the model pixel is in the hole."""
    factor = mask.shape[0] // size
    return 1.0 - mask.reshape(size, factor, size, factor).any(axis=(1, 3)).astype(np.float32)


def render_batch(models: Models, settings: InpaintSettings, batch: Sequence[Job],
                 canvas_rgb: dict[str, np.ndarray]) -> list[Outcome]:
    """Inpaint, measure and judge one batch of windows."""
    size = models.unet.config.sample_size
    device = models.unet.device
    windows = [crop(canvas_rgb[job.insertion.image_id], job.insertion.window) for job in batch]
    masks = [hole_mask(job.insertion) for job in batch]
    small = downsampled(windows, size)
    known = torch.from_numpy(np.stack([known_at(m, size) for m in masks]))[:, None]
    target = torch.tensor([job.insertion.cls for job in batch], dtype=torch.long, device=device)
    guided = batch[0].guided and settings.guidance_scale > 0
    cond_fn = classifier_guidance(models.classifier, settings.guidance_scale) if guided else None
    generators = [torch.Generator().manual_seed(job.insertion.seed) for job in batch]
    x = repaint(models.unet, models.scheduler, to_model_range(small), known, generators, steps=settings.steps,
                jump_length=settings.jump_length, jump_n_sample=settings.jump_n_sample, cond_fn=cond_fn, target=target)
    filled = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    finished = [np.where(m[..., None], resample_rgb(f, w.shape[0]), w) for f, m, w in zip(filled, masks, windows)]
    after, before = judge_probs(models, downsampled(finished, size)), judge_probs(models, small)  # [B, n_classes]
    gain = after - before
    outcomes = []
    for i, (job, window, done, mask) in enumerate(zip(batch, windows, finished, masks)):
        x0, y0, c = *job.insertion.window[:2], job.insertion.cls
        found = box_from_change(window, done, mask, settings.change_threshold)
        box = None if found is None else (found[0] + x0, found[1] + y0, found[2] + x0, found[3] + y0)
        prob = float(after[i, c])
        outcomes.append(Outcome(job, window, done, box, prob, undo_reason(box, settings.min_box_px, prob, gain[i], c)))
    return outcomes


def undo_reason(box: Box | None, min_box_px: int, prob: float, gain: torch.Tensor, cls: int) -> str | None:
    """Why an insertion of class `cls` is undone (module docstring), or None to keep it: `prob` is the
    judge's p(cls) after, `gain` [n_classes] every class's p after minus before."""
    if box is None:
        return "no change"
    if min(box[2] - box[0], box[3] - box[1]) < min_box_px:
        return "too small"
    if prob < HIT_THRESHOLD:
        return "judge"
    if int(gain.argmax()) != cls:
        return "another class"
    return None


def downsampled(windows: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 [B, 3, size, size]: the windows as the patch models see them (area-downsampled)."""
    return torch.from_numpy(np.stack([resample_rgb(w, size) for w in windows])).permute(0, 3, 1, 2)


@torch.no_grad()
def judge_probs(models: Models, images: torch.Tensor) -> torch.Tensor:
    """The patch judge's p(class present) [B, n_classes] of uint8 images [B, 3, S, S]."""
    x = to_model_range(images).to(models.unet.device)
    return torch.sigmoid(models.judge(x, torch.zeros(len(x), dtype=torch.long, device=x.device)).float()).cpu()


def render_shard(models: Models, settings: InpaintSettings, all_jobs: Sequence[Job], images: Sequence[PlannedImage],
                 process_index: int = 0, num_processes: int = 1, progress: bool = False) -> list[Outcome]:
    """This process's batches: batch j of `plan_batches` goes to process j % N."""
    canvas_rgb = {image.image_id: image.canvas.rgb for image in images}
    mine = plan_batches(all_jobs, settings.batch_size)[process_index::num_processes]
    outcomes = []
    for batch in tqdm(mine, desc="inpaint", unit="batch", disable=not progress):
        outcomes += render_batch(models, settings, batch, canvas_rgb)
    return outcomes


# ---- outputs

def compose(image: PlannedImage, kept: Sequence[Outcome]) -> np.ndarray:
    """The canvas with the kept insertions' holes filled (windows never overlap)."""
    rgb = image.canvas.rgb.copy()
    for outcome in kept:
        ins = outcome.job.insertion
        x0, y0, x1, y1 = ins.window
        rgb[y0:y1, x0:x1] = np.where(hole_mask(ins)[..., None], outcome.window, rgb[y0:y1, x0:x1])
    return rgb


def guided_outcomes(images: Sequence[PlannedImage], outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """image_id -> its guided outcomes in plan order."""
    by_key = {(o.job.insertion.image_id, o.job.insertion.box): o for o in outcomes if o.job.guided}
    return {image.image_id: [by_key[image.image_id, ins.box] for ins in image.insertions] for image in images}


def write_layout(images: Sequence[PlannedImage], outcomes: Sequence[Outcome], out_dir: Path,
                 names: Sequence[str]) -> pd.DataFrame:
    """images/, labels/ (the canvas's lines, then one per kept insertion) and manifest.csv in `out_dir`, for
    every image that kept at least one insertion."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    per_image = guided_outcomes(images, outcomes)
    rows = []
    for image in images:
        kept = [o for o in per_image[image.image_id] if o.kept]
        if not kept:
            continue
        rgb = compose(image, kept)
        height, width = rgb.shape[:2]
        boxes = Detections(np.array([o.box for o in kept], np.float32), np.ones(len(kept), np.float32),
                           np.array([o.job.insertion.cls for o in kept], np.int64))
        Image.fromarray(rgb).save(out_dir / "images" / f"{image.image_id}.png")
        (out_dir / "labels" / f"{image.image_id}.txt").write_text(
            image.canvas.label_text + pixels_to_labels(boxes, width, height))
        classes = image.canvas.cls.tolist() + boxes.cls.tolist()
        rows.append({"image_id": image.image_id, "path": f"images/{image.image_id}.png",
                     "source_path": os.path.relpath(image.canvas.path), "group": image.canvas.kind,
                     "n_boxes": len(classes), "classes": ";".join(sorted({names[c] for c in classes})),
                     "n_inserted": len(kept), "n_undone": len(per_image[image.image_id]) - len(kept),
                     "inserted": ";".join(f"{names[o.job.insertion.cls]}:{o.job.insertion.seed}:{o.judge_prob:.3f}"
                                          for o in kept)})
    manifest = pd.DataFrame(rows, columns=list(MANIFEST))
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    return manifest


def _rate(items: Sequence[Outcome]) -> float | None:
    return round(float(np.mean([o.kept for o in items])), 4) if items else None


def report(images: Sequence[PlannedImage], outcomes: Sequence[Outcome], quota: dict[str, int],
           settings: InpaintSettings, names: Sequence[str], written: int) -> dict[str, Any]:
    """Per class: planned, placed, unplaced, kept, undone by reason, mean judge p; guided vs control
    verification (the keep rule) on the paired insertions with the McNemar test."""
    guided = [o for o in outcomes if o.job.guided]
    controls = {(o.job.insertion.cls, o.job.insertion.k): o for o in outcomes if not o.job.guided}

    def summary(keep) -> dict[str, Any]:
        mine = [o for o in guided if keep(o.job.insertion.cls)]
        pairs = [(o, controls[o.job.insertion.cls, o.job.insertion.k]) for o in mine
                 if (o.job.insertion.cls, o.job.insertion.k) in controls]
        return {
            "placed": len(mine), "kept": sum(o.kept for o in mine),
            "undone": {reason: sum(o.reason == reason for o in mine) for reason in UNDO_REASONS},
            "mean_judge_prob": round(float(np.mean([o.judge_prob for o in mine])), 4) if mine else None,
            "window_px": {str(side): n for side, n in sorted(Counter(o.job.insertion.window[2] - o.job.insertion.window[0]
                                                                      for o in mine).items())},
            "verified": {"guided": _rate(mine), "guided_paired": _rate([g for g, _ in pairs]),
                         "control": _rate([c for _, c in pairs]), "n_pairs": len(pairs),
                         "paired_test": mcnemar([(g.kept, c.kept) for g, c in pairs])},
        }

    per_class = {}
    for c, name in enumerate(names):
        unplaced = sum(u == c for image in images for u in image.unplaced)
        per_class[name] = {"planned": quota[name], "unplaced": unplaced, **summary(lambda k, c=c: k == c)}
    overall = {"planned": sum(quota.values()), "unplaced": sum(len(i.unplaced) for i in images),
               **summary(lambda k: True)}
    undone = [{"image_id": o.job.insertion.image_id, "class": names[o.job.insertion.cls], "seed": o.job.insertion.seed,
               "reason": o.reason, "judge_prob": round(o.judge_prob, 4)} for o in guided if not o.kept]
    return {"hit_threshold": HIT_THRESHOLD, "settings": settings, "images_planned": len(images),
            "images_written": written,
            "canvases": {k: sum(i.canvas.kind == k for i in images) for k in ("train", "clean")},
            "overall": overall, "per_class": per_class, "undone": undone}


def examples_grid(outcomes: Sequence[Outcome], path: Path, names: Sequence[str], n: int, scale: int) -> bool:
    """One row per insertion (the first `n` that have a control): the window before, guided (its measured
    box), unguided control; the row says the class, the window's side, kept or why undone, and the judge's
    p. False: none."""
    controls = {(o.job.insertion.cls, o.job.insertion.k): o for o in outcomes if not o.job.guided}
    shown = [o for o in outcomes if o.job.guided and (o.job.insertion.cls, o.job.insertion.k) in controls][:n]
    if not shown:
        return False

    def drawn(o: Outcome, window: np.ndarray, with_box: bool) -> np.ndarray:
        x0, y0 = o.job.insertion.window[:2]
        box = [] if o.box is None or not with_box else [[o.box[0] - x0, o.box[1] - y0, o.box[2] - x0, o.box[3] - y0]]
        xyxy = np.array(box, np.float32).reshape(-1, 4)
        return draw_boxes(window, xyxy, np.full(len(xyxy), o.job.insertion.cls, np.int64), scale)

    rows, titles = [], []
    for o in shown:
        control = controls[o.job.insertion.cls, o.job.insertion.k]
        rows.append([drawn(o, o.before, False), drawn(o, o.window, True), drawn(control, control.window, True)])
        side = o.job.insertion.window[2] - o.job.insertion.window[0]
        titles.append(f"{names[o.job.insertion.cls]} ({side} px): {'kept' if o.kept else o.reason}, "
                      f"p {o.judge_prob:.2f} (control {control.judge_prob:.2f})")
    image_grid(path, rows, titles, ["before", "guided", "unguided"], names)
    return True
