"""The guidance-scale trade-off sweep: a few images per class at each scale s, then their metrics.

Classifier guidance trades diversity for class fidelity (Dhariwal & Nichol 2021, section 5.1 and
Fig. 4: larger scales raise precision / IS and lower recall). Each sweep point renders
`sweep.per_class` images per class with the `generate` settings, except for the scale (and the
sweep's cheaper sampler / steps), through `augment.generate` (`dataclasses.replace` on its
`GenerateSettings`), into `data/sweep/scale_<s>/`, and measures them with `augment.gen_metrics`.
Image k of class c has the same seed at every scale, so the points differ only by s.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

from augment.generate import Models, manifest, plan_images, render_shard
from augment.settings import GenerateSettings, SweepSettings


def point_settings(base: GenerateSettings, sweep: SweepSettings, scale: float,
                   class_names: Sequence[str]) -> GenerateSettings:
    """The generate settings of one sweep point: scale s, `per_class` images per class, no controls."""
    return dataclasses.replace(
        base, guidance_scale=float(scale), sampler=sweep.sampler, steps=sweep.steps,
        eta=base.eta if sweep.sampler == "ddim" else 0.0,
        quota={name: sweep.per_class for name in class_names}, control_per_class=0,
        balance_factor=0.0, min_per_class=0,  # unused beside an explicit quota: not read from `generate`
    )


def render_point(models: Models, settings: GenerateSettings, class_names: Sequence[str],
                 out_dir: Path) -> pd.DataFrame:
    """Render the point's images into `out_dir/images/` and return their manifest (augment.generate)."""
    jobs = plan_images(dict(settings.quota), class_names, settings)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as no_controls:
        rendered = render_shard(models, settings, jobs, out_dir / "images", Path(no_controls))
    return manifest(rendered, settings, class_names)
