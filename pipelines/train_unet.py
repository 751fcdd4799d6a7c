"""Stages train_unet and train_patch_unet: the unconditional diffusion UNet on prepared train + tagged images
(the scene UNet also on the `unlabelled` pool's; the patch UNet's crops come only from images whose boxes are known).

    python -m pipelines.train_unet                        # section unet: whole images (scenes)
    python -m pipelines.train_unet --section patch_unet   # crops at the detector's scale (augment.patches)

Resumable: <paths.unet_checkpoints>/ (<paths.patch_unet_checkpoints>/; persist) holds the last
checkpoints; a killed stage started again continues from the newest one and ends at the same step.
Works under `accelerate launch` (only the main process writes outputs): <paths.unet>/
(<paths.patch_unet>/) and <paths.reports>/<section>/loss.csv.
"""

from __future__ import annotations

import sys

from augment.train_unet import PatchUNetTrainConfig, UNetTrainConfig, WholeImages, train_unet, write_unet_outputs
from core.io import atomic_dirs
from core.params import section
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--section", choices=("unet", "patch_unet"), default="unet", help="params section to train"))
    name = args.section
    cfg = section(PatchUNetTrainConfig if name == "patch_unet" else UNetTrainConfig, name, params)
    model_dir, checkpoints = getattr(paths, name), getattr(paths, f"{name}_checkpoints")
    start = paths.unet if getattr(cfg, "init_from_unet", False) else None
    result = train_unet(cfg, paths.prepared, checkpoints, WholeImages(start))
    if result.is_main:
        with atomic_dirs(model_dir, paths.reports / name) as (out_dir, report_dir):
            write_unet_outputs(result, cfg, out_dir, report_dir, name)
        print(f"train_{name}: {result.summary['steps']} steps ({result.summary['stop_reason']}) -> {model_dir}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
