"""Stage `pseudo_label`: the baseline detector labels the synthetic images; keep policy + report.

Reads `data/synthetic/` (generate), `models/yolo/baseline/best.pt`, class names from
`data/prepared/data.yaml`; writes `data/pseudo/synthetic/` (images/, labels/, manifest.csv,
params.json) and `reports/pseudo_label.json`. Params: `pseudo_label`, `yolo.train.imgsz`.
"""

from __future__ import annotations

import argparse
import sys

from detection import pseudo_label
from detection.yolo import YoloParams
from detection.prepared import class_names
from pipelines.stage import atomic_dir, read_params, run_stage, section, write_json

PREPARED = "data/prepared"
SYNTHETIC = "data/synthetic"
WEIGHTS = "models/yolo/baseline/best.pt"
OUT = "data/pseudo/synthetic"
REPORT = "reports/pseudo_label.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    settings = section(pseudo_label.PseudoLabelSettings, "pseudo_label", params)
    imgsz = section(YoloParams, "yolo", params).train.imgsz
    names = class_names(PREPARED)
    pool = pseudo_label.synthetic_pool(SYNTHETIC, names, settings.require_target)
    with atomic_dir(OUT) as out_dir:
        result = pseudo_label.run(pool, WEIGHTS, settings, imgsz, names, out_dir)
        write_json(out_dir / "params.json", {"pseudo_label": settings, "imgsz": imgsz, "weights": WEIGHTS})
        write_json(REPORT, result)


if __name__ == "__main__":
    sys.exit(run_stage(main))
