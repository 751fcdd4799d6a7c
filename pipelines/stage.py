"""What every stage script shares: its command line, the artifact paths, and the exit on a bad input.

A stage script parses `--params`, reads its sections into frozen dataclasses (`core.params`),
calls one library function and writes its outputs atomically (`core.io`); a `StageError` becomes
one line on stderr and exit code 2.

Every stage runs torch with `launch.torch_threads` intra-op threads, whatever the machine has:
CPU kernels split their sums by thread count, so the same params give the same weights and images
only at the same count (dvc.lock records it as a param of every torch stage). A stage that imports
torch later (through ultralytics) gets the count through `OMP_NUM_THREADS`, which torch reads when
it loads; `detection.yolo.ultralytics_offline` keeps ultralytics from resetting it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import StageError
from core.params import check_at_least, read_params, section


@dataclass(frozen=True)
class Paths:
    """params.yaml `paths`: where every artifact lives; dvc.yaml reads the same entries (`${paths.*}`)."""

    demo: Path               # demo_data output, a COCO dataset
    prepared: Path           # import output, the prepared-dataset contract (scenes.prepared)
    unet: Path               # models: save_pretrained folders
    unet_checkpoints: Path
    upsampler: Path
    upsampler_checkpoints: Path
    classifier: Path
    judge: Path
    patch_unet: Path         # the patch models (augment.patches): crops at the detector's scale, for inpaint
    patch_unet_checkpoints: Path
    patch_classifier: Path
    patch_judge: Path
    yolo: Path               # one folder per variant
    synthetic: Path          # generate output (scenes.synthetic)
    upsampled: Path          # upsample output: the guided images at the detector's resolution (same contract)
    sweep: Path              # one folder per guidance scale
    pseudo: Path             # the variants' added images: synthetic/, tagged/ (pseudo-labelled), copypaste/
    reports: Path            # every report, plot and figure (git-ignored)
    metrics: Path            # the DVC metrics, one small JSON per variant, committed to git like dvc.lock


@dataclass(frozen=True)
class Launch:
    """params.yaml `launch`: how the stages start and how many CPU threads torch uses."""

    accelerate: str          # the command the accelerate stages start under (pipelines.launch, at run time)
    torch_threads: int       # intra-op threads of every stage (torch.set_num_threads)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "torch_threads")


def stage_args(description: str, argv: list[str] | None,
               add: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, dict[str, Any], Paths]:
    """Parse `--params` (plus what `add` adds); returns the args, the whole params file and its paths."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="settings file")
    if add is not None:
        add(parser)
    args = parser.parse_args(argv)
    params = read_params(args.params)
    launch = section(Launch, "launch", params)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(launch.torch_threads)
    else:  # torch not loaded yet, perhaps never (demo_data, import): it reads the count when it loads
        os.environ["OMP_NUM_THREADS"] = str(launch.torch_threads)
    return args, params, section(Paths, "paths", params)


def run_stage(main_body: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a stage body; a StageError becomes one line on stderr and exit code 2."""
    try:
        main_body(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
