"""Stage generate: classifier-guided synthetic images, their manifest and the hit-rate report.

    python -m pipelines.generate                                     # one process
    accelerate launch --num_processes N -m pipelines.generate        # N disjoint shards, same images

Outputs: data/synthetic/images/<image_id>.png + params.json, data/synthetic/manifest.csv (guided
images only, `target` always a class name), data/synthetic/control/ (the unguided controls:
images/ + manifest.csv with guidance_scale 0, same seeds as their guided twins) and
reports/generation.json (judge hit rates, augment.generate.report).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from augment.generate import GenerateSettings, load_models, plan_images, plan_quota, render_shard, write_outputs
from detection.prepared import class_names, load_manifest
from pipelines.stage import atomic_dirs, read_params, run_stage, section, write_json

PREPARED = Path("data/prepared")
UNET, CLASSIFIER, JUDGE = Path("models/unet"), Path("models/classifier"), Path("models/judge")
SYNTHETIC = Path("data/synthetic")
REPORT = Path("reports/generation.json")


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    settings = section(GenerateSettings, "generate", read_params(args.params))
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: gloo shards under torchrun
    names = class_names(PREPARED)
    quota = plan_quota(settings, names, load_manifest(PREPARED, ("train",))["tags"])
    jobs = plan_images(quota, names, settings)
    models = load_models(UNET, CLASSIFIER, JUDGE, names, state.device)

    outs = [SYNTHETIC / "images", SYNTHETIC / "control"]
    staging = atomic_dirs(*outs) if state.is_main_process else contextlib.nullcontext(outs)
    with staging as dirs:
        images_dir, control_dir = broadcast_object_list(list(dirs))  # the main process's temp dirs
        shard = render_shard(models, settings, jobs, images_dir, control_dir, state.process_index,
                             state.num_processes, progress=state.is_main_process)
        rendered = gather_object(shard)
        if state.is_main_process:
            summary = write_outputs(rendered, settings, quota, names, images_dir, control_dir,
                                    SYNTHETIC / "manifest.csv")
            write_json(REPORT, summary)
    state.wait_for_everyone()
    if state.is_main_process:
        overall = summary["overall"]
        print(f"generated {overall['guided']['n']} guided + {overall['control']['n']} control images "
              f"({settings.sampler}, {settings.steps} steps, s={settings.guidance_scale}); judge hit rate "
              f"guided {overall['guided_paired']['hit_rate']} vs control {overall['control']['hit_rate']} "
              f"on the same seeds; see {REPORT}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
