"""What every stage script shares: its command line, the artifact paths, and the exit on a bad input.

A stage script parses `--params`, reads its sections into frozen dataclasses (`core.params`),
calls one library function and writes its outputs atomically (`core.io`); a `StageError` becomes
one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import StageError
from core.params import read_params, section


@dataclass(frozen=True)
class Paths:
    """params.yaml `paths`: where every artifact lives; dvc.yaml reads the same entries (`${paths.*}`)."""

    demo: Path               # demo_data output, a COCO dataset
    prepared: Path           # import output, the prepared-dataset contract (detection.prepared)
    unet: Path               # models: save_pretrained folders
    unet_checkpoints: Path
    classifier: Path
    judge: Path
    yolo: Path               # one folder per variant
    synthetic: Path          # generate output (augment.synthetic)
    sweep: Path              # one folder per guidance scale
    pseudo: Path             # pseudo-labelled pools: synthetic/, tagged/
    reports: Path            # every report, metric and figure


def stage_args(description: str, argv: list[str] | None,
               add: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, dict[str, Any], Paths]:
    """Parse `--params` (plus what `add` adds); returns the args, the whole params file and its paths."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="settings file")
    if add is not None:
        add(parser)
    args = parser.parse_args(argv)
    params = read_params(args.params)
    return args, params, section(Paths, "paths", params)


def run_stage(main_body: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a stage body; a StageError becomes one line on stderr and exit code 2."""
    try:
        main_body(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
