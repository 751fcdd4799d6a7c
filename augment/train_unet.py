"""Train the unconditional ADM-style UNet (eps prediction, L_simple or L_hybrid) with accelerate.

Ho et al. 2020 (DDPM, L_simple), Nichol & Dhariwal 2021 (cosine schedule, learned variance,
L_hybrid), Dhariwal & Nichol 2021 (ADM architecture). One optimisation step = `grad_accum`
micro-batches of `batch_size` images per process. Every step draws its noise eps, timesteps t
and flips from a generator seeded by (seed, micro-batch number, process), and its batch from
`EpochBatchSampler`, so a run resumed from a checkpoint (`accelerator.save_state`, with the EMA
and the progress registered) replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast, set_seed
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm.auto import tqdm

import augment.data
import augment.unet
from augment.data import GENERATIVE_SPLITS, EpochBatchSampler, IndexDataset, load_image_set, to_model_range
from augment.unet import ArchConfig, ScheduleConfig, build_scheduler, build_unet, diffusion_loss
from pipelines.stage import StageError, to_jsonable, write_json

LOSS_COLUMNS = ("step", "loss", "lr", "images_per_s")


@dataclass(frozen=True)
class EmaConfig:
    max_decay: float = 0.9999          # decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)
    use_ema_warmup: bool = True
    inv_gamma: float = 1.0
    power: float = 0.75


@dataclass(frozen=True)
class UNetTrainConfig:
    """The `unet` params section."""

    seed: int = 0
    model: ArchConfig = field(default_factory=ArchConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    vlb_weight: float = 0.001          # lambda of L_hybrid (learned variance only)
    snr_gamma: float | None = None     # Min-SNR-gamma loss weighting (e.g. 5.0); null: plain L_simple
    batch_size: int = 32               # images per process per micro-batch
    grad_accum: int = 1                # micro-batches per optimisation step
    lr: float = 3e-4                   # AdamW, linear warm-up then constant
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0             # max global gradient norm
    mixed_precision: str = "auto"      # auto | no | bf16 | fp16
    hflip: bool = True                 # random horizontal flips
    max_steps: int = 1000              # stop at this many optimisation steps ...
    max_minutes: float | None = None   # ... or after this much training time (null: no time limit)
    checkpoint_every: int = 100        # steps between `accelerator.save_state` checkpoints
    keep_checkpoints: int = 2
    log_every: int = 10                # steps per row of the loss log
    ema: EmaConfig = field(default_factory=EmaConfig)
    n_samples: int = 16                # samples.png: DDIM samples from the EMA model
    sample_steps: int = 50
    sample_seed: int = 0


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


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 (or fp16) autocast on a GPU; bf16 on a CPU only where it has bf16 instructions."""
    if setting not in ("auto", "no", "bf16", "fp16"):
        raise StageError(f"params.yaml: unet.mixed_precision: '{setting}' is not auto, no, bf16 or fp16")
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    has_bf16 = torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or torch.cpu._is_amx_tile_supported()
    return "bf16" if has_bf16 else "no"


def fingerprint(cfg: UNetTrainConfig, images: torch.Tensor) -> str:
    """Hash of the settings, data and training code a checkpoint depends on (a mismatch: start afresh).

    The code counts too: after a fix to the loss or the model, DVC reruns the stage, and resuming
    a finished old run would silently save the old weights again.
    """
    settings = {k: v for k, v in to_jsonable(cfg).items() if k not in RESUMABLE_KEYS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(images.numpy().tobytes())
    for module in (augment.unet, augment.data, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def latest_checkpoint(checkpoint_dir: Path, key: str) -> Path | None:
    """The newest complete checkpoint made with the same fingerprint, if any."""
    candidates = sorted(checkpoint_dir.glob("step_*"))
    for path in reversed(candidates):
        marker = path / "fingerprint.txt"
        if marker.is_file() and marker.read_text().strip() == key:
            return path
    return None


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


def noised_batch(cfg: UNetTrainConfig, scheduler: DDPMScheduler, x0: torch.Tensor, gen: torch.Generator):
    """(x0 after flips, x_t, t, eps) for one micro-batch; x0 [B, 3, S, S] in [-1, 1]."""
    batch = x0.shape[0]
    if cfg.hflip:
        flip = (torch.rand(batch, generator=gen) < 0.5).view(-1, 1, 1, 1).to(x0.device)
        x0 = torch.where(flip, x0.flip(3), x0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    return x0, scheduler.add_noise(x0, noise, t), t, noise


def over_budget(max_minutes: float | None, elapsed_s: float) -> bool:
    return max_minutes is not None and elapsed_s >= max_minutes * 60


def warn_time_stop(stage: str, max_minutes: float, step: int, max_steps: int, accelerator: Accelerator) -> None:
    """A run cut by the clock ends at a step count that depends on the machine and its load."""
    accelerator.print(
        f"{stage}: WARNING: stopped by max_minutes ({max_minutes}) at step {step} of {max_steps}; the "
        f"weights depend on this machine's speed. For reproducible runs set max_minutes: null and size max_steps."
    )


def warmup_lr(cfg: UNetTrainConfig, step: int) -> float:
    """Learning rate of optimisation step `step` (0-based): linear warm-up, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


def build_training(cfg: UNetTrainConfig, image_size: int, accelerator: Accelerator):
    set_seed(cfg.seed)
    unet = build_unet(cfg.model, cfg.schedule, image_size)
    ema = EMAModel(
        unet.parameters(), decay=cfg.ema.max_decay, use_ema_warmup=cfg.ema.use_ema_warmup,
        inv_gamma=cfg.ema.inv_gamma, power=cfg.ema.power, model_cls=UNet2DModel, model_config=unet.config,
    )
    ema.to(accelerator.device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=warmup_lr(cfg, 0), weight_decay=cfg.weight_decay)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    return unet, ema, optimizer


def train_unet(cfg: UNetTrainConfig, prepared: Path | str, checkpoint_dir: Path | str) -> TrainedUNet:
    """Train (or resume) until max_steps or max_minutes; returns the EMA and raw models and the log."""
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision, PartialState().device),
    )
    data = load_image_set(prepared, GENERATIVE_SPLITS)
    scheduler = build_scheduler(cfg.schedule)
    unet, ema, optimizer = build_training(cfg, data.image_size, accelerator)
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)
    checkpoint_dir, key = Path(checkpoint_dir), fingerprint(cfg, data.images)
    resume_from = latest_checkpoint(checkpoint_dir, key)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"train_unet: resumed from {resume_from} (step {progress.step})")
    elif accelerator.is_main_process and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # checkpoints of other settings or data
    accelerator.wait_for_everyone()
    stop_reason = run_loop(cfg, accelerator, unet, ema, optimizer, scheduler, data.images, progress,
                           lambda step: save_checkpoint(accelerator, checkpoint_dir, step, key, cfg.keep_checkpoints))
    raw = accelerator.unwrap_model(unet)  # fp32 weights: mixed precision only autocasts
    ema_unet = UNet2DModel.from_config(raw.config)
    ema.copy_to(ema_unet.parameters())
    summary = {
        "steps": progress.step, "stop_reason": stop_reason, "train_minutes": round(progress.elapsed_s / 60, 2),
        "n_images": len(data.images), "image_size": data.image_size, "resumed_from": resume_from,
        "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
        "n_parameters": sum(p.numel() for p in raw.parameters()), "ema_decay": ema.cur_decay_value,
    }
    loss_log = pd.DataFrame(progress.rows, columns=list(LOSS_COLUMNS))
    return TrainedUNet(ema_unet.eval(), raw.eval(), scheduler, loss_log, summary, accelerator.is_main_process)


def run_loop(cfg, accelerator, unet, ema, optimizer, scheduler, images, progress, checkpoint) -> str:
    """The optimisation loop from progress.step on; returns why it stopped (max_steps | max_minutes)."""
    per_step = cfg.grad_accum * accelerator.num_processes
    remaining = max(cfg.max_steps - progress.step, 0)
    sampler = EpochBatchSampler(len(images), cfg.batch_size, cfg.seed, progress.step * per_step, remaining * per_step)
    loader = accelerator.prepare(DataLoader(IndexDataset(len(images)), batch_sampler=sampler))
    bar = tqdm(total=cfg.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc="train_unet", dynamic_ncols=True)
    window_loss, window_start, window_steps, started = 0.0, time.perf_counter(), 0, time.perf_counter() - progress.elapsed_s
    stop_reason = "max_steps"
    for micro, indices in enumerate(loader, start=progress.step * cfg.grad_accum):
        with accelerator.accumulate(unet):
            x0 = to_model_range(images[indices.cpu()]).to(accelerator.device)
            x0, x_t, t, noise = noised_batch(cfg, scheduler, x0, step_generator(cfg, micro, accelerator))
            loss = diffusion_loss(scheduler, unet(x_t, t).sample, x0, x_t, t, noise, cfg.vlb_weight, cfg.snr_gamma)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        window_loss += loss.detach().float() / cfg.grad_accum
        if not accelerator.sync_gradients:
            continue
        ema.step(accelerator.unwrap_model(unet).parameters())
        progress.step += 1
        window_steps += 1
        for group in optimizer.param_groups:
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
            checkpoint(progress.step)
        if out_of_time:
            stop_reason = "max_minutes"
            break
    bar.close()
    if stop_reason == "max_minutes":
        warn_time_stop("train_unet", cfg.max_minutes, progress.step, cfg.max_steps, accelerator)
    return stop_reason


@torch.no_grad()
def sample_images(unet: UNet2DModel, scheduler: DDPMScheduler, n: int, steps: int, seed: int) -> torch.Tensor:
    """n DDIM (eta = 0) samples [n, 3, S, S] in [-1, 1]; eps = the first 3 output channels."""
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    x = torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(device)
    for t in ddim.timesteps:
        eps = unet(x, t.to(device)).sample[:, :3]
        x = ddim.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


def write_unet_outputs(result: TrainedUNet, cfg: UNetTrainConfig, model_dir: Path, report_dir: Path) -> None:
    """models/unet: EMA UNet (save_pretrained) + scheduler/ + params.json + samples.png; loss.csv."""
    result.ema_unet.save_pretrained(model_dir)
    result.scheduler.save_pretrained(model_dir / "scheduler")
    samples = sample_images(result.ema_unet, result.scheduler, cfg.n_samples, cfg.sample_steps, cfg.sample_seed)
    save_image((samples + 1) / 2, model_dir / "samples.png", nrow=max(1, int(cfg.n_samples**0.5)), padding=1)
    write_json(model_dir / "params.json", {"unet": cfg, "training": result.summary})
    result.loss_log.to_csv(report_dir / "loss.csv", index=False)
