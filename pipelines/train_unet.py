"""Stage train_unet: the unconditional diffusion UNet on prepared train + tagged images.

Resumable: <paths.unet_checkpoints>/ (persist) holds the last checkpoints; a killed stage started
again continues from the newest one and ends at the same step. Works under `accelerate launch`
(only the main process writes outputs): <paths.unet>/ and <paths.reports>/unet/loss.csv.
"""

from __future__ import annotations

import sys

from augment.train_unet import UNetTrainConfig, train_unet, write_unet_outputs
from core.io import atomic_dirs
from core.params import section
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    cfg = section(UNetTrainConfig, "unet", params)
    result = train_unet(cfg, paths.prepared, paths.unet_checkpoints)
    if result.is_main:
        with atomic_dirs(paths.unet, paths.reports / "unet") as (model_dir, report_dir):
            write_unet_outputs(result, cfg, model_dir, report_dir)
        print(f"train_unet: {result.summary['steps']} steps ({result.summary['stop_reason']}) -> {paths.unet}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
