"""Stage generate: classifier-guided synthetic images, their manifest and the hit-rate report.

    python -m pipelines.generate                                     # one process
    accelerate launch --num_processes N -m pipelines.generate        # N disjoint shards, same images

Outputs: <paths.synthetic>/images/<image_id>.png + params.json, <paths.synthetic>/manifest.csv
(guided images only, `target` always a class name; scenes.synthetic), <paths.synthetic>/control/
(the unguided controls: images/ + manifest.csv with guidance_scale 0, same seeds as their guided
twins) and <paths.reports>/generation.json (judge hit rates, augment.generate.report).
"""

from __future__ import annotations

import contextlib
import sys

from accelerate.utils import broadcast_object_list, gather_object

from augment.generate import load_models, plan_images, plan_quota, render_shard, write_outputs
from augment.precision import resolved_settings
from augment.processes import process_state
from augment.settings import GenerateSettings
from core.io import atomic_dirs, write_json
from core.params import section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, load_manifest


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    state = process_state()
    settings = resolved_settings(section(GenerateSettings, "generate", params), state.device, "generate", state.print)
    names = class_names(paths.prepared)
    quota = plan_quota(settings, names, load_manifest(paths.prepared, ("train",))["tags"])
    jobs = plan_images(quota, names, settings)
    models = load_models(paths.unet, paths.classifier, paths.judge, names, state.device,
                         precision=settings.mixed_precision)
    report = paths.reports / "generation.json"

    outs = [paths.synthetic / "images", paths.synthetic / "control"]
    staging = atomic_dirs(*outs) if state.is_main_process else contextlib.nullcontext(outs)
    with staging as dirs:
        images_dir, control_dir = broadcast_object_list(list(dirs))  # the main process's temp dirs
        shard = render_shard(models, settings, jobs, images_dir, control_dir, state.process_index,
                             state.num_processes, progress=state.is_main_process)
        rendered = gather_object(shard)
        if state.is_main_process:
            summary = write_outputs(rendered, settings, quota, names, images_dir, control_dir,
                                    paths.synthetic / "manifest.csv")
            write_json(report, summary)
    state.wait_for_everyone()
    if state.is_main_process:
        overall = summary["overall"]
        print(f"generated {overall['guided']['n']} guided + {overall['control']['n']} control images "
              f"({settings.sampler}, {settings.steps} steps, s={settings.guidance_scale}); judge hit rate "
              f"guided {overall['guided_paired']['hit_rate']} vs control {overall['control']['hit_rate']} "
              f"on the same seeds; see {report}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
