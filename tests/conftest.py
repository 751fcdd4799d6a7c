"""Shared fixtures: `tiny_prepared`, a 16x16 prepared dataset in the `import` contract.

Each image is a grey road with a light lane line and one coloured blob per tagged class
(class c has colour COLOURS[c]); every split holds all four tag patterns, so a classifier has
something to learn and per-class metrics are defined.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

TINY_CLASSES = ["bottle", "can", "paper"]
TINY_COLOURS = [(230, 40, 40), (40, 60, 230), (240, 240, 60)]
TINY_SIZE = 16
TINY_SPLITS = {"train": 8, "tagged": 8, "val": 6, "test": 6}
TINY_PATTERNS = [[0], [1], [2], [0, 1], [], [1, 2]]


def write_tiny_prepared(root: Path, seed: int = 0) -> Path:
    """`root/data/prepared`: data.yaml, manifest.csv, images/{split}/*.png, labels/{train,val,test}/*.txt."""
    prepared = root / "data" / "prepared"
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in TINY_SPLITS.items():
        (prepared / "images" / split).mkdir(parents=True, exist_ok=True)
        (prepared / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image_id, classes = f"{split}_{i:03d}", TINY_PATTERNS[i % len(TINY_PATTERNS)]
            image = np.full((TINY_SIZE, TINY_SIZE, 3), 100, np.uint8) + rng.integers(0, 12, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
            image[:, 7:9] = 200  # lane line
            boxes = []
            for c in classes:
                x0, y0 = rng.integers(0, TINY_SIZE - 5, size=2)
                image[y0:y0 + 5, x0:x0 + 5] = TINY_COLOURS[c]
                boxes.append(f"{c} {(x0 + 2.5) / TINY_SIZE} {(y0 + 2.5) / TINY_SIZE} {5 / TINY_SIZE} {5 / TINY_SIZE}\n")
            Image.fromarray(image).save(prepared / "images" / split / f"{image_id}.png")
            if split != "tagged":
                (prepared / "labels" / split / f"{image_id}.txt").write_text("".join(boxes))
            rows.append({"image_id": image_id, "split": split, "path": f"images/{split}/{image_id}.png",
                         "width": TINY_SIZE, "height": TINY_SIZE, "source": "fixture",
                         "tags": ";".join(TINY_CLASSES[c] for c in sorted(set(classes))), "n_boxes": len(classes)})
    pd.DataFrame(rows).to_csv(prepared / "manifest.csv", index=False)
    data = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test",
            "names": dict(enumerate(TINY_CLASSES))}
    (prepared / "data.yaml").write_text(yaml.safe_dump(data))
    return prepared


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    """A 16x16 prepared dataset (28 images, 3 classes) under tmp_path/data/prepared."""
    return write_tiny_prepared(tmp_path)
