"""Stage train_upsampler: ADM's super-resolution model, from the generative resolution to the detector's.

Trains `augment.superres` on crops of the prepared train + tagged + unlabelled images (params `upsampler`) with
the scene UNet's machinery: resumable from <paths.upsampler_checkpoints>/, `accelerate launch`
ready (only the main process writes). Writes <paths.upsampler>/ (the EMA model, upsampler.json,
params.json, samples.png: real | bicubic | upsampled `val` images) and <paths.reports>/upsampler/
(loss.csv, training.json).
"""

from __future__ import annotations

import sys

from augment.superres import PatchesWithLowRes, UpsamplerTrainConfig, write_upsampler_outputs
from augment.train_unet import train_unet
from core.errors import StageError
from core.io import atomic_dirs
from core.params import section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import image_size


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    cfg = section(UpsamplerTrainConfig, "upsampler", params)
    prepared_px = image_size(paths.prepared)  # low_res equals unet.image_size: section() checks that
    if cfg.image_size != prepared_px:
        raise StageError(f"params.yaml: upsampler.image_size: {cfg.image_size} must be the prepared images' "
                         f"{prepared_px} px")
    result = train_unet(cfg, paths.prepared, paths.upsampler_checkpoints, view=PatchesWithLowRes(cfg))
    if result.is_main:
        with atomic_dirs(paths.upsampler, paths.reports / "upsampler") as (model_dir, report_dir):
            write_upsampler_outputs(result, cfg, paths.prepared, model_dir, report_dir)
        print(f"train_upsampler: {result.summary['steps']} steps ({result.summary['stop_reason']}), "
              f"{cfg.low_res} -> {cfg.image_size} px -> {paths.upsampler}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
