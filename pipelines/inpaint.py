"""Stage inpaint: litter inserted into real road scenes with classifier-guided RePaint (augment.inpaint).

    python -m pipelines.inpaint                                  # one process
    accelerate launch --num_processes N -m pipelines.inpaint     # N disjoint shards, same images

Reads <paths.prepared> (`train` images and labels, clean `tagged` images; never `val` or `test`)
and the patch models (<paths.patch_unet>, <paths.patch_classifier>, <paths.patch_judge>). Writes
<paths.pseudo>/inpaint/ (images/, labels/: the canvas's boxes plus the kept inserted ones,
manifest.csv, params.json), <paths.reports>/inpaint.json (planned, kept, undone per class; guided vs
unguided verification) and <paths.reports>/inpaint/examples.png. Params: `inpaint`, `patch_unet.crops`.
"""

from __future__ import annotations

import sys

import matplotlib
from accelerate.utils import gather_object

from augment import inpaint
from augment.generate import load_models
from augment.patches import CropSettings, crop_sides
from augment.precision import resolved_settings
from augment.processes import process_state
from augment.settings import InpaintSettings
from core.errors import StageError
from core.io import atomic_dirs, write_json
from core.params import section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    crops = section(CropSettings, "patch_unet.crops", params)
    state = process_state()
    settings = resolved_settings(section(InpaintSettings, "inpaint", params), state.device, "inpaint", state.print)
    names = class_names(paths.prepared)
    models = load_models(paths.patch_unet, paths.patch_classifier, paths.patch_judge, names, state.device,
                         unet_stage="train_patch_unet", precision=settings.mixed_precision)
    size = models.unet.config.sample_size
    for side in crop_sides(crops):
        if side < size or side % size:
            raise StageError(f"params.yaml: patch_unet.crops side {side} must be a multiple of the patch UNet's "
                             f"{size} px (windows are area-downsampled by a whole factor)")
    images, quota = inpaint.plan(paths.prepared, settings, names, crops)
    jobs = inpaint.jobs(images, settings)
    shard = inpaint.render_shard(models, settings, jobs, images, state.process_index, state.num_processes,
                                progress=state.is_main_process)
    order = {job: i for i, job in enumerate(jobs)}
    outcomes = sorted(gather_object(shard), key=lambda outcome: order[outcome.job])  # plan order, any sharding
    if state.is_main_process:
        with atomic_dirs(paths.pseudo / "inpaint", paths.reports / "inpaint") as (out_dir, figures):
            manifest = inpaint.write_layout(images, outcomes, out_dir, names)
            result = inpaint.report(images, outcomes, quota, settings, names, len(manifest))
            result["examples"] = inpaint.examples_grid(outcomes, figures / "examples.png", names,
                                                      settings.grid_images, settings.grid_scale)
            write_json(out_dir / "params.json", {"inpaint": settings, "crops": crops})
            write_json(paths.reports / "inpaint.json", result)
        overall = result["overall"]
        verified = overall["verified"]
        print(f"inpaint: {overall['kept']} of {overall['placed']} insertions kept ({overall['planned']} planned, "
              f"{overall['unplaced']} unplaced) in {len(manifest)} images; verified guided "
              f"{verified['guided_paired']} vs unguided {verified['control']} on the same seeds "
              f"(p {verified['paired_test']['p_value']}); see {paths.reports / 'inpaint.json'}")
    state.wait_for_everyone()


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
