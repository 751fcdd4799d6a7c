"""Stage `train_yolo@<variant>`: one YOLO detector per training-data variant (DVC foreach) and seed.

The variants (detection.yolo.VARIANT_POOLS): baseline (real `train` boxes only); augmented (plus
pseudo-labelled synthetic scenes, <paths.pseudo>/synthetic); selftrain (plus the pseudo-labelled
real `tagged` pool: more real data, the control); copypaste (plus real litter pasted into real
scenes: the bar a synthetic method has to beat); inpaint (plus litter inserted by guided RePaint,
augment.inpaint), each capped by `yolo.mix` and cut by the quality gate (stage realism).
Every variant trains once per seed in `yolo.seeds`, `yolo.parallel` at once, for the detector
budget the baseline finds (detection.budget, <paths.yolo>/baseline/budget.json). Writes
<paths.yolo>/<variant>/params.json and seed_<s>/ (best.pt = the final weights, last.pt,
results.csv, args.yaml, metrics.json), and <paths.reports>/yolo/<variant>/.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

from core.io import atomic_dirs, scratch_dir, write_json
from core.params import section
from detection.budget import batches_per_epoch, budget_line
from detection.yolo import (
    VARIANTS,
    TrainSettings,
    YoloParams,
    check_local_weights,
    resolve_device,
    variant_settings,
    variant_splits,
    write_dataset_view,
)
from detection.yolo_train import train_variant
from pipelines.stage import Launch, run_stage, stage_args
from scenes.prepared import class_names

if TYPE_CHECKING:
    from augment.precision import Precision


def resolve_amp(train: TrainSettings) -> tuple[TrainSettings, Precision]:
    """`train` with amp `auto` decided for its device as `mixed_precision: auto` is
    (augment.precision): bf16 where the GPU or CPU computes bf16 natively, else false (ultralytics'
    fp16 AMP would first download a model to check itself); and the choice with its reason."""
    import torch  # here, not at the top: torch must load after stage_args has set its threads

    from augment.precision import Precision, resolve_mixed_precision

    if train.amp != "auto":
        return train, Precision("bf16" if train.amp else "no", "set in params.yaml")
    device = torch.device("cpu" if resolve_device(train.device) == "cpu" else "cuda")
    precision = resolve_mixed_precision("auto", device)
    amp = "bf16" if precision.name == "bf16" else False
    return dataclasses.replace(train, amp=amp), Precision("bf16" if amp else "no", precision.reason)


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--variant", required=True, choices=VARIANTS))
    settings = section(YoloParams, "yolo", params)
    check_local_weights(settings.train.model)
    threads = section(Launch, "launch", params).torch_threads
    names = class_names(paths.prepared)
    splits = variant_splits(args.variant, settings, paths.prepared, paths.pseudo)
    n_train = len(splits["train"])
    train, amp = resolve_amp(settings.train)
    print(f"train_yolo@{args.variant}: amp {amp}")
    trained = dataclasses.replace(settings, train=train)
    with scratch_dir("yolo_data_") as view_dir, \
            atomic_dirs(paths.yolo / args.variant, paths.reports / "yolo" / args.variant) as (out_dir, report_dir):
        data_yaml = write_dataset_view(view_dir, splits, names)
        records, budget = train_variant(args.variant, trained, data_yaml, out_dir, report_dir, n_train, paths.yolo,
                                        threads)
        if budget:
            print(f"train_yolo@baseline: {budget_line(budget)}")
        epochs = next(iter(records.values()))["epochs"]
        write_json(out_dir / "params.json", {
            "variant": args.variant, "yolo": variant_settings(args.variant, trained), "classes": names,
            "n_images": {s: len(v) for s, v in splits.items()},
            "epochs": epochs, "batches": epochs * batches_per_epoch(n_train, settings.train.batch)})


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
