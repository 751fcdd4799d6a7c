"""Stage `pseudo_label_tagged`: the baseline detector labels the real `tagged` pool (for `selftrain`).

Reads the `tagged` split of `data/prepared/` and its tags, `models/yolo/baseline/best.pt`;
writes `data/pseudo/tagged/` (images/, labels/, manifest.csv, params.json) and
`reports/pseudo_label_tagged.json`. Params: `pseudo_label` (`require_target` does not apply: the
tags are the check, see `detection.pseudo_label`), `yolo.train.imgsz`.
"""

from __future__ import annotations

import argparse
import sys

from detection import pseudo_label
from detection.yolo import YoloParams
from detection.prepared import class_names, load_manifest
from pipelines.stage import atomic_dir, read_params, run_stage, section, write_json

PREPARED = "data/prepared"
WEIGHTS = "models/yolo/baseline/best.pt"
OUT = "data/pseudo/tagged"
REPORT = "reports/pseudo_label_tagged.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    settings = section(pseudo_label.PseudoLabelSettings, "pseudo_label", params)
    imgsz = section(YoloParams, "yolo", params).train.imgsz
    names = class_names(PREPARED)
    pool = pseudo_label.tagged_pool(load_manifest(PREPARED, ("tagged",)), names)
    with atomic_dir(OUT) as out_dir:
        result = pseudo_label.run(pool, WEIGHTS, settings, imgsz, names, out_dir)
        write_json(out_dir / "params.json", {"pseudo_label": settings, "imgsz": imgsz, "weights": WEIGHTS})
        write_json(REPORT, result)


if __name__ == "__main__":
    sys.exit(run_stage(main))
