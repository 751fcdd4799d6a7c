"""What bf16 autocast buys on this CPU, per kind of work the demo does: images per second, fp32 against bf16.

    .venv/bin/python bench/bench_precision.py                    # every workload, 20 timed steps each
    .venv/bin/python bench/bench_precision.py --only unet_train yolo_train --steps 10

Models are built from params.yaml (`unet`, `classifier`, `upsampler`, `yolo.train`) with random
weights: speed does not depend on what they learned. Workloads:

- unet_train: the scene UNet's training step (add_noise -> UNet -> MSE -> backward -> AdamW) at
  `unet.batch_size`; precision through accelerate's `mixed_precision`, as `train_unet` runs it.
- classifier_train: the noise-aware classifier's step at `classifier.batch_size`, the same way.
- unet_sample: one UNet forward without gradients at `generate.batch_size` (a sampling step).
- guidance: the classifier's forward and gradient w.r.t. x_t at `generate.batch_size` (one guided step's cond_fn).
- upsampler_sample: one upsampler forward at the detector's size, `upsample.batch_size`.
- yolo_train: ultralytics' loss forward + backward of `yolo.train.model` at `yolo.train.imgsz`,
  batch `yolo.train.batch`, on random images with one box each, on `1` thread (how `train_yolo`
  runs each of its parallel seeds on 2 cores).

Sampling workloads use `augment.precision.sampling_precision`. Prints a markdown table (images/s in
fp32 and bf16, the ratio) and the precision `auto` resolves to here. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402

from augment.classifier import NoisyLitterClassifier  # noqa: E402
from augment.guidance import classifier_guidance  # noqa: E402
from augment.precision import resolve_mixed_precision, sampling_precision  # noqa: E402
from augment.superres import UpsamplerTrainConfig  # noqa: E402
from augment.train_unet import UNetTrainConfig  # noqa: E402
from augment.unet import build_scheduler, build_unet  # noqa: E402
from core.params import read_params, section  # noqa: E402

WORKLOADS = ("unet_train", "classifier_train", "unet_sample", "guidance", "upsampler_sample", "yolo_train")
N_CLASSES = 5


def timed(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Seconds per call of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def unet_train(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    cfg = section(UNetTrainConfig, "unet", params)
    accelerator = Accelerator(mixed_precision=precision)
    unet = build_unet(cfg.model, cfg.schedule, cfg.image_size)
    scheduler = build_scheduler(cfg.schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    x0 = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size) * 2 - 1

    def step() -> None:
        noise, t = torch.randn_like(x0), torch.randint(0, 1000, (x0.shape[0],))
        with accelerator.autocast():
            loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample[:, :3].float(), noise)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    return step, cfg.batch_size


def classifier(params: dict) -> NoisyLitterClassifier:
    cfg = section(UNetTrainConfig, "unet", params)
    return NoisyLitterClassifier.from_arch([f"c{i}" for i in range(N_CLASSES)], cfg.image_size, 1000, cfg.model,
                                           params["classifier"]["pool"], "params.yaml: classifier.model")


def classifier_train(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    batch, size = params["classifier"]["batch_size"], params["classifier"]["image_size"]
    accelerator = Accelerator(mixed_precision=precision)
    model = classifier(params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = torch.rand(batch, 3, size, size) * 2 - 1, (torch.rand(batch, N_CLASSES) > 0.5).float()

    def step() -> None:
        with accelerator.autocast():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x, torch.randint(0, 1000, (batch,))).float(), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    return step, batch


def sampling_forward(unet: torch.nn.Module, precision: str, x: torch.Tensor) -> Callable[[], None]:
    """One sampling step's forward of `unet` on x at t = 500, without gradients, at `precision`."""
    unet = sampling_precision(unet.eval(), precision)
    t = torch.full((x.shape[0],), 500)

    def step() -> None:
        with torch.no_grad():
            unet(x, t)

    return step


def unet_sample(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    cfg = section(UNetTrainConfig, "unet", params)
    batch = params["generate"]["batch_size"]
    unet = build_unet(cfg.model, cfg.schedule, cfg.image_size)
    return sampling_forward(unet, precision, torch.randn(batch, 3, cfg.image_size, cfg.image_size)), batch


def guidance(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    batch, size = params["generate"]["batch_size"], params["classifier"]["image_size"]
    cond_fn = classifier_guidance(sampling_precision(classifier(params).eval(), precision), 30.0)
    x, t, target = torch.randn(batch, 3, size, size), torch.full((batch,), 500), torch.zeros(batch, dtype=torch.long)
    return (lambda: cond_fn(x, t, target)), batch


def upsampler_sample(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    cfg = section(UpsamplerTrainConfig, "upsampler", params)
    batch = params["upsample"]["batch_size"]
    unet = build_unet(cfg.model, cfg.schedule, cfg.image_size, in_channels=6, mid_attention=False)
    return sampling_forward(unet, precision, torch.randn(batch, 6, cfg.image_size, cfg.image_size)), batch


def yolo_train(params: dict, precision: str) -> tuple[Callable[[], None], int]:
    from detection.yolo import ultralytics_offline

    ultralytics_offline()
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    train = params["yolo"]["train"]
    model = DetectionModel(train["model"], nc=N_CLASSES, verbose=False).train()
    model.args = DEFAULT_CFG
    if train["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch, size = train["batch"], train["imgsz"]
    images = torch.rand(batch, 3, size, size)
    labels = {"img": images, "batch_idx": torch.arange(batch, dtype=torch.float32), "cls": torch.zeros(batch, 1),
              "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(batch, 1)}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = model.loss(labels)
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per workload and precision")
    parser.add_argument("--root", default=".", help="repo root holding params.yaml")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    params = read_params()
    threads = params["launch"]["torch_threads"]
    print(f"`auto` here: {resolve_mixed_precision('auto', torch.device('cpu'))}; torch {torch.__version__}, "
          f"{threads} threads (yolo_train: 1)\n")
    print("| workload | images/s fp32 | images/s bf16 | bf16 / fp32 |\n|---|---|---|---|")
    for name in args.only:
        torch.set_num_threads(1 if name == "yolo_train" else threads)
        rates = {}
        for precision in ("no", "bf16"):
            torch.manual_seed(0)
            AcceleratorState._reset_state(reset_partial_state=True)  # process-wide, it keeps its first precision
            try:
                step, batch = globals()[name](params, precision)
                rates[precision] = batch / timed(step, args.steps)
            finally:  # and leaves none behind
                AcceleratorState._reset_state(reset_partial_state=True)
        print(f"| {name} | {rates['no']:.1f} | {rates['bf16']:.1f} | {rates['bf16'] / rates['no']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
