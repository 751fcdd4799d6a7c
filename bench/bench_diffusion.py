"""Benchmark the diffusion side on this machine: UNet training, (guided) sampling, guidance cost.

    python bench/bench_diffusion.py [--quick] [--params params.yaml] [--device auto|cpu|cuda] [--threads N]

Models are freshly initialised at the demo size from params.yaml (`unet`, `classifier`, the
generative resolution `unet.image_size`, `dataset.classes`, `generate.steps`); speed does not
depend on the weights.
Prints one table; record it in bench/RESULTS.md with the machine line.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.classifier import NoisyLitterClassifier  # noqa: E402
from augment.guidance import classifier_guidance  # noqa: E402
from augment.samplers import SAMPLERS, fresh_scheduler, guided_eps_step, sample, unet_output, x0_clip  # noqa: E402
from augment.train_classifier import ClassifierTrainConfig  # noqa: E402
from augment.train_unet import UNetTrainConfig, noised_batch  # noqa: E402
from augment.unet import build_scheduler, build_unet, diffusion_loss  # noqa: E402
from core.params import read_params, section  # noqa: E402
from detection.prepare import DatasetParams  # noqa: E402


def timed(fn, device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median wall time (s) of fn() over `repeats` runs (after one warm-up run if `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_models(params: dict, device: torch.device):
    unet_cfg = section(UNetTrainConfig, "unet", params)
    clf_cfg = section(ClassifierTrainConfig, "classifier", params)
    dataset = section(DatasetParams, "dataset", params)
    size, names = unet_cfg.image_size, dataset.classes
    torch.manual_seed(0)
    unet = build_unet(unet_cfg.model, unet_cfg.schedule, size).to(device)
    classifier = NoisyLitterClassifier.from_arch(names, size, unet_cfg.schedule.num_train_timesteps, clf_cfg.model,
                                                 clf_cfg.pool, where="params.yaml: classifier.model").to(device).eval()
    return unet_cfg, unet, build_scheduler(unet_cfg.schedule), classifier


def bench_training(unet_cfg, unet, scheduler, device, repeats: int) -> float:
    """UNet training images/s: forward, loss, backward, AdamW step on random images."""
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    batch = unet_cfg.batch_size
    x0 = torch.rand(batch, 3, unet.config.sample_size, unet.config.sample_size, device=device) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def step():
        x, x_t, t, noise = noised_batch(unet_cfg, scheduler, x0, gen)
        loss = diffusion_loss(scheduler, unet(x_t, t).sample, x, x_t, t, noise, unet_cfg.vlb_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step, device, repeats)
    unet.eval()
    return batch / seconds


def bench_sampling(unet, scheduler, classifier, device, batch: int, steps: int, repeats: int) -> list[tuple]:
    """(sampler, unguided images/s, guided images/s) per sampler."""
    cond_fn = classifier_guidance(classifier, 5.0)
    target = torch.arange(batch, device=device) % len(classifier.class_names)
    rows = []
    for name in SAMPLERS:
        def run(guided: bool, n_steps: int = steps, name=name):
            gens = [torch.Generator().manual_seed(i) for i in range(batch)]
            sample(name, unet, scheduler, gens, steps=n_steps, cond_fn=cond_fn if guided else None, target=target)
        run(True, n_steps=2)  # warm-up: kernels for this batch size
        rows.append((name, batch / timed(lambda: run(False), device, repeats, warmup=False),
                     batch / timed(lambda: run(True), device, repeats, warmup=False)))
    return rows


def bench_guided_step(unet, scheduler, classifier, device, batch: int, repeats: int) -> dict[str, float]:
    """Seconds of one guided DDIM step vs its parts: UNet forward, classifier forward + backward."""
    ddim_class, ddim_settings = SAMPLERS["ddim"]
    ddim, clip = fresh_scheduler(ddim_class, scheduler, 10, **ddim_settings), x0_clip(scheduler)
    t = ddim.timesteps[5]
    x = torch.randn(batch, 3, unet.config.sample_size, unet.config.sample_size, device=device)
    target = torch.arange(batch, device=device) % len(classifier.class_names)
    t_batch = torch.full((batch,), int(t), device=device)
    cond_fn = classifier_guidance(classifier, 5.0)
    with torch.no_grad():
        unet_s = timed(lambda: unet_output(unet, x, t), device, repeats)
    grad_s = timed(lambda: cond_fn(x, t_batch, target), device, repeats)
    guided_s = timed(lambda: guided_eps_step(unet, ddim, x, t, cond_fn, target, clip=clip), device, repeats)
    plain_s = timed(lambda: guided_eps_step(unet, ddim, x, t, None, target, clip=clip), device, repeats)
    return {"unet_forward": unet_s, "classifier_fwd_bwd": grad_s, "guided_step": guided_s, "unguided_step": plain_s}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


def machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = ", load avg %.1f/%.1f/%.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{name}; {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device {device}{load}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small batch, 5 sampling steps")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    params = read_params(args.params)
    steps = 5 if args.quick else int(params["generate"]["steps"])
    batch, repeats = (8, 1) if args.quick else (16, 1)

    unet_cfg, unet, scheduler, classifier = build_models(params, device)
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_clf = sum(p.numel() for p in classifier.parameters()) / 1e6
    print(f"machine: {machine(device)}", flush=True)
    print(f"models: UNet {n_unet:.2f} M params ({unet.config.sample_size} px, out {unet.config.out_channels} ch), "
          f"classifier {n_clf:.2f} M params; sampling batch {batch}, {steps} steps\n")

    train_ips = bench_training(unet_cfg, unet, scheduler, device, repeats=2 if args.quick else 5)
    print(f"{'UNet training (batch %d)' % unet_cfg.batch_size:<34}{train_ips:>10.1f} images/s\n")
    print(f"{'sampler':<14}{'unguided img/s':>16}{'guided img/s':>14}{'guided/unguided time':>22}")
    for name, plain, guided in bench_sampling(unet, scheduler, classifier, device, batch, steps, repeats):
        print(f"{name:<14}{plain:>16.2f}{guided:>14.2f}{plain / guided:>22.2f}")
    parts = bench_guided_step(unet, scheduler, classifier, device, batch, repeats=3 if args.quick else 10)
    print(f"\none DDIM step at batch {batch} (ms): " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items()))
    ratio = parts["guided_step"] / (parts["unet_forward"] + parts["classifier_fwd_bwd"])
    print(f"guided step / (UNet forward + classifier forward+backward) = {ratio:.2f}")


if __name__ == "__main__":
    main()
