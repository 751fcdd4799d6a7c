"""What the baseline detector makes of the inserted litter under other box rules and with the upsampler.

    .venv/bin/python bench/bench_realism.py              # after `dvc repro realism` (a demo run)

Reads a finished run's insertions (<paths.pseudo>/inpaint: canvas, composed image, measured boxes),
every seed's baseline (<paths.yolo>/baseline/seed_<s>/best.pt, run as `pseudo_label.predict` runs it)
and the upsampler (<paths.upsampler>). Prints two markdown tables of detector agreement (share of
(object, seed) pairs boxed with the object's class at IoU >= `quality_gate.iou`) and median box IoU
per class, as stage realism measures them (detection.realism):

1. Box rules, re-measured from what changed between canvas and composed image around each
   inserted box (the hole is the changed region; the insertions and keep decisions stay the run's):
   `largest` (the stage's rule: largest 8-connected component of pixels that moved more than
   `inpaint.change_threshold`), `union` (every such component), `off-road <t>` (those pixels that
   also differ by more than t levels from the median colour of the unchanged road around them).
2. The upsampler on the inserted pixels: each window (`patch_unet.crops.px`) is area-downsampled to
   half, brought up by the upsampler's factor (`upsample.steps` DDIM steps), area-downsampled back
   to the window, and only the changed pixels replace the composed image's; agreement before and
   after on the same objects.

Runs from the repo root (or --root); time it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from augment.patches import CropSettings, crop_origin  # noqa: E402
from augment.settings import InpaintSettings, UpsampleSettings  # noqa: E402
from augment.superres import Upsampler, upsample_images  # noqa: E402
from core.params import from_dict, read_params, section  # noqa: E402
from core.tables import markdown_table  # noqa: E402
from detection import realism  # noqa: E402
from detection.pseudo_label import PseudoLabelSettings  # noqa: E402
from detection.yolo import YoloParams, load_model, predict, seed_dir  # noqa: E402
from pipelines.stage import Paths  # noqa: E402
from scenes.prepared import class_names, read_rgb, resample_rgb  # noqa: E402

GROW = 10  # px around an inserted box searched for its changed pixels


def components_box(mask: np.ndarray, union: bool) -> tuple[int, int, int, int] | None:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    keep = mask if union else labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    ys, xs = np.nonzero(keep)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_rules(canvas: np.ndarray, composed: np.ndarray, box, threshold: float) -> dict:
    """Each rule's box (px) for the insertion around `box`; None where nothing changed."""
    height, width = canvas.shape[:2]
    x0, y0 = max(0, int(box[0]) - GROW), max(0, int(box[1]) - GROW)
    x1, y1 = min(width, int(np.ceil(box[2])) + GROW), min(height, int(np.ceil(box[3])) + GROW)
    before, after = canvas[y0:y1, x0:x1].astype(np.float32), composed[y0:y1, x0:x1].astype(np.float32)
    change = np.abs(after - before).max(-1)
    hole = change > 0
    moved = hole & (change > threshold)
    road = np.median(before[~hole].reshape(-1, 3), 0) if (~hole).any() else before.reshape(-1, 3).mean(0)
    off_road = np.abs(after - road).max(-1)
    rules = {"largest": components_box(moved, False), "union": components_box(moved, True)}
    rules.update({f"off-road {t}": components_box(moved & (off_road > t), False) for t in (24, 32, 48)})
    return {k: None if b is None else (b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0) for k, b in rules.items()}


def upsampled_insertions(composed: np.ndarray, canvas: np.ndarray, boxes, upsampler: Upsampler, steps: int,
                         seed: int, px: int) -> np.ndarray:
    """The composed image with each inserted px-window's changed pixels brought through the upsampler."""
    out = composed.copy()
    changed = np.abs(composed.astype(int) - canvas.astype(int)).max(-1) > 0
    size = composed.shape[0]
    low_px = px // 2  # the patch models' view of the window; the upsampler brings it above px
    for box in boxes:
        x0 = crop_origin((box[0] + box[2]) / 2, px, size)
        y0 = crop_origin((box[1] + box[3]) / 2, px, size)
        window = composed[y0:y0 + px, x0:x0 + px]
        high = upsample_images(upsampler, [resample_rgb(window, low_px)], [seed + x0 * size + y0], steps, 1)[0]
        back = resample_rgb(high, px)
        hole = changed[y0:y0 + px, x0:x0 + px, None]
        out[y0:y0 + px, x0:x0 + px] = np.where(hole, back, window)
    return out


def agreement_table(objects, images: dict, models, predict_settings, imgsz, names, iou) -> dict:
    """class -> (objects, agreement, median box IoU) of `objects` (realism.SyntheticObject) on `images`."""
    keys = sorted(images)
    ious = np.zeros((len(models), len(objects)))
    for s, model in enumerate(models):
        found = dict(zip(keys, predict(model, [images[k] for k in keys], predict_settings, imgsz)))
        ious[s] = [realism.best_iou(o, found[o.name]) for o in objects]
    figures = realism.class_figures(objects, ious, names, iou)
    return {**figures, "all": {"objects": len(objects), "agreement": round(float((ious >= iou).mean()), 4)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repo root holding params.yaml, data/ and models/")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    params = read_params()
    paths = section(Paths, "paths", params)
    gate = section(realism.QualityGateSettings, "quality_gate", params)
    labelling = section(PseudoLabelSettings, "pseudo_label", params)
    yolo = section(YoloParams, "yolo", params)
    threshold = section(InpaintSettings, "inpaint", params).change_threshold
    steps = section(UpsampleSettings, "upsample", params).steps
    names = class_names(paths.prepared)
    models = [load_model(seed_dir(paths.yolo / "baseline", s) / "best.pt") for s in yolo.seeds]
    layout = paths.pseudo / "inpaint"
    frame = pd.read_csv(layout / "manifest.csv", dtype={"image_id": str, "path": str, "source_path": str})
    composed, canvases = {}, {}
    for row in frame.itertuples():
        name = Path(row.path).stem
        composed[name], canvases[name] = read_rgb(layout / row.path), read_rgb(row.source_path)
    objects = realism.layout_objects(layout, "n_inserted", "inpaint")
    if not objects:
        print(f"{layout}: no insertion to measure")
        return
    px = from_dict(CropSettings, params["patch_unet"]["crops"], "params.yaml: patch_unet.crops").px
    rows = []
    for rule in box_rules(canvases[objects[0].name], composed[objects[0].name], objects[0].xyxy, threshold):
        measured = [realism.SyntheticObject(o.image, o.name, o.cls,
                                            box_rules(canvases[o.name], composed[o.name], o.xyxy, threshold)[rule]
                                            or o.xyxy) for o in objects]
        rows.append({"variant": f"box: {rule}", **summary(agreement_table(measured, composed, models, labelling.predict,
                                                                          yolo.train.imgsz, names, gate.iou))})
    upsampler = Upsampler.load(paths.upsampler)
    by_image: dict[str, list] = {}
    for o in objects:
        by_image.setdefault(o.name, []).append(o.xyxy)
    sharpened = {k: upsampled_insertions(composed[k], canvases[k], by_image.get(k, []), upsampler, steps,
                                         zlib.crc32(k.encode()), px) for k in composed}
    rows.append({"variant": "upsampler on the windows", **summary(agreement_table(
        objects, sharpened, models, labelling.predict, yolo.train.imgsz, names, gate.iou))})
    print(markdown_table(pd.DataFrame(rows)))


def summary(table: dict) -> dict:
    """One row: overall agreement, then agreement / median box IoU per class."""
    row = {"objects": table["all"]["objects"], "agreement": table["all"]["agreement"]}
    for name, f in table.items():
        if name != "all" and f["objects"]:
            row[name] = f"{f['agreement']:.2f} / " + (f"{f['box_iou']:.2f}" if f["box_iou"] is not None else "n/a")
    return row


if __name__ == "__main__":
    main()
