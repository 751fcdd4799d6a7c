"""Stage `import`: a COCO / YOLO / Pascal VOC dataset and the unlabelled pool beside it ->
<paths.prepared>/ + <paths.reports>/import.json, with the preflight of object sizes printed."""

from __future__ import annotations

import sys

from core.errors import warn
from core.io import atomic_dir, write_json
from core.params import section
from detection.prepare import DatasetParams, prepare_dataset
from detection.splits import SplitParams
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    dataset = section(DatasetParams, "dataset", params)
    split = section(SplitParams, "split", params)
    with atomic_dir(paths.prepared) as tmp:
        report = prepare_dataset(dataset, split, tmp)
    write_json(paths.reports / "import.json", report)
    counts = ", ".join(f"{name} {info['images']}" for name, info in report["splits"].items())
    print(f"imported {report['images']} images ({report['format']}): {counts}; "
          f"{len(report['fixed'])} fixed, {len(report['skipped'])} skipped")
    pool = report["unlabelled"]
    print(f"unlabelled pool {pool['folder']}: {pool['images']} images ({pool['tagged']} tagged, {pool['clean']} clean, "
          f"{pool['unknown']} unknown); split mode {report['split_mode']}")
    for missing in report["missing_splits"]:
        warn(missing["file"], f"{missing['split']}: {missing['reason']}; imported without it")
    preflight = report["preflight"]
    sizes = "; ".join(f"{name} {s['median_px']:g} / {s['p10_px']:g}" for name, s in preflight["per_class"].items()
                      if s["boxes"])
    print(f"box sizes at {preflight['image_size']} px (shorter side, median / 10th percentile): {sizes}")
    for warning in preflight["warnings"]:
        warn("import", warning)


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
