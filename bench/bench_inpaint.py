"""What RePaint's resampling costs and buys: insertions per minute and the share kept, per setting.

    .venv/bin/python bench/bench_inpaint.py --windows 64 --jump-n-sample 1 2 3
    .venv/bin/python bench/bench_inpaint.py --windows 32 --steps 25 50 --jump-length 5 10

Plans the `inpaint` stage's insertions (params `inpaint`, `patch_unet.crops`) on data/prepared with
the trained patch models (models/patch_*), takes the first `--windows` guided ones and renders them
once per combination of --steps / --jump-length / --jump-n-sample (every other setting from params),
timing only the rendering (augment.inpaint.render_batch: RePaint, measuring, judging). Prints a markdown
table: UNet calls per window, seconds, insertions per minute and the share kept (measured box and the
judge's hit). Runs from the repo root (or --root); time it alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from augment import inpaint  # noqa: E402
from augment.generate import load_models, plan_batches  # noqa: E402
from augment.patches import CropSettings  # noqa: E402
from augment.repaint import repaint_scheduler  # noqa: E402
from augment.settings import InpaintSettings  # noqa: E402
from core.params import from_dict, read_params, section  # noqa: E402
from pipelines.stage import Paths  # noqa: E402
from scenes.prepared import class_names  # noqa: E402


def unet_calls(models, settings: InpaintSettings) -> int:
    """UNet evaluations per window: the reverse steps of the jump schedule (undo steps call no model)."""
    scheduler = repaint_scheduler(models.scheduler, settings.steps, settings.jump_length, settings.jump_n_sample)
    timesteps = scheduler.timesteps.tolist()
    return sum(1 for before, t in zip([timesteps[0] + 1] + timesteps, timesteps) if t < before)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=64, help="guided insertions rendered per setting")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="default: inpaint.steps")
    parser.add_argument("--jump-length", type=int, nargs="+", default=None, help="default: inpaint.jump_length")
    parser.add_argument("--jump-n-sample", type=int, nargs="+", default=None, help="default: inpaint.jump_n_sample")
    parser.add_argument("--root", default=".", help="repo root holding params.yaml, data/ and models/")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    params = read_params()
    paths, base = section(Paths, "paths", params), section(InpaintSettings, "inpaint", params)
    crops = from_dict(CropSettings, params["patch_unet"]["crops"], "params.yaml: patch_unet.crops")
    names = class_names(paths.prepared)
    models = load_models(paths.patch_unet, paths.patch_classifier, paths.patch_judge, names)
    images, _ = inpaint.plan(paths.prepared, base, names, crops)
    jobs = [job for job in inpaint.jobs(images, base) if job.guided][:args.windows]
    canvas_rgb = {image.image_id: image.canvas.rgb for image in images}
    print(f"{len(jobs)} guided windows of {crops.px} px (model {models.unet.config.sample_size} px), "
          f"batch {base.batch_size}, {torch.get_num_threads()} torch threads")
    print("| steps | jump length | jump n sample | UNet calls / window | seconds | insertions / min | kept |")
    print("|---|---|---|---|---|---|---|")
    for steps, length, n_sample in itertools.product(args.steps or [base.steps], args.jump_length or [base.jump_length],
                                                     args.jump_n_sample or [base.jump_n_sample]):
        settings = dataclasses.replace(base, steps=steps, jump_length=length, jump_n_sample=n_sample)
        start = time.perf_counter()
        outcomes = []
        for batch in plan_batches(jobs, settings.batch_size):
            outcomes += inpaint.render_batch(models, settings, batch, canvas_rgb)
        seconds = time.perf_counter() - start
        kept = sum(o.kept for o in outcomes) / max(1, len(outcomes))
        print(f"| {steps} | {length} | {n_sample} | {unet_calls(models, settings)} | {seconds:.1f} | "
              f"{60 * len(outcomes) / seconds:.1f} | {kept:.2f} |")


if __name__ == "__main__":
    main()
