"""Stage sweep@<s>: one point of the guidance-scale sweep, rendered and measured.

    python -m pipelines.sweep_point --scale 3      # s exactly as written in sweep.scales

Renders `sweep.per_class` images per class at guidance scale s (the `generate` settings with the
scale, sampler and steps replaced; augment.sweep) into data/sweep/scale_<s>/ (images/,
manifest.csv, params.json, metrics.json) and writes the same metrics to reports/sweep/scale_<s>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.gen_metrics import GenMetricsSettings, measure_generated, read_generated
from augment.generate import GenerateSettings, load_models
from augment.sweep import SweepSettings, point_settings, point_summary, render_point, scale_dir_name
from detection.prepared import class_names, load_manifest
from pipelines.stage import StageError, atomic_dir, read_params, run_stage, section, write_csv, write_json

PREPARED = Path("data/prepared")
UNET, CLASSIFIER, JUDGE = Path("models/unet"), Path("models/classifier"), Path("models/judge")
SWEEP, REPORTS = Path("data/sweep"), Path("reports/sweep")


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scale", required=True, help="one entry of sweep.scales, as written there")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    sweep = section(SweepSettings, "sweep", params)
    scale = next((s for s in sweep.scales if str(s) == args.scale), None)
    if scale is None:
        raise StageError(f"params.yaml: sweep.scales: --scale {args.scale} is not one of {list(sweep.scales)}")
    metrics_settings = section(GenMetricsSettings, "gen_metrics", params)
    names = class_names(PREPARED)
    models = load_models(UNET, CLASSIFIER, JUDGE, names)
    settings = point_settings(section(GenerateSettings, "generate", params), sweep, scale, names)

    with atomic_dir(SWEEP / scale_dir_name(scale)) as out_dir:
        write_csv(out_dir / "manifest.csv", render_point(models, settings, names, out_dir))
        write_json(out_dir / "params.json", {"generate": settings, "sweep": sweep, "gen_metrics": metrics_settings})
        real = load_manifest(PREPARED, (metrics_settings.real_split,))
        report = measure_generated(metrics_settings, models.judge, real, {"sweep": read_generated(out_dir, names)}, names)
        summary = point_summary(scale, report)
        write_json(out_dir / "metrics.json", summary)
    write_json(REPORTS / f"{scale_dir_name(scale)}.json", summary)
    print(f"sweep s={scale}: FD {summary['fd']}, precision {summary['precision']}, recall {summary['recall']}, "
          f"judge hit rate {summary['judge_hit_rate']} ({summary['extractor']} features)")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
