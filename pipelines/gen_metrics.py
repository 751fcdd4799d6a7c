"""Stage gen_metrics: FD / KID / precision / recall / judge IS-style score and hit rate of the synthetic images.

    python -m pipelines.gen_metrics

Compares <paths.synthetic> (guided images) and <paths.synthetic>/control (unguided controls, same
seeds, when present) with the real `gen_metrics.real_split` images of <paths.prepared>, overall
and per target class, in the feature space of `gen_metrics.extractor` (augment.gen_metrics).
Output: <paths.reports>/gen_metrics.json (every figure names its extractor).
"""

from __future__ import annotations

import sys

from augment.classifier import load_classifier
from augment.gen_metrics import measure_generated
from augment.settings import GenMetricsSettings
from core.io import write_json
from core.params import section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, load_manifest
from scenes.synthetic import read_generated


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    settings = section(GenMetricsSettings, "gen_metrics", params)
    names = class_names(paths.prepared)
    generated = {"guided": read_generated(paths.synthetic, names)}
    if (paths.synthetic / "control" / "manifest.csv").is_file():
        generated["control"] = read_generated(paths.synthetic / "control", names)
    real = load_manifest(paths.prepared, (settings.real_split,))
    report = measure_generated(settings, load_classifier(paths.judge), real, generated, names)
    write_json(paths.reports / "gen_metrics.json", report)
    overall = report["sets"]["guided"]["overall"]
    print(f"gen_metrics ({settings.extractor} features): FD {overall['fd']}, precision {overall['precision']}, "
          f"recall {overall['recall']}, judge hit rate {overall['judge_hit_rate']}; see "
          f"{paths.reports / 'gen_metrics.json'}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
