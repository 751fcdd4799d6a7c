"""Stand-ins for the detection tests beside conftest's `tiny_prepared`: synthetic images, params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from conftest import TINY_CLASSES, TINY_COLOURS, TINY_SIZE


def make_synthetic(root: Path, n: int = 6, seed: int = 1) -> Path:
    """`root/data/synthetic` as `generate` writes it: images/*.png + manifest.csv, targets cycling."""
    synthetic = root / "data" / "synthetic"
    (synthetic / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        target = i % len(TINY_CLASSES)
        image = np.full((TINY_SIZE, TINY_SIZE, 3), 100, np.uint8) + rng.integers(0, 12, (TINY_SIZE, TINY_SIZE, 3),
                                                                                   dtype=np.uint8)
        image[5:10, 5:10] = TINY_COLOURS[target]
        Image.fromarray(image).save(synthetic / "images" / f"syn{i:03d}.png")
        rows.append({"image_id": f"syn{i:03d}", "path": f"images/syn{i:03d}.png", "target": TINY_CLASSES[target],
                     "guidance_scale": 1.0, "sampler": "ddim", "steps": 10, "seed": i,
                     "target_prob": 0.9, "judge_prob": 0.8})
    pd.DataFrame(rows).to_csv(synthetic / "manifest.csv", index=False)
    return synthetic


def tiny_params(**overrides) -> dict:
    """params.yaml sections of the detection stages, tiny: 1 epoch at imgsz 32, few resamples."""
    params = {
        "yolo": {"train": {"model": "yolov8n.yaml", "imgsz": 32, "epochs": 1, "batch": 8, "seed": 0,
                           "device": "cpu", "patience": 100, "workers": 0, "amp": False, "plots": False,
                           "extra": {"mosaic": 0.0}},
                 "synthetic_ratio": 1.0, "tagged_ratio": 1.0},
        "pseudo_label": {"conf": 0.0001, "iou": 0.5, "tta": True, "require_target": False,
                         "max_background_fraction": 0.5, "seed": 0, "device": "cpu", "batch": 8},
        "evaluate": {"variants": ["baseline", "augmented", "selftrain"], "conf": 0.001, "iou": 0.7,
                     "max_det": 100, "device": "cpu", "batch": 8,
                     "bootstrap": {"n_resamples": 20, "seed": 0, "ci": 0.95},
                     "draw_conf": 0.0, "grid_images": 4, "grid_scale": 3},
    }
    for key, value in overrides.items():
        params[key] = {**params[key], **value}
    return params


def write_params(root: Path, **overrides) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(**overrides)))
