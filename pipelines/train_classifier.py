"""Stages train_classifier and train_judge: the noise-aware guidance classifier, or the clean judge.

    python -m pipelines.train_classifier --section classifier   # noised, for guidance
    python -m pipelines.train_classifier --section judge        # t = 0, scores and features only
    python -m pipelines.train_classifier --section patch_classifier   # the same two on crops at the
    python -m pipelines.train_classifier --section patch_judge        #   detector's scale (augment.patches)

The classifier trains on prepared train + tagged images (never the `unlabelled` ones: their tags are
unknown) noised with the UNet's schedule (<paths.unet>/scheduler), its encoder started from the UNet's weights when
`classifier.init_from_unet` is true. The judge is the same model with noise off and its own
seed, never tied to the generator. The patch sections use <paths.patch_unet> for the schedule and
the encoder. Writes <paths.classifier | judge | patch_classifier | patch_judge>/ (save_pretrained +
params.json) and <paths.reports>/<section>.json (per-class AP and accuracy per noise bucket on val).
"""

from __future__ import annotations

import sys

from augment.train_classifier import ClassifierTrainConfig, PatchClassifierTrainConfig, train_classifier
from augment.training import without_run_details
from core.errors import StageError
from core.io import atomic_dir, write_json
from core.params import section
from pipelines.stage import run_stage, stage_args

SECTIONS = ("classifier", "judge", "patch_classifier", "patch_judge")


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--section", choices=SECTIONS, default="classifier", help="params section to train"))
    name = args.section
    patch = name.startswith("patch_")
    cfg = section(PatchClassifierTrainConfig if patch else ClassifierTrainConfig, name, params)
    guides = name.endswith("classifier")
    if cfg.noised != guides:
        raise StageError(f"params.yaml: {name}.noised: must be {guides} for train_{name}")
    model_dir = getattr(paths, name)
    result = train_classifier(cfg, name, paths.prepared, paths.patch_unet if patch else paths.unet)
    if result.is_main:
        with atomic_dir(model_dir) as out:
            result.model.save_pretrained(out)
            write_json(out / "params.json", {name: cfg, "training": without_run_details(result.report)})
        write_json(paths.reports / f"{name}.json", result.report)
        print(f"train_{name}: {result.report['steps']} steps ({result.report['stop_reason']}) -> {model_dir}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
