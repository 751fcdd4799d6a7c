"""Train the unconditional ADM-style UNet (eps or v prediction, L_simple or L_hybrid) with accelerate.

Ho et al. 2020 (DDPM, L_simple), Nichol & Dhariwal 2021 (cosine schedule, learned variance,
L_hybrid), Dhariwal & Nichol 2021 (ADM architecture), Salimans & Ho 2022 (v-prediction). One
optimisation step = `grad_accum` micro-batches of `batch_size` images per process. Every step
draws its noise eps, timesteps t and flips from a generator seeded by (seed, micro-batch number,
process), and its batch from `EpochBatchSampler`, so a run resumed from a checkpoint
(`accelerator.save_state`, with the EMA and the progress registered) replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import augment.data
import augment.training
import augment.unet
from augment.data import (
    GENERATIVE_SPLITS,
    ROAD_SPLITS,
    EpochBatchSampler,
    IndexDataset,
    to_model_range,
    to_rgb_arrays,
)
from augment.patches import CropSettings, load_training_set
from augment.processes import process_accelerator
from augment.samplers import sample
from augment.settings import MIXED_PRECISION
from augment.training import over_budget, warn_time_stop, without_run_details
from augment.unet import ArchConfig, ScheduleConfig, build_scheduler, build_unet, diffusion_loss
from core.errors import StageError
from core.io import write_json
from core.params import check_at_least, check_choice, check_positive, to_jsonable
from scenes.figures import image_grid

LOSS_COLUMNS = ("step", "loss", "lr", "images_per_s")


@dataclass(frozen=True)
class EmaConfig:
    max_decay: float                   # decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)
    use_ema_warmup: bool
    inv_gamma: float
    power: float

    def __post_init__(self) -> None:
        if not 0 <= self.max_decay < 1:
            raise ValueError(f"max_decay: must be in [0, 1), got {self.max_decay}")


@dataclass(frozen=True)
class UNetTrainConfig:
    """The `unet` params section."""

    seed: int
    image_size: int                    # px: the prepared images are area-downsampled to this
    model: ArchConfig
    schedule: ScheduleConfig
    vlb_weight: float                  # lambda of L_hybrid (learned variance only)
    snr_gamma: float | None            # Min-SNR-gamma loss weighting (e.g. 5.0); null: plain L_simple
    batch_size: int                    # images per process per micro-batch
    grad_accum: int                    # micro-batches per optimisation step
    lr: float                          # AdamW, linear warm-up then constant
    warmup_steps: int
    weight_decay: float
    grad_clip: float                   # max global gradient norm
    mixed_precision: str               # auto | no | bf16 | fp16
    hflip: bool                        # random horizontal flips
    max_steps: int                     # stop at this many optimisation steps ...
    max_minutes: float | None          # ... or after this much training time (null: no time limit)
    checkpoint_every: int              # steps between `accelerator.save_state` checkpoints
    keep_checkpoints: int
    log_every: int                     # steps per row of the loss log
    ema: EmaConfig
    n_samples: int                     # samples.png: DDIM samples from the EMA model
    sample_steps: int
    sample_seed: int

    def __post_init__(self) -> None:
        check_choice(self, "mixed_precision", MIXED_PRECISION)
        check_at_least(self, 1, "image_size", "batch_size", "grad_accum", "max_steps", "checkpoint_every", "keep_checkpoints",
                       "log_every", "n_samples", "sample_steps")
        check_at_least(self, 0, "warmup_steps", "weight_decay", "vlb_weight")
        check_positive(self, "lr", "grad_clip", "snr_gamma", "max_minutes")


@dataclass(frozen=True)
class PatchUNetTrainConfig(UNetTrainConfig):
    """The `patch_unet` params section: the `unet` settings, trained on crops (augment.patches)."""

    crops: CropSettings
    init_from_unet: bool               # start from the scene UNet's weights (model must equal unet.model)


# Settings that may change between a checkpoint and its resumption without invalidating it.
RESUMABLE_KEYS = ("max_steps", "max_minutes", "checkpoint_every", "keep_checkpoints", "log_every",
                  "n_samples", "sample_steps", "sample_seed")


@dataclass
class Progress:
    """Training state beyond weights/optimiser/EMA, saved in every checkpoint."""

    step: int = 0
    elapsed_s: float = 0.0
    rows: list = field(default_factory=list)  # the loss log so far

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.elapsed_s, self.rows = state["step"], state["elapsed_s"], list(state["rows"])


@dataclass
class TrainedUNet:
    ema_unet: UNet2DModel
    raw_unet: UNet2DModel
    scheduler: DDPMScheduler
    loss_log: pd.DataFrame
    summary: dict
    is_main: bool


def fingerprint(cfg: UNetTrainConfig, images: torch.Tensor, accelerator: Accelerator, view: WholeImages) -> str:
    """Hash of what a checkpoint's weights depend on (a mismatch: start afresh): the settings, the
    precision and number of processes they resolved to, the data and the training code.

    The code counts too: after a fix to the loss or the model, DVC reruns the stage, and resuming
    a finished old run would silently save the old weights again.
    """
    settings = {k: v for k, v in to_jsonable(cfg).items() if k not in RESUMABLE_KEYS}
    settings["resolved"] = [accelerator.mixed_precision, accelerator.num_processes]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(images.numpy().tobytes())
    if getattr(view, "init_from", None) is not None:  # other starting weights: other weights
        digest.update(view.weights_file().read_bytes())
    for module in (augment.unet, augment.data, augment.training, sys.modules[__name__], *view.code):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def resumable_checkpoints(checkpoint_dir: Path, key: str, max_steps: int) -> list[Path]:
    """Complete checkpoints made with the same fingerprint at step <= max_steps, oldest first.

    A checkpoint past max_steps is never resumed: its weights have trained longer than asked.
    One at or before it lies on the same trajectory (batch order and noise depend only on the
    step), so resuming it gives exactly what an uninterrupted run to max_steps gives.
    """
    def usable(path: Path) -> bool:
        marker = path / "fingerprint.txt"
        return (marker.is_file() and marker.read_text().strip() == key
                and int(path.name.removeprefix("step_")) <= max_steps)

    return [path for path in sorted(checkpoint_dir.glob("step_*")) if usable(path)]


def save_checkpoint(accelerator: Accelerator, checkpoint_dir: Path, step: int, key: str, keep: int) -> None:
    path = checkpoint_dir / f"step_{step:08d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "fingerprint.txt").write_text(key + "\n")  # written last: marks the checkpoint complete
        for old in sorted(checkpoint_dir.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def step_generator(cfg: UNetTrainConfig, micro_batch: int, accelerator: Accelerator) -> torch.Generator:
    """The micro-batch's generator for eps, t and flips; also reseeds the global RNG (dropout)."""
    seed = (cfg.seed * 1_000_003 + micro_batch) * accelerator.num_processes + accelerator.process_index
    torch.manual_seed(seed + 1)
    return torch.Generator().manual_seed(seed)


def flipped(cfg: UNetTrainConfig, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The batch with each image flipped horizontally at random (when cfg.hflip)."""
    if not cfg.hflip:
        return images
    flip = (torch.rand(len(images), generator=gen) < 0.5).view(-1, 1, 1, 1).to(images.device)
    return torch.where(flip, images.flip(3), images)


def noised(scheduler: DDPMScheduler, x0: torch.Tensor, gen: torch.Generator):
    """(x_t, t, eps) for x0 [B, C, S, S]: uniform t, Gaussian eps."""
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    return scheduler.add_noise(x0, noise, t), t, noise


def noised_batch(cfg: UNetTrainConfig, scheduler: DDPMScheduler, x0: torch.Tensor, gen: torch.Generator):
    """(x0 after flips, x_t, t, eps) for one micro-batch of whole images; x0 [B, 3, S, S] in [-1, 1]."""
    x0 = flipped(cfg, x0, gen)
    return (x0, *noised(scheduler, x0, gen))


def warmup_lr(cfg: UNetTrainConfig, step: int) -> float:
    """Learning rate of optimisation step `step` (0-based): linear warm-up, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


class WholeImages:
    """What the scene UNet learns: every training image whole as x_0, and x_t as the model's input.

    A training view decides what a batch of training images becomes (`clean`: images in [-1, 1]),
    what of a (flipped) image is diffused and what the model sees beside x_t (`split`), and how the
    two make the model's input; `augment.superres.PatchesWithLowRes` is the other one.
    """

    code: tuple = ()                   # modules beside this one whose code the weights depend on

    def __init__(self, init_from: Path | None = None):
        self.init_from = init_from     # a trained UNet folder (same shape) to start from; None: random weights

    def build(self, cfg: UNetTrainConfig, image_size: int) -> UNet2DModel:
        unet = build_unet(cfg.model, cfg.schedule, image_size)
        if self.init_from is not None:
            try:
                unet.load_state_dict(load_file(str(self.weights_file())))
            except (RuntimeError, SafetensorError) as err:
                raise StageError(f"{self.init_from}: its weights do not fit this model (init_from_unet needs the same "
                                 f"model settings): {str(err).splitlines()[0]}") from None
        return unet

    def weights_file(self) -> Path:
        """The starting weights, checked to exist and to fit (one StageError line otherwise)."""
        weights = Path(self.init_from) / SAFETENSORS_WEIGHTS_NAME
        if not weights.is_file():
            raise StageError(f"{weights}: not found; run train_unet first (init_from_unet starts from it)")
        return weights

    def clean(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> x_0 [B, 3, S, S] in [-1, 1] (draws nothing from gen)."""
        return to_model_range(images)

    def split(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x_0, conditioning): the image itself, nothing beside it."""
        return images, None

    def model_input(self, x_t: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return x_t


@dataclass
class TrainingState:
    """What the optimisation loop works on, built by `build_training`."""

    accelerator: Accelerator
    view: WholeImages                  # or another training view (see WholeImages)
    unet: UNet2DModel                  # prepared by accelerate (possibly DDP-wrapped)
    ema: EMAModel
    optimizer: torch.optim.Optimizer
    scheduler: DDPMScheduler
    images: torch.Tensor               # uint8 [N, 3, S, S], the whole training set
    progress: Progress
    checkpoint: Callable[[int], None]  # save a checkpoint at this step


def build_training(cfg: UNetTrainConfig, images: torch.Tensor, accelerator: Accelerator,
                   checkpoint: Callable[[int], None], view: WholeImages) -> TrainingState:
    set_seed(cfg.seed)
    unet = view.build(cfg, int(images.shape[-1]))
    ema = EMAModel(
        unet.parameters(), decay=cfg.ema.max_decay, use_ema_warmup=cfg.ema.use_ema_warmup,
        inv_gamma=cfg.ema.inv_gamma, power=cfg.ema.power, model_cls=UNet2DModel, model_config=unet.config,
        foreach=True,
    )
    ema.to(accelerator.device)
    # fused: one kernel for all parameters, several times faster a step on a CPU (bench/RESULTS.md)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=warmup_lr(cfg, 0), weight_decay=cfg.weight_decay, fused=True)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    return TrainingState(accelerator, view, unet, ema, optimizer, build_scheduler(cfg.schedule), images, Progress(),
                         checkpoint)


def train_unet(cfg: UNetTrainConfig, prepared: Path | str, checkpoint_dir: Path | str,
               view: WholeImages | None = None) -> TrainedUNet:
    """Train (or resume) until max_steps or max_minutes; returns the EMA and raw models and the log.
    `view`: what the model learns from the images (WholeImages, the scene UNet, when None)."""
    view = WholeImages() if view is None else view
    accelerator, precision = process_accelerator(cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    accelerator.print(f"train_unet: mixed precision {precision}")
    # crops centre on known boxes (augment.patches); whole images may come from the unlabelled pool
    data = load_training_set(prepared, GENERATIVE_SPLITS if getattr(cfg, "crops", None) else ROAD_SPLITS, cfg)
    checkpoint_dir, key = Path(checkpoint_dir), fingerprint(cfg, data.images, accelerator, view)
    state = build_training(cfg, data.images, accelerator,
                           lambda step: save_checkpoint(accelerator, checkpoint_dir, step, key, cfg.keep_checkpoints),
                           view)
    accelerator.register_for_checkpointing(state.ema, state.progress)
    usable = resumable_checkpoints(checkpoint_dir, key, cfg.max_steps) if checkpoint_dir.is_dir() else []
    resume_from = usable[-1] if usable else None
    if accelerator.is_main_process and checkpoint_dir.is_dir():
        for path in set(checkpoint_dir.iterdir()) - set(usable):  # other settings, data or code; past max_steps
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    accelerator.wait_for_everyone()
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"train_unet: resumed from {resume_from} (step {state.progress.step})")
    accelerator.wait_for_everyone()
    stop_reason = run_loop(cfg, state)
    raw = accelerator.unwrap_model(state.unet)  # fp32 weights: mixed precision only autocasts
    ema_unet = UNet2DModel.from_config(raw.config)
    state.ema.copy_to(ema_unet.parameters())
    summary = {
        "steps": state.progress.step, "stop_reason": stop_reason,
        "train_minutes": round(state.progress.elapsed_s / 60, 2), "n_images": len(data.images),
        "image_size": data.image_size, "resumed_from": resume_from, "mixed_precision": accelerator.mixed_precision,
        "num_processes": accelerator.num_processes, "n_parameters": sum(p.numel() for p in raw.parameters()),
        "ema_decay": state.ema.get_decay(state.ema.optimization_step),  # also right after a resume
    }
    loss_log = pd.DataFrame(state.progress.rows, columns=list(LOSS_COLUMNS))
    return TrainedUNet(ema_unet.eval(), raw.eval(), state.scheduler, loss_log, summary, accelerator.is_main_process)


def run_loop(cfg: UNetTrainConfig, state: TrainingState) -> str:
    """The optimisation loop from progress.step on; returns why it stopped (max_steps | max_minutes)."""
    accelerator, unet, progress = state.accelerator, state.unet, state.progress
    per_step = cfg.grad_accum * accelerator.num_processes
    remaining = max(cfg.max_steps - progress.step, 0)
    n_images = len(state.images)
    sampler = EpochBatchSampler(n_images, cfg.batch_size, cfg.seed, progress.step * per_step, remaining * per_step)
    loader = accelerator.prepare(DataLoader(IndexDataset(n_images), batch_sampler=sampler))
    bar = tqdm(total=cfg.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc="train_unet", dynamic_ncols=True)
    window_loss, window_start, window_steps, started = 0.0, time.perf_counter(), 0, time.perf_counter() - progress.elapsed_s
    stop_reason = "max_steps"
    for micro, indices in enumerate(loader, start=progress.step * cfg.grad_accum):
        with accelerator.accumulate(unet):
            gen = step_generator(cfg, micro, accelerator)
            images = flipped(cfg, state.view.clean(state.images[indices.cpu()], gen).to(accelerator.device), gen)
            x0, condition = state.view.split(images)
            x_t, t, noise = noised(state.scheduler, x0, gen)
            loss = diffusion_loss(state.scheduler, unet(state.view.model_input(x_t, condition), t).sample, x0, x_t, t,
                                  noise, cfg.vlb_weight, cfg.snr_gamma)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            state.optimizer.step()
            state.optimizer.zero_grad(set_to_none=True)
        window_loss += loss.detach().float() / cfg.grad_accum
        if not accelerator.sync_gradients:
            continue
        state.ema.step(accelerator.unwrap_model(unet).parameters())
        progress.step += 1
        window_steps += 1
        for group in state.optimizer.param_groups:
            group["lr"] = warmup_lr(cfg, progress.step)
        progress.elapsed_s = time.perf_counter() - started
        if progress.step % cfg.log_every == 0 or progress.step == cfg.max_steps:
            now = time.perf_counter()
            mean_loss = accelerator.reduce(window_loss / window_steps, "mean").item()
            speed = window_steps * per_step * cfg.batch_size / (now - window_start)
            progress.rows.append([progress.step, mean_loss, warmup_lr(cfg, progress.step - 1), round(speed, 1)])
            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{speed:.0f}")
            window_loss, window_start, window_steps = 0.0, now, 0
        bar.update(1)
        out_of_time = torch.tensor([over_budget(cfg.max_minutes, progress.elapsed_s)], device=accelerator.device)
        out_of_time = broadcast(out_of_time).item() if accelerator.num_processes > 1 else out_of_time.item()
        if progress.step % cfg.checkpoint_every == 0 or progress.step == cfg.max_steps or out_of_time:
            state.checkpoint(progress.step)
        if out_of_time:
            stop_reason = "max_minutes"
            break
    bar.close()
    if stop_reason == "max_minutes":
        warn_time_stop("train_unet", cfg.max_minutes, progress.step, cfg.max_steps, accelerator)
    return stop_reason


def sample_grid(unet: UNet2DModel, scheduler: DDPMScheduler, n: int, steps: int, seed: int) -> torch.Tensor:
    """n unguided DDIM (eta = 0) samples [n, 3, S, S] in [-1, 1]; sample i draws from seed + i."""
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    return sample("ddim", unet, scheduler, generators, steps=steps).clamp(-1, 1)


SAMPLE_PX = 96  # sample grids: small images are shown at least this large (nearest neighbour)


def save_samples(path: Path, images: torch.Tensor, n_cols: int, title: str, col_titles: Sequence[str] = ()) -> None:
    """A labelled grid of images [n, 3, S, S] in [-1, 1], row-major, each shown at least SAMPLE_PX."""
    scale = max(1, math.ceil(SAMPLE_PX / images.shape[-1]))
    tiles = [tile.repeat(scale, axis=0).repeat(scale, axis=1) for tile in to_rgb_arrays(images)]
    rows = [tiles[i:i + n_cols] for i in range(0, len(tiles), n_cols)]
    shown = f"{images.shape[-1]} px" + (f", shown {scale}x" if scale > 1 else "")
    image_grid(path, rows, [""] * len(rows), col_titles, [], title=f"{title} ({shown})")


def write_unet_outputs(result: TrainedUNet, cfg: UNetTrainConfig, model_dir: Path, report_dir: Path,
                       section: str = "unet") -> None:
    """model_dir: EMA UNet (save_pretrained) + scheduler/ + params.json + samples.png (labelled);
    report_dir: loss.csv and training.json (the whole summary, run details included)."""
    result.ema_unet.save_pretrained(model_dir)
    result.scheduler.save_pretrained(model_dir / "scheduler")
    samples = sample_grid(result.ema_unet, result.scheduler, cfg.n_samples, cfg.sample_steps, cfg.sample_seed)
    save_samples(model_dir / "samples.png", samples, max(1, int(cfg.n_samples**0.5)),
                 f"{section}: {cfg.n_samples} unguided DDIM samples ({cfg.sample_steps} steps) of the EMA model "
                 f"after {result.summary['steps']} training steps")
    write_training_records(result, section, cfg, model_dir, report_dir)


def write_training_records(result: TrainedUNet, section: str, cfg: UNetTrainConfig, model_dir: Path,
                           report_dir: Path) -> None:
    """model_dir/params.json (the settings, the summary without run details), report_dir/training.json
    (the whole summary) and report_dir/loss.csv."""
    write_json(model_dir / "params.json", {section: cfg, "training": without_run_details(result.summary)})
    write_json(report_dir / "training.json", result.summary)
    result.loss_log.to_csv(report_dir / "loss.csv", index=False)
