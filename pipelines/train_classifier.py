"""Stage train_classifier: the noise-aware litter classifier used for guidance.

Trains on prepared train + tagged images noised with the UNet's schedule (models/unet/scheduler),
its encoder started from the UNet's weights when `classifier.init_from_unet` is true;
writes models/classifier/ (config.json + model.safetensors + params.json) and
reports/classifier.json (per-class AP and accuracy per noise-level bucket on val).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.train_classifier import ClassifierTrainConfig, train_classifier
from pipelines.stage import StageError, atomic_dir, read_params, run_stage, section, write_json

PREPARED = Path("data/prepared")
UNET_DIR = Path("models/unet")


def run(name: str, model_dir: Path, report: Path, argv: list[str] | None) -> None:
    """Train section `name` of params.yaml; shared by train_classifier and train_judge."""
    parser = argparse.ArgumentParser(description=f"stage train_{name}")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = section(ClassifierTrainConfig, name, read_params(args.params))
    if cfg.noised != (name == "classifier"):
        raise StageError(f"params.yaml: {name}.noised: must be {name == 'classifier'} for train_{name}")
    result = train_classifier(cfg, PREPARED, UNET_DIR if cfg.noised else None)
    if result.is_main:
        with atomic_dir(model_dir) as out:
            result.model.save(out)
            write_json(out / "params.json", {name: cfg, "training": result.report})
        write_json(report, result.report)
        print(f"train_{name}: {result.report['steps']} steps ({result.report['stop_reason']}) -> {model_dir}")


def main(argv: list[str] | None = None) -> None:
    run("classifier", Path("models/classifier"), Path("reports/classifier.json"), argv)


if __name__ == "__main__":
    sys.exit(run_stage(main))
