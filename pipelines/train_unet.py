"""Stage train_unet: the unconditional diffusion UNet on prepared train + tagged images.

Resumable: checkpoints/unet/ (persist) holds the last checkpoints; a killed stage started again
continues from the newest one and ends at the same step. Works under `accelerate launch`
(only the main process writes outputs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.train_unet import UNetTrainConfig, train_unet, write_unet_outputs
from pipelines.stage import atomic_dirs, read_params, run_stage, section

PREPARED = Path("data/prepared")
CHECKPOINTS = Path("checkpoints/unet")
MODEL_DIR = Path("models/unet")
REPORT_DIR = Path("reports/unet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = section(UNetTrainConfig, "unet", read_params(args.params))
    result = train_unet(cfg, PREPARED, CHECKPOINTS)
    if result.is_main:
        with atomic_dirs(MODEL_DIR, REPORT_DIR) as (model_dir, report_dir):
            write_unet_outputs(result, cfg, model_dir, report_dir)
        print(f"train_unet: {result.summary['steps']} steps ({result.summary['stop_reason']}) -> {MODEL_DIR}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
