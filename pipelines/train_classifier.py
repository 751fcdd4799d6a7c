"""Stages train_classifier and train_judge: the noise-aware guidance classifier, or the clean judge.

    python -m pipelines.train_classifier --section classifier   # noised, for guidance
    python -m pipelines.train_classifier --section judge        # t = 0, scores and features only

The classifier trains on prepared train + tagged images noised with the UNet's schedule
(<paths.unet>/scheduler), its encoder started from the UNet's weights when
`classifier.init_from_unet` is true. The judge is the same model with noise off and its own
seed, never tied to the generator. Writes <paths.classifier | paths.judge>/ (save_pretrained +
params.json) and <paths.reports>/<section>.json (per-class AP and accuracy per noise bucket on val).
"""

from __future__ import annotations

import sys

from augment.train_classifier import ClassifierTrainConfig, train_classifier
from augment.training import without_run_details
from core.errors import StageError
from core.io import atomic_dir, write_json
from core.params import section
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--section", choices=("classifier", "judge"), default="classifier", help="params section to train"))
    name = args.section
    cfg = section(ClassifierTrainConfig, name, params)
    if cfg.noised != (name == "classifier"):
        raise StageError(f"params.yaml: {name}.noised: must be {name == 'classifier'} for train_{name}")
    model_dir = paths.classifier if name == "classifier" else paths.judge
    result = train_classifier(cfg, name, paths.prepared, paths.unet)
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
