"""Stages `pseudo_label` and `pseudo_label_tagged`: the baseline detector boxes an image pool.

`--pool synthetic` (stage `pseudo_label`): the generated images of `data/synthetic/`, kept when a
box of their target class is found; writes `data/pseudo/synthetic/` + `reports/pseudo_label.json`.
`--pool tagged` (stage `pseudo_label_tagged`, the self-training control): the real `tagged` split
of `data/prepared/`, checked against its image-level tags; writes `data/pseudo/tagged/` +
`reports/pseudo_label_tagged.json`. Both read `models/yolo/baseline/best.pt` and the params
`pseudo_label` and `yolo.train.imgsz`; each output holds images/, labels/, manifest.csv, params.json.
"""

from __future__ import annotations

import argparse
import sys

from detection import pseudo_label
from detection.prepared import class_names, load_manifest
from detection.yolo import YoloParams
from pipelines.stage import atomic_dir, read_params, run_stage, section, write_json

PREPARED = "data/prepared"
SYNTHETIC = "data/synthetic"
WEIGHTS = "models/yolo/baseline/best.pt"
OUTPUTS = {"synthetic": ("data/pseudo/synthetic", "reports/pseudo_label.json"),
           "tagged": ("data/pseudo/tagged", "reports/pseudo_label_tagged.json")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pool", choices=sorted(OUTPUTS), default="synthetic")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    settings = section(pseudo_label.PseudoLabelSettings, "pseudo_label", params)
    imgsz = section(YoloParams, "yolo", params).train.imgsz
    names = class_names(PREPARED)
    if args.pool == "synthetic":
        pool = pseudo_label.synthetic_pool(SYNTHETIC, names, settings.require_target)
    else:
        pool = pseudo_label.tagged_pool(load_manifest(PREPARED, ("tagged",)), names)
    out, report = OUTPUTS[args.pool]
    with atomic_dir(out) as out_dir:
        result = pseudo_label.run(pool, WEIGHTS, settings, imgsz, names, out_dir)
        write_json(out_dir / "params.json", {"pseudo_label": settings, "imgsz": imgsz, "weights": WEIGHTS})
        write_json(report, result)


if __name__ == "__main__":
    sys.exit(run_stage(main))
