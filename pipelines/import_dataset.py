"""Stage `import`: a COCO / YOLO / Pascal VOC dataset -> <paths.prepared>/ + <paths.reports>/import.json."""

from __future__ import annotations

import sys

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
    for missing in report["missing_splits"]:
        print(f"warning: {missing['file']}: {missing['split']}: {missing['reason']}; imported without it")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
