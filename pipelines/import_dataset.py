"""Stage `import`: a COCO / YOLO / Pascal VOC dataset -> data/prepared/ + reports/import.json."""

from __future__ import annotations

import argparse
import sys

from detection.prepare import DatasetParams, prepare_dataset
from detection.splits import SplitParams
from pipelines.stage import atomic_dir, read_params, run_stage, section, write_json

PREPARED = "data/prepared"
REPORT = "reports/import.json"


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    dataset = section(DatasetParams, "dataset", params)
    split = section(SplitParams, "split", params)
    with atomic_dir(PREPARED) as tmp:
        report = prepare_dataset(dataset, split, tmp)
    write_json(REPORT, report)
    counts = ", ".join(f"{name} {info['images']}" for name, info in report["splits"].items())
    print(f"imported {report['images']} images ({report['format']}): {counts}; "
          f"{len(report['fixed'])} fixed, {len(report['skipped'])} skipped")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
