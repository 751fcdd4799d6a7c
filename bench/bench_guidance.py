"""Does guidance work, per class? Paired judge hit rates of guided images vs same-seed controls.

    .venv/bin/python bench/bench_guidance.py --per-class 24 --scales 3 10 30
    .venv/bin/python bench/bench_guidance.py --classifier /tmp/clf_variant --judge /tmp/judge_variant

For each scale, renders `--per-class` guided images per class and their unguided twins (same seeds,
scale 0) through augment.generate with the `generate` params (sampler, steps, seed), and reports
per class: the judge hit rate of guided and control images, wins / losses and the exact one-sided
McNemar p-value (augment.generate.paired_test). Use it to compare guidance classifiers, judges and
scales on more pairs than the `generate` stage keeps; train a variant with e.g.
`dvc exp run -S classifier.lr=1e-3` and point --classifier at its models/classifier. Runs from the
repo root (or --root) on data/prepared and models/; prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.generate import load_models, plan_images, render_shard, report  # noqa: E402
from augment.settings import GenerateSettings  # noqa: E402
from core.params import read_params, section  # noqa: E402
from pipelines.stage import Paths  # noqa: E402
from scenes.prepared import class_names  # noqa: E402


def run_scales(models, base: GenerateSettings, names: list[str], scales: list[float]):
    """(scale, report) per scale; the unguided controls are the same at every scale, so rendered once."""
    controls = None
    for scale in scales:
        settings = dataclasses.replace(base, guidance_scale=scale, control_per_class=0 if controls else base.control_per_class)
        with tempfile.TemporaryDirectory() as tmp:
            rendered = render_shard(models, settings, plan_images(dict(settings.quota), names, settings),
                                    Path(tmp) / "guided", Path(tmp) / "control")
        controls = controls or [r for r in rendered if not r.job.guided]
        yield scale, report([r for r in rendered if r.job.guided] + controls, settings, names)


def rows(result: dict, scale: float) -> list[str]:
    lines = []
    for name, sets in {**result["per_class"], "overall": result["overall"]}.items():
        test = sets["paired_test"]
        lines.append(f"| {scale:g} | {name} | {sets['guided_paired']['n']} | {sets['guided_paired']['hit_rate']:.2f} | "
                     f"{sets['control']['hit_rate']:.2f} | {test['wins']} / {test['losses']} | {test['p_value']:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=24, help="guided images (and controls) per class")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="guidance scales (default: generate.guidance_scale)")
    parser.add_argument("--classifier", default=None, help="guidance classifier directory (default: paths.classifier)")
    parser.add_argument("--judge", default=None, help="judge directory (default: paths.judge)")
    parser.add_argument("--root", default=".", help="repo root holding params.yaml and the paths it names")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    params = read_params("params.yaml")
    paths = section(Paths, "paths", params)
    args.classifier, args.judge = args.classifier or paths.classifier, args.judge or paths.judge
    names = class_names(paths.prepared)
    base = section(GenerateSettings, "generate", params)
    base = dataclasses.replace(base, quota={name: args.per_class for name in names}, control_per_class=args.per_class)
    models = load_models(paths.unet, Path(args.classifier), Path(args.judge), names)
    print(f"classifier {args.classifier}, judge {args.judge}, {base.sampler} {base.steps} steps, seed {base.seed}")
    print("\n| scale | target | pairs | guided hit rate | control hit rate | wins / losses | McNemar p |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for scale, result in run_scales(models, base, names, args.scales or [base.guidance_scale]):
        print("\n".join(rows(result, scale)), flush=True)


if __name__ == "__main__":
    main()
