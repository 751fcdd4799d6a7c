"""Stage `copypaste`: the copy-paste control, real litter pasted into real scenes (detection.copypaste).

Reads <paths.prepared> (`train` images with their labels and instance maps, clean `tagged` images;
never `val` or `test`) and the inpaint layout (<paths.pseudo>/inpaint), whose canvases, places and
objects per class it mirrors. Writes <paths.pseudo>/copypaste/ (images/, labels/, manifest.csv,
params.json), <paths.reports>/copypaste.json and <paths.reports>/copypaste/examples.png.
Params: `copypaste`.
"""

from __future__ import annotations

import sys

import matplotlib

from core.io import atomic_dirs, write_json
from core.params import section
from detection import copypaste
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    settings = section(copypaste.CopyPasteSettings, "copypaste", params)
    names = class_names(paths.prepared)
    images, result = copypaste.paste_all(paths.prepared, paths.pseudo / "inpaint", settings, names)
    with atomic_dirs(paths.pseudo / "copypaste", paths.reports / "copypaste") as (out_dir, figures):
        copypaste.write_layout(images, out_dir, names)
        result["examples"] = copypaste.examples_grid(images, figures / "examples.png", names, settings.grid_images,
                                                     settings.grid_scale)
        write_json(out_dir / "params.json", {"copypaste": settings})
        write_json(paths.reports / "copypaste.json", result)
    total = result["total"]
    print(f"copypaste: {result['images']} images, {total['pasted']} of {total['requested']} objects pasted "
          f"({total['from_masks']} from masks, {total['from_boxes']} feathered box crops), "
          f"{total['unplaced'] + total['no_source']} unplaced")


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
