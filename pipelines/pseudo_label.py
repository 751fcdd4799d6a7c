"""Stages `pseudo_label` and `pseudo_label_tagged`: the baseline detector boxes an image pool.

`--pool synthetic` (stage `pseudo_label`): the generated images at the detector's resolution
(<paths.upsampled>, stage upsample), kept when a box of their target class is found; writes
<paths.pseudo>/synthetic/ + <paths.reports>/pseudo_label.json.
`--pool tagged` (stage `pseudo_label_tagged`, the self-training control): the real `tagged` split
of <paths.prepared>, checked against its image-level tags, and its `unlabelled` split (nothing to
check against); writes <paths.pseudo>/tagged/ +
<paths.reports>/pseudo_label_tagged.json. Both use the baseline detector of the first seed in
`yolo.seeds` (<paths.yolo>/baseline/seed_<s>/best.pt) and the params `pseudo_label`, `yolo.train.imgsz`
and `yolo.seeds`; each output holds images/, labels/, manifest.csv, params.json, with every image at
the prepared images' size.
"""

from __future__ import annotations

import sys

from core.errors import warn
from core.io import atomic_dir, write_json
from core.params import section
from detection import pseudo_label
from detection.yolo import YoloParams, seed_dir
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, image_size, load_manifest

REPORTS = {"synthetic": "pseudo_label.json", "tagged": "pseudo_label_tagged.json"}


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--pool", choices=sorted(REPORTS), default="synthetic"))
    settings = section(pseudo_label.PseudoLabelSettings, "pseudo_label", params)
    yolo = section(YoloParams, "yolo", params)
    imgsz = yolo.train.imgsz
    names = class_names(paths.prepared)
    if args.pool == "synthetic":
        pool = pseudo_label.synthetic_pool(paths.upsampled, names, settings.require_target)
    else:
        pool = pseudo_label.tagged_pool(load_manifest(paths.prepared, ("tagged", "unlabelled")), names)
    weights = seed_dir(paths.yolo / "baseline", yolo.seeds[0]) / "best.pt"
    with atomic_dir(paths.pseudo / args.pool) as out_dir:
        result = pseudo_label.run(pool, weights, settings, imgsz, names, out_dir, image_size(paths.prepared))
        write_json(out_dir / "params.json", {"pseudo_label": settings, "imgsz": imgsz, "weights": weights})
        write_json(paths.reports / REPORTS[args.pool], result)
    total = result["total"]
    print(f"pseudo_label ({args.pool}): kept {total['kept'] + total['kept_background']} of {total['images']} images")
    if not pool:
        warn("pseudo_label", f"the {args.pool} pool is empty, so its variant adds no images (report.md calls that "
                             "comparison void)")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
