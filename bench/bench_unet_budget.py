"""What does a UNet training budget buy? Train with the `unet` params (plus overrides) and, at each
step mark, time the run so far, draw a sample grid and measure FD / precision / recall of the samples
against the real val images with the judge's features.

    python bench/bench_unet_budget.py --out /tmp/unet_budget --marks 200 400 800 \
        [--set lr=1e-3 --set snr_gamma=5 --set model.block_out_channels=[32,64,64]] [--threads N]

Needs data/prepared (stage import) and models/judge (stage train_judge). The run resumes from its
own checkpoints between marks (the stage's resume path), so mark k costs only the steps since mark
k-1. Prints one row per mark; the grids land in --out. Record the figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision.utils import save_image  # noqa: E402

from augment.classifier import load_classifier  # noqa: E402
from augment.data import load_image_set  # noqa: E402
from augment.gen_metrics import JudgeFeatures, extract, frechet_distance, precision_recall  # noqa: E402
from augment.train_unet import UNetTrainConfig, sample_grid, train_unet  # noqa: E402
from core.params import deep_merge, from_dict, read_params, section, to_jsonable  # noqa: E402
from core.profiles import parse_set  # noqa: E402
from pipelines.stage import Paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--marks", type=int, nargs="+", default=[200, 400, 800])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--raw", action="store_true", help="also measure the raw (non-EMA) weights")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = read_params(args.params)
    paths = section(Paths, "paths", params)
    values = params["unet"]
    for item in args.overrides:
        values = deep_merge(values, parse_set(item))
    base = from_dict(UNetTrainConfig, values, where="unet (with --set)")
    args.out.mkdir(parents=True, exist_ok=True)
    judge = load_classifier(paths.judge).eval()
    features = JudgeFeatures(judge).eval()
    real = load_image_set(paths.prepared, ("val",), base.image_size).images.float() / 255
    real_features = extract(features, real, 64)
    print(f"settings: {to_jsonable(base)}")
    print(f"{'step':>6} {'train min':>9} {'loss':>7} {'weights':>7} {'FD':>7} {'prec':>5} {'recall':>6}")
    for mark in args.marks:
        cfg = dataclasses.replace(base, max_steps=mark, max_minutes=None, n_samples=args.n_samples)
        started = time.perf_counter()
        result = train_unet(cfg, paths.prepared, args.out / "checkpoints")
        loss = result.loss_log["loss"].tail(5).mean()
        for weights, unet in [("ema", result.ema_unet)] + ([("raw", result.raw_unet)] if args.raw else []):
            samples = sample_grid(unet, result.scheduler, args.n_samples, args.sample_steps, 0)
            fake_features = extract(features, (samples + 1) / 2, 64)
            fd = frechet_distance(real_features, fake_features)
            precision, recall = precision_recall(real_features, fake_features, k=3)
            save_image((samples[:64] + 1) / 2, args.out / f"samples_{mark:05d}_{weights}.png", nrow=8, padding=1)
            print(f"{mark:>6} {result.summary['train_minutes']:>9.2f} {loss:>7.4f} {weights:>7} {fd:>7.2f} "
                  f"{precision:>5.2f} {recall:>6.2f}   (this mark {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
