"""Boxes in the two forms the project passes around: pixel corners (`Detections`, what a detector
returns and the metrics read) and YOLO label text (class, centre and size normalised to the image),
with the conversions between them. No ultralytics here: the stages that only move boxes need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from scenes.prepared import label_path, read_yolo_labels


@dataclass(frozen=True)
class Detections:
    """Boxes of one image in pixels: xyxy float32 [n, 4], conf float32 [n], cls int64 [n]."""

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.xyxy[keep], self.conf[keep], self.cls[keep])


def labels_to_pixels(labels: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO rows (cls, cx, cy, w, h normalised) -> (xyxy float32 [n, 4] in px, cls int64 [n])."""
    cx, cy, w, h = (labels[:, i] for i in range(1, 5))
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    return xyxy.astype(np.float32).reshape(-1, 4), labels[:, 0].astype(np.int64)


def pixels_to_labels(det: Detections, width: int, height: int) -> str:
    """Detections -> YOLO label text (one `cls cx cy w h` line per box, normalised, clipped)."""
    xyxy = det.xyxy.copy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    lines = []
    for (x1, y1, x2, y2), c in zip(xyxy, det.cls):
        lines.append(f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "".join(line + "\n" for line in lines)


def disjoint(a: Sequence[float], b: Sequence[float]) -> bool:
    """Zero intersection area of two xyxy boxes (touching edges allowed)."""
    return min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def read_labels_px(image_path: Path | str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes of an image from its label file, in px."""
    return labels_to_pixels(read_yolo_labels(label_path(image_path)), width, height)
