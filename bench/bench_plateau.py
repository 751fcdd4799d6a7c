"""The baseline detector's learning curve, to check the budget train_yolo@baseline finds.

    .venv/bin/python bench/bench_plateau.py                 # after `dvc repro import`; ~25 min on 2 cores
    .venv/bin/python bench/bench_plateau.py --seeds 0 --test-epochs 60,240

Trains the baseline (real `train`, params.yaml `yolo`) once per seed on the pipeline's own schedule
(ultralytics' linear decay over `yolo.budget.max_epochs`), keeps its weights every
`yolo.budget.val_every` epochs, and scores them with the evaluate stage's predictor and metrics:
val mAP50 at every kept epoch, test mAP50 and per-class AP50 at --test-epochs. Replays the budget
rule (detection.budget.plateau_epoch) on the seeds' mean val curve and prints where it stops and
what training 1.6x longer would have added on test. Writes the rows (seed, epoch, split, class,
AP50) to --out and the curves to --figure. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import scratch_dir  # noqa: E402
from core.params import read_params, section  # noqa: E402
from detection.budget import Plan, plateau_epoch  # noqa: E402
from detection.evaluate import EvaluateSettings, load_test_images  # noqa: E402
from detection.metrics import METRICS, match_image, summarize  # noqa: E402
from detection.yolo import YoloParams, load_model, predict, seed_dir, variant_splits, write_dataset_view  # noqa: E402
from detection.yolo_train import train_seeds  # noqa: E402
from pipelines.train_yolo import resolve_amp  # noqa: E402
from scenes.prepared import class_names  # noqa: E402


def ap50(weights: Path, images, settings: EvaluateSettings, imgsz: int, n_classes: int) -> np.ndarray:
    """AP50 per class and overall (last) of one checkpoint on `images`: float [n_classes + 1]."""
    found = predict(load_model(weights), [im.rgb for im in images], settings.predict, imgsz)
    matches = [match_image(d, im.gt_xyxy, im.gt_cls) for d, im in zip(found, images)]
    return summarize(matches, n_classes).scores[METRICS.index("mAP50")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", default=None, help="comma-separated; default yolo.seeds")
    parser.add_argument("--test-epochs", default="20,40,60,80,100,120,150,180,210,240")
    parser.add_argument("--out", default="bench/figures/plateau.csv")
    parser.add_argument("--figure", default="bench/figures/plateau.png")
    args = parser.parse_args()
    params = read_params(args.params)
    yolo, evaluate = section(YoloParams, "yolo", params), section(EvaluateSettings, "evaluate", params)
    rule, prepared = yolo.budget, Path(params["paths"]["prepared"])
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else yolo.seeds
    kept = tuple(range(rule.val_every, rule.max_epochs + 1, rule.val_every))
    test_epochs = [e for e in map(int, args.test_epochs.split(",")) if e in kept]
    names = class_names(prepared)
    train, _ = resolve_amp(yolo.train)
    settings = dataclasses.replace(yolo, train=train, seeds=seeds)
    plan = Plan(rule.max_epochs, rule.max_epochs, snapshots=kept)
    splits = variant_splits("baseline", settings, prepared, prepared)
    val, test = load_test_images(prepared, "val"), load_test_images(prepared, "test")
    rows = []
    with scratch_dir("bench_plateau_") as root:
        data_yaml = write_dataset_view(root / "data", splits, names)
        (root / "out").mkdir()
        (root / "log").mkdir()
        train_seeds(settings, {s: plan for s in seeds}, data_yaml, root / "out", root / "log",
                    params["launch"]["torch_threads"])
        for seed in seeds:
            for epoch in kept:
                weights = seed_dir(root / "out", seed) / f"epoch_{epoch}.pt"
                for split, images in (("val", val), ("test", test)) if epoch in test_epochs else (("val", val),):
                    scores = ap50(weights, images, evaluate, yolo.train.imgsz, len(names))
                    rows += [{"seed": seed, "epoch": epoch, "split": split, "class": c, "AP50": float(x)}
                             for c, x in zip([*names, "all"], scores)]
            print(f"seed {seed}: scored {len(kept)} checkpoints", flush=True)
    frame = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    report(frame, rule, names, test_epochs, args.figure)


def report(frame: pd.DataFrame, rule, names: list[str], test_epochs: list[int], figure: str) -> None:
    """The table, the rule's stop on the mean val curve, the 1.6x check, the figure."""
    overall = frame[frame["class"] == "all"].groupby(["split", "epoch"])["AP50"].agg(["mean", "std"])
    per_class = frame[frame.split == "test"].groupby(["epoch", "class"])["AP50"].mean().unstack()
    print("| epoch | val mAP50 | test mAP50 | " + " | ".join(f"test {c}" for c in names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for epoch in test_epochs:
        v, t = overall.loc[("val", epoch)], overall.loc[("test", epoch)]
        cells = " | ".join(f"{per_class.loc[epoch, c]:.3f}" for c in names)
        print(f"| {epoch} | {v['mean']:.3f} ± {v['std']:.3f} | {t['mean']:.3f} ± {t['std']:.3f} | {cells} |")
    val_curve = overall.loc["val"]["mean"].to_dict()
    stop = plateau_epoch(val_curve, rule)
    print(f"budget rule on the mean val curve: stops at epoch {stop}")
    tested = overall.loc["test"]["mean"].to_dict()
    if stop in tested:
        later = min((e for e in tested if e >= 1.6 * stop), default=max(tested))
        print(f"test mAP50 at {stop} epochs {tested[stop]:.3f}; at {later} epochs ({later / stop:.2f}x) "
              f"{tested[later]:.3f}: {tested[later] - tested[stop]:+.3f}")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("val", "--"), ("test", "-")):
        curve = overall.loc[split]
        axes[0].errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), fmt=style, capsize=2,
                         label=f"{split} mAP50")
    if stop:
        axes[0].axvline(stop, color="grey", linewidth=0.8, label=f"budget rule: {stop}")
    axes[0].set(xlabel="epochs (schedule over %d)" % rule.max_epochs, ylabel="mAP50 (mean ± sd over seeds)")
    axes[0].legend(fontsize=8)
    for c in names:
        axes[1].plot(per_class.index, per_class[c], marker="o", markersize=3, label=c)
    axes[1].set(xlabel="epochs", ylabel="test AP50 (mean over seeds)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()
