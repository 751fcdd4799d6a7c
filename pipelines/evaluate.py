"""Stage `evaluate`: every YOLO variant on the held-out `test` split; deltas vs baseline; report.

Reads `data/prepared` (test split, class names), `models/yolo/<variant>/best.pt`,
`data/pseudo/synthetic` (figure only), and for the report's synthetic-image part
`reports/generation.json`, `reports/gen_metrics.json` and `reports/sweep/`. Writes `reports/metrics.json` (DVC metrics),
`reports/per_class.csv`, `reports/pr/<variant>/<class>.csv` (DVC plots: recall, precision),
`reports/report.md` + `reports/figures/`. Params: `evaluate`, `yolo.train.imgsz`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.report import synthetic_section
from detection import evaluate, report
from detection.prepared import class_names
from detection.yolo import YoloParams
from pipelines.stage import atomic_dirs, read_params, run_stage, section, write_json, write_text

PREPARED = "data/prepared"
MODELS = "models/yolo"
PSEUDO = Path("data/pseudo/synthetic")
REPORTS = Path("reports")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    settings = section(evaluate.EvaluateSettings, "evaluate", params)
    imgsz = section(YoloParams, "yolo", params).train.imgsz
    evaluate.variants_present(settings.variants, MODELS)
    names = class_names(PREPARED)
    result = evaluate.evaluate(PREPARED, MODELS, names, settings, imgsz)
    with atomic_dirs(REPORTS / "figures", REPORTS / "pr") as (figures, pr_dir):
        evaluate.write_pr_curves(result, pr_dir)
        markdown = report.write_report(result, settings, PSEUDO, figures, link="figures") + synthetic_section(REPORTS)
    write_text(REPORTS / "per_class.csv", evaluate.per_class_frame(result).to_csv(index=False))
    write_text(REPORTS / "report.md", markdown)
    write_json(REPORTS / "metrics.json", {**evaluate.metrics_json(result),
                                          "settings": {"evaluate": settings, "imgsz": imgsz}})


if __name__ == "__main__":
    sys.exit(run_stage(main))
