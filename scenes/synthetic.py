"""The synthetic-image contract that `generate` writes and later stages read.

    <folder>/manifest.csv    one row per image: MANIFEST_COLUMNS; `path` relative to <folder>
    <folder>/images/*.png    the images, at the generative models' resolution

`target` is the class the image was guided toward (for a control: its guided twin's class).
A generated image is a hit when the judge's p(target | image) >= HIT_THRESHOLD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from core.errors import StageError
from core.tables import read_table

MANIFEST_COLUMNS = ("image_id", "path", "target", "guidance_scale", "sampler", "steps", "seed",
                    "target_prob", "judge_prob")
HIT_THRESHOLD = 0.5


def read_generated(folder: Path | str, class_names: Sequence[str]) -> pd.DataFrame:
    """`folder/manifest.csv` with every target a known class and `abspath` (the image file) added."""
    folder = Path(folder)
    manifest_csv = folder / "manifest.csv"
    frame = read_table(manifest_csv, ("image_id", "path", "target"), made_by="generate",
                       text_columns=("image_id", "path", "target"))
    unknown = sorted(set(frame["target"]) - set(class_names))
    if unknown:
        raise StageError(f"{manifest_csv}: target(s) {', '.join(map(repr, unknown))} not in classes "
                         f"{', '.join(class_names)}")
    frame["abspath"] = [str(folder / p) for p in frame["path"]]
    return frame
