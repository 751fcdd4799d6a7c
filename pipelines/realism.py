"""Stage `realism`: each synthetic source judged by the real-only baseline detector, and the quality gate.

Reads the guided scenes (<paths.upsampled>), the layouts <paths.pseudo>/{synthetic,inpaint,copypaste},
every seed's baseline detector, the real boxes of `gen_metrics.real_split` and the judge (the crop FD's
features). Per source and class (detection.realism): detector agreement, median box IoU, crop FD, and
whether the class passes `quality_gate.min_agreement`. Writes <paths.reports>/realism.json and
<paths.pseudo>/gate/<source>.json (the failing classes and the images train_yolo leaves out).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch

from augment.classifier import load_classifier
from augment.gen_metrics import build_extractor, per_class_fd
from augment.settings import GenMetricsSettings
from core.io import atomic_dir, write_json
from core.params import section
from detection import realism
from detection.pseudo_label import PseudoLabelSettings
from detection.yolo import YoloParams, load_model, predict, seed_dir
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, read_rgb
from scenes.synthetic import read_generated


def detector_ious(objects: Sequence[realism.SyntheticObject], models: Sequence, settings: PseudoLabelSettings,
                  imgsz: int) -> np.ndarray:
    """[seeds, objects]: each object's `realism.best_iou` under each baseline seed's model."""
    paths = sorted({o.image for o in objects})
    images = [read_rgb(p) for p in paths]
    index = {p: i for i, p in enumerate(paths)}
    out = np.zeros((len(models), len(objects)))
    for s, model in enumerate(models):
        detections = predict(model, images, settings.predict, imgsz) if images else []
        out[s] = [realism.best_iou(o, detections[index[o.image]]) for o in objects]
    return out


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    settings = section(realism.QualityGateSettings, "quality_gate", params)
    labelling = section(PseudoLabelSettings, "pseudo_label", params)
    yolo = section(YoloParams, "yolo", params)
    metrics = section(GenMetricsSettings, "gen_metrics", params)
    names = class_names(paths.prepared)
    models = [load_model(seed_dir(paths.yolo / "baseline", s) / "best.pt") for s in yolo.seeds]
    judge = load_classifier(paths.judge)
    extractor = build_extractor(metrics, judge)
    px = judge.config.image_size
    real_crops = realism.object_crops(realism.split_boxes(paths.prepared, metrics.real_split), len(names), px)
    layouts = {folder: realism.layout_objects(paths.pseudo / folder, column, made_by)
               for folder, (_, column, made_by) in realism.SOURCES.items()}
    sources = {**layouts, "synthetic": realism.scene_objects(read_generated(paths.upsampled, names), names)}
    report, gate = {}, {}
    with torch.inference_mode():
        for source in realism.SOURCES:
            objects = sources[source]
            figures = realism.class_figures(objects, detector_ious(objects, models, labelling, yolo.train.imgsz),
                                            names, settings.iou)
            boxed = [(o.image, o.xyxy, o.cls) for o in layouts[source]]
            fds = per_class_fd(real_crops, realism.object_crops(boxed, len(names), px), extractor, metrics.batch_size)
            passed = realism.gate(figures, settings.min_agreement)
            for name, fd in zip(names, fds):
                figures[name].update(crop_fd=fd, passed=passed[name])
            images = {p.stem for p in (paths.pseudo / source / "images").glob("*.png")}
            left_out = sorted(images & set(realism.gated_out(objects, passed, names)))
            report[source] = {"variant": realism.SOURCES[source][0], "images": len(images), "per_class": figures,
                              "gated_out": left_out}
            gate[source] = {"failed": [n for n, ok in passed.items() if ok is False], "gated_out": left_out}
            print(realism.realism_line(source, figures, passed))
    with atomic_dir(paths.pseudo / realism.GATE_DIR) as gate_dir:
        for source, decision in gate.items():
            write_json(gate_dir / f"{source}.json", decision)
    write_json(paths.reports / "realism.json", {
        "settings": settings, "predict": labelling.predict, "seeds": yolo.seeds, "extractor": metrics.extractor,
        "real_split": metrics.real_split, "real_crops": {n: len(c) for n, c in zip(names, real_crops)},
        "sources": report})


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
