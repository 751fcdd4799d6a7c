"""Stage gen_metrics: FD / KID / precision / recall / judge IS-style score and hit rate of the synthetic images.

    python -m pipelines.gen_metrics

Compares data/synthetic (guided images) and data/synthetic/control (unguided controls, same
seeds, when present) with the real `gen_metrics.real_split` images of data/prepared, overall and
per target class, in the feature space of `gen_metrics.extractor` (augment.gen_metrics).
Output: reports/gen_metrics.json (every figure names its extractor).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.classifier import load_classifier
from augment.gen_metrics import GenMetricsSettings, measure_generated, read_generated
from detection.prepared import class_names, load_manifest
from pipelines.stage import read_params, run_stage, section, write_json

PREPARED, JUDGE = Path("data/prepared"), Path("models/judge")
SYNTHETIC = Path("data/synthetic")
REPORT = Path("reports/gen_metrics.json")


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    settings = section(GenMetricsSettings, "gen_metrics", read_params(args.params))
    names = class_names(PREPARED)
    generated = {"guided": read_generated(SYNTHETIC, names)}
    if (SYNTHETIC / "control" / "manifest.csv").is_file():
        generated["control"] = read_generated(SYNTHETIC / "control", names)
    real = load_manifest(PREPARED, (settings.real_split,))
    report = measure_generated(settings, load_classifier(JUDGE), real, generated, names)
    write_json(REPORT, report)
    overall = report["sets"]["guided"]["overall"]
    print(f"gen_metrics ({settings.extractor} features): FD {overall['fd']}, precision {overall['precision']}, "
          f"recall {overall['recall']}, judge hit rate {overall['judge_hit_rate']}; see {REPORT}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
