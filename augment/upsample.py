"""The generated images brought to the detector's resolution, and how the upsampler compares with
plain resampling.

Every guided image of `generate` (made at the generative resolution) is upsampled by the method
of `upsample.method`: `diffusion`, the trained upsampler (`augment.superres.Upsampler`, DDIM in
`upsample.steps` steps, image i seeded from (seed, image_id) so the batching never changes an
image), or `bicubic`, the plain resampling every later stage would otherwise apply
(`scenes.prepared.resample_rgb`). With `diffusion`, both are measured against the real
`gen_metrics.real_split` images at the detector's resolution, in the features of
`gen_metrics.extractor`: FD, KID, precision/recall, and the edge energy (mean absolute difference
of neighbouring pixels) relative to the real images' (1.0: as sharp as real; bicubic is blurrier).
The judge learnt at the generative resolution, so its features at the detector's compare the two
methods with each other, not with an absolute scale. The report holds no timings, so the same
inputs give the same bytes; the stage prints the milliseconds per image.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from augment.gen_metrics import as_unit_batch, build_extractor, distances, extract
from augment.settings import GenMetricsSettings, UpsampleSettings
from augment.superres import Upsampler, upsample_images
from core.errors import StageError
from scenes.prepared import read_rgb, resample_rgb
from scenes.synthetic import MANIFEST_COLUMNS

NOTE = ("Features of the detector-resolution images; the judge learnt at the generative resolution, so "
        "these figures rank the two methods against each other rather than on an absolute scale. Edge "
        "energy: mean absolute difference of neighbouring pixels relative to the real images' (1.0 = as sharp).")


def image_seed(seed: int, image_id: str) -> int:
    """The upsampler's noise seed for one image: depends on nothing but (seed, image_id)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(image_id.encode())]).generate_state(1)[0])


def edge_energy(images: torch.Tensor) -> float:
    """Mean absolute difference of horizontally and vertically neighbouring pixels, images [N, 3, H, W]."""
    return float(((images[..., 1:, :] - images[..., :-1, :]).abs().mean()
                  + (images[..., :, 1:] - images[..., :, :-1]).abs().mean()) / 2)


def upsampled(generated: pd.DataFrame, settings: UpsampleSettings, upsampler: Upsampler | None,
              size: int) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """{method: uint8 images at size x size} for `bicubic` and, with an upsampler, `diffusion`; the
    milliseconds per image each took."""
    low = [read_rgb(path) for path in generated["abspath"]]
    for path, image in zip(generated["abspath"], low):
        if upsampler is not None and image.shape[0] * upsampler.factor != size:
            raise StageError(f"{path}: {image.shape[0]} px x the upsampler's factor {upsampler.factor} is not the "
                             f"prepared images' {size} px; train the upsampler for this generative resolution")
    results, ms = {}, {}
    started = time.perf_counter()
    results["bicubic"] = [resample_rgb(image, size) for image in low]
    ms["bicubic"] = (time.perf_counter() - started) * 1000 / max(len(low), 1)
    if upsampler is not None:
        started = time.perf_counter()
        seeds = [image_seed(settings.seed, image_id) for image_id in generated["image_id"]]
        results["diffusion"] = upsample_images(upsampler, low, seeds, settings.steps, settings.batch_size)
        ms["diffusion"] = (time.perf_counter() - started) * 1000 / max(len(low), 1)
    return results, ms


def compare_methods(results: dict[str, list[np.ndarray]], real: Sequence[np.ndarray], extractor: nn.Module,
                    settings: GenMetricsSettings) -> dict[str, dict]:
    """Per method: FD / KID / precision / recall against `real` and the edge energy relative to real."""
    real_batch = as_unit_batch(real)
    real_features, real_edges = extract(extractor, real_batch, settings.batch_size), edge_energy(real_batch)
    out = {}
    for method, images in results.items():
        batch = as_unit_batch(images)
        out[method] = {**distances(real_features, extract(extractor, batch, settings.batch_size), settings),
                       "edge_energy_vs_real": round(edge_energy(batch) / real_edges, 4)}
    return out


def write_upsampled(generated: pd.DataFrame, images: Sequence[np.ndarray], out_dir: Path) -> pd.DataFrame:
    """out_dir/images/<image_id>.png + manifest.csv: the synthetic-image contract (scenes.synthetic)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for image_id, image in zip(generated["image_id"], images):
        Image.fromarray(image).save(out_dir / "images" / f"{image_id}.png")
    manifest = generated.assign(path=[f"images/{i}.png" for i in generated["image_id"]])
    manifest = manifest[[c for c in MANIFEST_COLUMNS if c in manifest.columns]]
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    return manifest


def run(generated: pd.DataFrame, real_paths: Sequence[str], settings: UpsampleSettings,
        metrics: GenMetricsSettings, upsampler: Upsampler | None, judge: nn.Module, size: int,
        out_dir: Path) -> tuple[dict, dict[str, float]]:
    """Upsample `generated` (scenes.synthetic.read_generated) into out_dir with settings.method; the
    report (both methods compared when the upsampler is used) and each method's ms per image."""
    if generated.empty:
        raise StageError("upsample: generate made no guided images")
    if settings.method == "diffusion" and upsampler is None:
        raise StageError("upsample: method diffusion needs the trained upsampler")
    results, ms = upsampled(generated, settings, upsampler if settings.method == "diffusion" else None, size)
    write_upsampled(generated, results[settings.method], out_dir)
    real = [read_rgb(path, size) for path in real_paths]
    compared = compare_methods(results, real, build_extractor(metrics, judge), metrics)
    return {"method": settings.method, "image_size": size, "n_images": len(generated),
            "real_split": metrics.real_split, "extractor": metrics.extractor, "note": NOTE,
            "settings": settings, "methods": compared}, ms
