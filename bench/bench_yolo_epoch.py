"""Where a YOLO training epoch's time goes on the CPU, and what the project's trainer saves.

    .venv/bin/python bench/bench_yolo_epoch.py              # after `dvc repro import`; ~3 min on 2 cores
    .venv/bin/python bench/bench_yolo_epoch.py --epochs 6 --threads 2

Trains the demo's baseline (real `train`, params.yaml `yolo.train`, fp32 unless amp says
otherwise) for --epochs epochs, one seed, twice in this process on --threads torch threads:

- `per-epoch checkpoints, Adam per tensor`: what ultralytics does by itself (a 12 MB last.pt written
  every epoch, torch's default single-tensor Adam(W) step on CPU), on the project's NHWC trainer;
- `project trainer`: detection.yolo_train's trainer as the pipeline runs it (a fused AdamW step,
  checkpoints only where one is read).

Prints the mean seconds per epoch of each (from ultralytics' results.csv, the first epoch left
out) and their ratio, measured in one run. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import scratch_dir  # noqa: E402
from core.params import read_params, section  # noqa: E402
from detection import yolo_train  # noqa: E402
from detection.budget import Plan  # noqa: E402
from detection.yolo import YoloParams, variant_splits, write_dataset_view  # noqa: E402
from detection.yolo_train import train  # noqa: E402
from pipelines.train_yolo import resolve_amp  # noqa: E402
from scenes.prepared import class_names  # noqa: E402


def ultralytics_defaults(planned: type) -> type:
    """The project's trainer class `planned` with ultralytics' own checkpointing (a last.pt every epoch)
    and torch's default Adam(W) step on CPU (one tensor at a time)."""
    from ultralytics.engine.trainer import BaseTrainer

    class Default(planned):
        def build_optimizer(self, *args, **kwargs):
            optimizer = super().build_optimizer(*args, **kwargs)
            for group in optimizer.param_groups:
                group.update(fused=False, foreach=False)
            return optimizer

        def save_model(self) -> bool:
            return BaseTrainer.save_model(self)

    return Default


def seconds_per_epoch(results_csv: Path) -> float:
    frame = pd.read_csv(results_csv)
    frame.columns = [c.strip() for c in frame.columns]
    return float(frame["time"].diff().iloc[1:].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    params = read_params(args.params)
    yolo = section(YoloParams, "yolo", params)
    prepared = Path(params["paths"]["prepared"])
    settings, _ = resolve_amp(yolo.train)
    splits = variant_splits("baseline", yolo, prepared, prepared)
    plan = Plan(args.epochs, args.epochs)
    times = {}
    project = yolo_train.planned_trainer
    with scratch_dir("bench_yolo_epoch_") as root:
        data_yaml = write_dataset_view(root / "data", splits, class_names(prepared))
        for name, trainer in (("per-epoch checkpoints, Adam per tensor", lambda p, b: ultralytics_defaults(project(p, b))),
                              ("project trainer", project)):
            out, log = root / name.split()[0] / "out", root / name.split()[0] / "log"
            out.mkdir(parents=True)
            log.mkdir(parents=True)
            yolo_train.planned_trainer = trainer  # train() builds its trainer class through this name
            started = time.perf_counter()
            try:
                train(dataclasses.replace(settings, device="cpu"), plan, 0, data_yaml, out, log)
            finally:
                yolo_train.planned_trainer = project
            times[name] = (seconds_per_epoch(log / "results.csv"), time.perf_counter() - started)
    print(f"YOLO training, {len(splits['train'])} images, batch {settings.batch}, imgsz {settings.imgsz}, "
          f"{args.threads} thread(s), amp {settings.amp}, {args.epochs} epochs")
    for name, (per_epoch, total) in times.items():
        print(f"  {name:40s} {per_epoch:6.2f} s/epoch  ({total:.0f} s in all)")
    (before, _), (after, _) = times.values()
    print(f"  ratio: {before / after:.2f}x")


if __name__ == "__main__":
    main()
