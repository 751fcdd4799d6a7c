"""Sampler study: FD (judge features), judge hit rate and time per image, ddpm 250 vs ddim / dpmsolver++.

    .venv/bin/python bench/bench_samplers.py            # ddpm 250; ddim and dpmsolver++ at 10, 25, 50 steps
    .venv/bin/python bench/bench_samplers.py --quick    # fewer images, ddpm 250 + 10 / 25 steps

Runs on the trained demo models (models/unet, models/classifier, models/judge) and data/prepared,
from the repo root (or --root). Every configuration renders the same images (same seeds, guidance
scale from params.yaml `generate`, or --scale) through augment.generate and is measured with
augment.gen_metrics against the real `test` split. FD at this n is biased: compare rows only with
each other (same n). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.gen_metrics import measure_generated  # noqa: E402
from augment.generate import load_models  # noqa: E402
from augment.settings import GenerateSettings, GenMetricsSettings  # noqa: E402
from augment.sweep import render_point  # noqa: E402
from core.io import write_csv  # noqa: E402
from core.params import read_params, section  # noqa: E402
from pipelines.stage import Paths  # noqa: E402
from scenes.prepared import class_names, load_manifest  # noqa: E402
from scenes.synthetic import read_generated  # noqa: E402

FULL = [("ddpm", 250), ("ddim", 10), ("ddim", 25), ("ddim", 50),
        ("dpmsolver++", 10), ("dpmsolver++", 25), ("dpmsolver++", 50)]
QUICK = [("ddpm", 250), ("ddim", 10), ("ddim", 25), ("dpmsolver++", 10), ("dpmsolver++", 25)]


def run_config(models, base: GenerateSettings, names: list[str], metrics: GenMetricsSettings, real, sampler: str,
               steps: int) -> dict:
    settings = dataclasses.replace(base, sampler=sampler, steps=steps, eta=0.0, control_per_class=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        frame = render_point(models, settings, names, Path(tmp))
        seconds = time.perf_counter() - start
        write_csv(Path(tmp) / "manifest.csv", frame)
        report = measure_generated(metrics, models.judge, real, {"bench": read_generated(Path(tmp), names)}, names)
    overall = report["sets"]["bench"]["overall"]
    return {"sampler": sampler, "steps": steps, "n": overall["n_generated"], "fd": overall["fd"],
            "precision": overall["precision"], "recall": overall["recall"],
            "hit_rate": overall["judge_hit_rate"], "s_per_image": seconds / max(overall["n_generated"], 1)}


def table(rows: list[dict], n_real: int, scale: float) -> str:
    lines = [f"guidance scale {scale}; FD / precision / recall in judge features vs {n_real} real test images",
             "", "| sampler | steps | n | FD | precision | recall | judge hit rate | s / image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['n']} | {r['fd']:.3f} | {r['precision']} | {r['recall']} | "
              f"{r['hit_rate']:.2f} | {r['s_per_image']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images per class, 5 configurations")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (default 6, quick 2)")
    parser.add_argument("--scale", type=float, default=None, help="guidance scale (default: generate.guidance_scale)")
    parser.add_argument("--root", default=".", help="repo root holding params.yaml and the paths it names")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    params = read_params("params.yaml")
    paths = section(Paths, "paths", params)
    names = class_names(paths.prepared)
    per_class = args.per_class or (2 if args.quick else 6)
    base = section(GenerateSettings, "generate", params)
    base = dataclasses.replace(base, quota={name: per_class for name in names},
                               guidance_scale=base.guidance_scale if args.scale is None else args.scale)
    metrics = dataclasses.replace(section(GenMetricsSettings, "gen_metrics", params), extractor="judge")
    models = load_models(paths.unet, paths.classifier, paths.judge, names)
    real = load_manifest(paths.prepared, (metrics.real_split,))
    rows = []
    for sampler, steps in QUICK if args.quick else FULL:
        rows.append(run_config(models, base, names, metrics, real, sampler, steps))
        print(f"{sampler} {steps}: {rows[-1]['s_per_image']:.2f} s/image", file=sys.stderr, flush=True)
    print(table(rows, len(real), base.guidance_scale))


if __name__ == "__main__":
    main()
