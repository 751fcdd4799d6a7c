"""Figures of images with boxes, shared by the report (`detection.report`) and the copy-paste examples.

The small images are upscaled (nearest neighbour) before boxes are drawn, with lines at least 2 px
wide, and a grid gives every image at least its own pixel size, so no box thins out when the figure
is saved; the calling script chooses the matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]
GRID_DPI = 110


def draw_boxes(rgb: np.ndarray, xyxy: np.ndarray, cls: np.ndarray, scale: int) -> np.ndarray:
    """The image upscaled `scale` x (nearest) with one class-coloured rectangle per box."""
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    pen = ImageDraw.Draw(image)
    for box, c in zip(xyxy * scale, cls):
        pen.rectangle([float(v) for v in box], outline=PALETTE[int(c) % len(PALETTE)], width=max(2, scale))
    return np.asarray(image)


def image_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str],
               col_titles: Sequence[str], legend: Sequence[str], title: str = "") -> None:
    """Save a grid of images (rows x cols) with titles, a class-colour legend (none if empty) and a title."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    largest = max(max(image.shape[:2]) for row in rows for image in row)
    cell = max(1.6, largest / GRID_DPI)  # inches per image: never fewer than its pixels
    gap, legend_in, side = 0.05, 0.6 if legend else 0.1, 0.98
    title_in = 0.3 + (0.25 if title else 0)  # column titles, and the figure's title above them
    width = cell * (n_cols + gap * (n_cols - 1)) / side
    height = cell * (n_rows + 2 * gap * (n_rows - 1)) + title_in + legend_in
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=(1 - side) / 2, right=1 - (1 - side) / 2, wspace=gap, hspace=2 * gap,
                        top=1 - title_in / height, bottom=legend_in / height)
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
    if legend:
        handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(PALETTE[k % len(PALETTE)]) / 255)
                   for k in range(len(legend))]
        fig.legend(handles, legend, loc="lower center", ncol=len(legend), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8, y=1, va="top")
    fig.savefig(path, dpi=GRID_DPI, bbox_inches="tight")
    plt.close(fig)
