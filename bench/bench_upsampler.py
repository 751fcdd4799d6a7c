"""Is ADM's upsampler worth its time over plain resampling? Train `augment.superres` on the
prepared train + tagged images, then bring real `test` images, area-downsampled to the generative
resolution, back to the detector's resolution by bicubic resampling and by the upsampler (DDIM at
each --sample-steps), and compare each with the real images.

    python bench/bench_upsampler.py --out /tmp/upsampler [--steps 300] [--patch 32] \
        [--sample-steps 10 25] [--n-images 64] [--set model.block_out_channels=[32,64,64]] [--raw] [--threads N]

Settings: the `unet` params with image_size = dataset.image_size, low_res = unet.image_size, the
crops of --patch px, a linear eps schedule and the image target (ADM's upsampler) and --set overrides
(e.g. --set target=residual --set residual_scale=4; or the `upsampler` params: --section upsampler). Needs
data/prepared (stage import) and models/judge (stage train_judge). Per method it prints: PSNR
against the real images (the upsampler is not expected to win it: it draws detail rather than
averaging it), the edge energy (mean absolute difference of neighbouring pixels) relative to the
real images' (1.0 = as sharp as real), FD and KID against the real `val` images in the judge's
features at the detector's resolution (the judge learnt at the generative resolution, so these
compare the methods, not absolute quality), and the time per image. --raw adds rows for the raw
(not EMA) weights. Grids land in --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision.utils import save_image  # noqa: E402

from augment.classifier import load_classifier  # noqa: E402
from augment.data import load_image_set, to_model_range  # noqa: E402
from augment.gen_metrics import JudgeFeatures, extract, frechet_distance, kernel_inception_distance  # noqa: E402
from augment.superres import PatchesWithLowRes, Upsampler, UpsamplerTrainConfig  # noqa: E402
from augment.train_unet import train_unet  # noqa: E402
from augment.upsample import edge_energy  # noqa: E402
from core.params import deep_merge, from_dict, read_params, section, to_jsonable  # noqa: E402
from core.profiles import parse_set  # noqa: E402
from detection.prepare import DatasetParams  # noqa: E402
from pipelines.stage import Paths  # noqa: E402


def upsampler_config(params: dict, section_name: str, patch: int | None, steps: int | None,
                     overrides: list[str]) -> UpsamplerTrainConfig:
    """The `unet` section made an upsampler (ADM's: linear eps schedule, image target; no attention), or the
    `upsampler` section as it is; then --patch, --steps and --set."""
    if section_name == "unet":
        values = deep_merge(params["unet"], {
            "image_size": params["dataset"]["image_size"], "low_res": params["unet"]["image_size"], "patch_size": 32,
            "target": "image", "residual_scale": 1.0, "max_steps": 300, "checkpoint_every": 300, "max_minutes": None,
            "model": {"attention_resolutions": []},  # convolutional: crops in training, whole images in sampling
            "schedule": {"noise_schedule": "linear", "prediction_type": "epsilon", "learn_sigma": False}})
    else:
        values = params[section_name]
    values = deep_merge(values, {k: v for k, v in {"patch_size": patch, "max_steps": steps,
                                                    "checkpoint_every": steps}.items() if v is not None})
    for item in overrides:
        values = deep_merge(values, parse_set(item))
    return from_dict(UpsamplerTrainConfig, values, where="upsampler (bench settings)")


def psnr(images: torch.Tensor, real: torch.Tensor) -> float:
    """Mean PSNR in dB of images against real, both in [-1, 1] (peak-to-peak 2)."""
    mse = (images - real).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4 / mse)).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--section", default="unet", choices=["unet", "upsampler"],
                        help="start from the unet params (ADM's recipe) or the upsampler params")
    parser.add_argument("--steps", type=int, default=None, help="training steps (unet: 300)")
    parser.add_argument("--patch", type=int, default=None, help="training crop size in px (unet: 32)")
    parser.add_argument("--raw", action="store_true", help="also sample with the raw (not EMA) weights")
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = read_params(args.params)
    paths = section(Paths, "paths", params)
    detector_px = section(DatasetParams, "dataset", params).image_size
    cfg = upsampler_config(params, args.section, args.patch, args.steps, args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"settings: {to_jsonable(cfg)}")

    started = time.perf_counter()
    result = train_unet(cfg, paths.prepared, args.out / "checkpoints", view=PatchesWithLowRes(cfg))
    print(f"trained {result.summary['steps']} steps in {time.perf_counter() - started:.0f} s "
          f"({result.summary['n_parameters'] / 1e6:.2f} M parameters, last loss {result.loss_log['loss'].iloc[-1]:.4f})")

    real = to_model_range(load_image_set(paths.prepared, ("test",), detector_px).images[:args.n_images])
    reference = to_model_range(load_image_set(paths.prepared, ("val",), detector_px).images)
    low = F.avg_pool2d(real, cfg.factor)
    features = JudgeFeatures(load_classifier(paths.judge)).eval()
    reference_features = extract(features, (reference + 1) / 2, 32)
    methods = {"bicubic": (lambda: F.interpolate(low, size=detector_px, mode="bicubic", align_corners=False).clamp(-1, 1))}
    weights = {"upsampler": result.ema_unet, **({"upsampler (raw weights)": result.raw_unet} if args.raw else {})}
    for label, unet in weights.items():
        upsampler = Upsampler.trained(unet, result.scheduler, cfg)
        for steps in args.sample_steps:
            methods[f"{label}, DDIM {steps}"] = (
                lambda upsampler=upsampler, steps=steps: upsampler(low, steps, [torch.Generator().manual_seed(i)
                                                                                 for i in range(len(low))]))
    print(f"{len(real)} test images, {cfg.low_res} -> {detector_px} px; real edge energy {edge_energy(real):.4f}")
    print("| method | PSNR dB | edge energy / real | FD (judge) | KID (judge) | ms per image |")
    print("|---|---|---|---|---|---|")
    grid = [real]
    for name, run in methods.items():
        started = time.perf_counter()
        images = run()
        ms = (time.perf_counter() - started) * 1000 / len(images)
        fake_features = extract(features, (images + 1) / 2, 32)
        kid, _, _ = kernel_inception_distance(reference_features, fake_features, 50, 100, 0)
        print(f"| {name} | {psnr(images, real):.2f} | {edge_energy(images) / edge_energy(real):.2f} | "
              f"{frechet_distance(reference_features, fake_features):.2f} | {kid:.4f} | {ms:.0f} |", flush=True)
        grid.append(images)
    rows = torch.stack([g[:8] for g in grid], dim=1).flatten(0, 1)  # per image: real, bicubic, upsampler(s)
    save_image((rows + 1) / 2, args.out / "comparison.png", nrow=len(grid), padding=1)


if __name__ == "__main__":
    main()
