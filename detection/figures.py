"""Figures of images with boxes, shared by the report (`detection.report`) and the copy-paste examples.

The small images are upscaled (nearest neighbour) before boxes are drawn so both stay visible;
the calling script chooses the matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


def draw_boxes(rgb: np.ndarray, xyxy: np.ndarray, cls: np.ndarray, scale: int) -> np.ndarray:
    """The image upscaled `scale` x (nearest) with one class-coloured rectangle per box."""
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    pen = ImageDraw.Draw(image)
    for box, c in zip(xyxy * scale, cls):
        pen.rectangle([float(v) for v in box], outline=PALETTE[int(c) % len(PALETTE)], width=max(1, scale // 3))
    return np.asarray(image)


def image_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str],
               col_titles: Sequence[str], legend: Sequence[str]) -> None:
    """Save a grid of images (rows x cols) with titles and a class-colour legend."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows + 0.6), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].text(-0.1, 0.5, row_titles[i], transform=axes[i][0].transAxes, ha="right", va="center",
                        fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(PALETTE[k % len(PALETTE)]) / 255) for k in range(len(legend))]
    fig.legend(handles, legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
