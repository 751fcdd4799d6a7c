"""Stage `evaluate`: every YOLO variant and seed on the held-out `test` split; deltas vs the reference; report.

Reads <paths.prepared> (test split, class names), <paths.yolo>/<variant>/seed_<s>/best.pt for
every variant in `evaluate.variants` and seed in `yolo.seeds`, <paths.pseudo>/synthetic (figure
only), and for the report's synthetic-image part <paths.reports>/generation.json,
gen_metrics.json, upsample.json, inpaint.json, realism.json, copypaste.json and sweep/.
Writes <paths.metrics>/<variant>.json (the DVC metrics, committed to git: seed means and the
mAP50 delta with its interval), and in <paths.reports>: summary.json (per seed, per class AP50,
both deltas, void flags, the budget), evaluation.json (everything: per seed, per class, spreads,
all deltas, and the settings), per_class.csv, pr/<class>.csv and yolo_loss/<variant>.csv (DVC
plots), report.md and figures/. Prints the verdict lines. Params: `evaluate`, `yolo.seeds`,
`yolo.train.imgsz`.
"""

from __future__ import annotations

import sys

import matplotlib

from augment.report import synthetic_section
from core.errors import warn
from core.io import atomic_dirs, write_json, write_text
from core.params import section
from detection import evaluate, report
from detection.yolo import YoloParams
from pipelines.stage import Launch, run_stage, stage_args
from scenes.prepared import class_names


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    settings = section(evaluate.EvaluateSettings, "evaluate", params)
    yolo = section(YoloParams, "yolo", params)
    evaluate.variants_present(settings.variants, yolo.seeds, paths.yolo)
    names = class_names(paths.prepared)
    result = evaluate.evaluate(paths.prepared, paths.yolo, names, settings, yolo.seeds, yolo.train.imgsz,
                               workers=section(Launch, "launch", params).torch_threads)
    void = evaluate.void_comparisons(result, settings.reference_floor)
    reports = paths.reports
    with atomic_dirs(reports / "figures", reports / "pr", reports / "yolo_loss", paths.metrics) as (
            figures, pr_dir, loss_dir, metrics_dir):
        evaluate.write_pr_curves(result, pr_dir)
        evaluate.write_training_loss(result, paths.yolo, loss_dir)
        for variant, record in evaluate.variant_metrics(result).items():
            write_json(metrics_dir / f"{variant}.json", record)
        markdown = (report.write_report(result, settings, paths.pseudo / "synthetic", figures, "figures", void)
                    + synthetic_section(reports))
    write_text(reports / "per_class.csv", evaluate.per_class_frame(result).to_csv(index=False))
    write_text(reports / "report.md", markdown)
    write_json(reports / "evaluation.json", {**evaluate.evaluation_json(result), "void": void, "settings": {
        "evaluate": settings, "seeds": yolo.seeds, "imgsz": yolo.train.imgsz}})
    write_json(reports / "summary.json", evaluate.summary_json(result, void))
    for reason in void.values():
        warn("evaluate", reason)
    for line in report.verdict_lines(result, void):
        print(f"evaluate: {line}")
    print(f"evaluate: report {reports / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
