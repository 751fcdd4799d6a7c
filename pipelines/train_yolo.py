"""Stage `train_yolo@<variant>`: one YOLO detector per training-data variant (DVC foreach).

- baseline:  real `train` boxes only (`data/prepared`)
- augmented: real `train` + pseudo-labelled synthetic images (`data/pseudo/synthetic`), at most
  `yolo.synthetic_ratio` synthetic images per real one
- selftrain: real `train` + the pseudo-labelled real `tagged` pool (`data/pseudo/tagged`), at most
  `yolo.tagged_ratio` per real one: the control that tells synthetic data from more real data

All validate on real `val`. Writes `models/yolo/<variant>/` (best.pt, last.pt, results.csv,
args.yaml, params.json, metrics.json) and `reports/yolo/<variant>/results.csv` (DVC plot).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from detection.prepared import class_names
from detection.yolo import VARIANTS, YoloParams, train, variant_splits, write_dataset_view
from pipelines.stage import atomic_dirs, read_params, run_stage, section, write_json

PREPARED = "data/prepared"
PSEUDO = "data/pseudo"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = section(YoloParams, "yolo", read_params(args.params))
    names = class_names(PREPARED)
    splits = variant_splits(args.variant, params, PREPARED, PSEUDO)
    with tempfile.TemporaryDirectory(prefix="yolo_data_") as view_dir, \
            atomic_dirs(f"models/yolo/{args.variant}", f"reports/yolo/{args.variant}") as (out_dir, report_dir):
        data_yaml = write_dataset_view(Path(view_dir), splits, names)
        metrics = train(params.train, data_yaml, out_dir)
        shutil.copyfile(out_dir / "results.csv", report_dir / "results.csv")
        write_json(out_dir / "params.json", {"variant": args.variant, "yolo": params, "classes": names,
                                             "n_images": {s: len(v) for s, v in splits.items()}})
        write_json(out_dir / "metrics.json", metrics)


if __name__ == "__main__":
    sys.exit(run_stage(main))
