"""Stage sweep@<s>: one point of the guidance-scale sweep, rendered and measured.

    python -m pipelines.sweep_point --scale 3      # s as sweep.scales writes it (dvc.yaml's foreach)

Renders `sweep.per_class` images per class at guidance scale s (the `generate` settings with the
scale, sampler and steps replaced; augment.sweep) into <paths.sweep>/scale_<s>/ (images/,
manifest.csv, params.json, metrics.json) and writes the same metrics to
<paths.reports>/sweep/scale_<s>.json. Reads no other scale: adding one to `sweep.scales` reruns
no point that was already there.
"""

from __future__ import annotations

import sys

from augment.gen_metrics import measure_generated
from augment.generate import load_models
from augment.precision import resolved_settings
from augment.settings import GenerateSettings, GenMetricsSettings, SweepSettings
from augment.sweep import point_settings, render_point
from augment.tradeoff import point_summary, scale_dir_name
from core.errors import StageError
from core.io import atomic_dir, write_csv, write_json
from core.params import load_yaml, section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, load_manifest
from scenes.synthetic import read_generated


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--scale", required=True, help="the guidance scale, as sweep.scales writes it"))
    scale = load_yaml(args.scale)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise StageError(f"sweep_point: --scale {args.scale}: not a guidance scale (a number >= 0)")
    sweep = section(SweepSettings, "sweep", params)
    metrics_settings = section(GenMetricsSettings, "gen_metrics", params)
    names = class_names(paths.prepared)
    settings = resolved_settings(point_settings(section(GenerateSettings, "generate", params), sweep, scale, names),
                                 "cpu", f"sweep@{scale}")
    models = load_models(paths.unet, paths.classifier, paths.judge, names, precision=settings.mixed_precision)

    with atomic_dir(paths.sweep / scale_dir_name(scale)) as out_dir:
        write_csv(out_dir / "manifest.csv", render_point(models, settings, names, out_dir))
        write_json(out_dir / "params.json", {"generate": settings, "gen_metrics": metrics_settings})
        real = load_manifest(paths.prepared, (metrics_settings.real_split,))
        report = measure_generated(metrics_settings, models.judge, real, {"sweep": read_generated(out_dir, names)}, names)
        summary = point_summary(scale, report)
        write_json(out_dir / "metrics.json", summary)
    write_json(paths.reports / "sweep" / f"{scale_dir_name(scale)}.json", summary)
    print(f"sweep s={scale}: FD {summary['fd']}, precision {summary['precision']}, recall {summary['recall']}, "
          f"judge hit rate {summary['judge_hit_rate']} ({summary['extractor']} features)")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
