"""Train the noise-aware litter classifier p(y | x_t, t) (guidance) or its clean twin (the judge).

Dhariwal & Nichol 2021, section 4: the classifier sees x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps with t uniform over the UNet's schedule (`DDPMScheduler.add_noise`).
Optionally a share of every batch draws t from [0, low_noise_max_t) instead: objects a few pixels
across (cigarette butts at 32 px) drown in the noise above that, so uniform t leaves too few
examples in which they can be learned, and guidance toward them then has nothing to follow.
The judge trains the same model with t = 0 only, from its own seed, on clean real images.

Loss: multi-label BCE with class balancing, pos_weight_c = (N - P_c) / max(P_c, 1) where N is
the number of training images and P_c those tagged with class c (negatives / positives), so
each class's positives weigh as much in total as its negatives.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader
from torchmetrics.classification import MultilabelAveragePrecision
from tqdm.auto import tqdm

from augment.classifier import POOLS, NoisyLitterClassifier
from augment.data import (
    GENERATIVE_SPLITS,
    AugmentedImages,
    ImageSet,
    classifier_augmentation,
    to_model_range,
)
from augment.patches import CropSettings, load_training_set
from augment.processes import process_accelerator
from augment.settings import MIXED_PRECISION
from augment.training import over_budget, warn_time_stop
from augment.unet import ArchConfig
from core.errors import StageError
from core.params import check_at_least, check_choice, check_positive


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """The `classifier` and `judge` params sections."""

    seed: int
    image_size: int                    # px: the prepared images are area-downsampled to this (the UNet's)
    model: ArchConfig
    pool: str                          # attention | adaptive
    noised: bool                       # False: t = 0 always (the judge)
    batch_size: int
    lr: float                          # AdamW
    weight_decay: float
    anneal_lr: bool                    # linear decay to 0 at max_steps
    max_steps: int                     # stop at this many steps ...
    max_minutes: float | None          # ... or after this much training time (null: no time limit)
    augment_strength: float            # 0: flips only; 1: mild shift-scale + colour jitter
    mixed_precision: str               # auto | no | bf16 | fp16
    eval_buckets: int                  # val metrics per noise level bucket of t (1 when not noised)
    eval_seed: int
    init_from_unet: bool               # start the encoder from the trained UNet's (noised only)
    low_noise_share: float             # share of each batch with t uniform in [0, low_noise_max_t) ...
    low_noise_max_t: int               # ... instead of over the whole schedule (noised only)

    def __post_init__(self) -> None:
        check_choice(self, "pool", POOLS)
        check_choice(self, "mixed_precision", MIXED_PRECISION)
        check_at_least(self, 1, "image_size", "batch_size", "max_steps", "eval_buckets")
        check_at_least(self, 0, "weight_decay", "augment_strength")
        check_positive(self, "lr", "max_minutes")
        if not 0 <= self.low_noise_share <= 1:
            raise ValueError(f"low_noise_share: must be in [0, 1], got {self.low_noise_share}")
        if not self.noised:
            for name in ("init_from_unet", "low_noise_share"):
                if getattr(self, name):
                    raise ValueError(f"{name}: needs noised: true; a clean classifier (the judge) sees t = 0 only "
                                     "and must not share the generator's weights")


@dataclass(frozen=True)
class PatchClassifierTrainConfig(ClassifierTrainConfig):
    """The `patch_classifier` and `patch_judge` params sections: trained on crops (augment.patches)."""

    crops: CropSettings


@dataclass
class TrainedClassifier:
    model: NoisyLitterClassifier
    report: dict
    is_main: bool


def pos_weight(targets: torch.Tensor) -> torch.Tensor:
    """(N - P_c) / max(P_c, 1) per class from multi-hot targets [N, n_classes]."""
    positives = targets.sum(dim=0)
    return (targets.shape[0] - positives) / positives.clamp(min=1)


def sample_timesteps(cfg: ClassifierTrainConfig, n_steps: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    if not cfg.noised:
        return torch.zeros(batch, dtype=torch.long)
    t = torch.randint(0, n_steps, (batch,), generator=gen)
    if cfg.low_noise_share <= 0:
        return t
    low = torch.rand(batch, generator=gen) < cfg.low_noise_share
    return torch.where(low, torch.randint(0, cfg.low_noise_max_t, (batch,), generator=gen), t)


def check_low_noise_range(cfg: ClassifierTrainConfig, name: str, scheduler: DDPMScheduler | None) -> None:
    """low_noise_max_t lies inside the UNet's schedule (known only once models/unet exists)."""
    if scheduler is not None and not 1 <= cfg.low_noise_max_t <= scheduler.config.num_train_timesteps:
        raise StageError(f"params.yaml: {name}.low_noise_max_t: must be in [1, "
                         f"{scheduler.config.num_train_timesteps}] (the UNet's num_train_timesteps), "
                         f"got {cfg.low_noise_max_t}")


def train_classifier(cfg: ClassifierTrainConfig, name: str, prepared: Path | str,
                     unet_dir: Path | str) -> TrainedClassifier:
    """Train section `name` (classifier | judge | patch_classifier | patch_judge) on train + tagged, noised with the schedule in
    unet_dir unless cfg.noised is False; evaluate on val."""
    scheduler_dir = Path(unet_dir) / "scheduler"
    if cfg.noised and not scheduler_dir.is_dir():
        raise StageError(f"{scheduler_dir}: noise schedule not found; run train_unet first")
    try:
        scheduler = DDPMScheduler.from_pretrained(str(scheduler_dir)) if cfg.noised else None
    except (OSError, ValueError) as err:
        raise StageError(f"{scheduler_dir}: unreadable noise schedule ({type(err).__name__}: {err}); rerun the "
                         "train_unet stage".replace("\n", " ")) from None
    check_low_noise_range(cfg, name, scheduler)
    accelerator, precision = process_accelerator(cfg.mixed_precision)
    accelerator.print(f"train_{name}: mixed precision {precision}")
    data = load_training_set(prepared, GENERATIVE_SPLITS, cfg)
    set_seed(cfg.seed)
    model = NoisyLitterClassifier.from_arch(
        class_names=data.class_names, image_size=data.image_size, arch=cfg.model, pool=cfg.pool,
        num_train_timesteps=scheduler.config.num_train_timesteps if scheduler else 1000, where=f"params.yaml: {name}.model",
    )
    if cfg.init_from_unet:
        model.copy_unet_encoder(unet_dir)
    loader = DataLoader(
        AugmentedImages(data, classifier_augmentation(cfg.augment_strength, cfg.seed)), batch_size=cfg.batch_size,
        shuffle=True, drop_last=len(data.images) >= cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight(data.targets).to(accelerator.device))
    steps, stop_reason, minutes = fit(cfg, f"train_{name}", accelerator, model, optimizer, loader, loss_fn, scheduler)
    model = accelerator.unwrap_model(model).float().eval()
    report = {"steps": steps, "stop_reason": stop_reason, "train_minutes": round(minutes, 2),
              "n_train_images": len(data.images), "pos_weight": pos_weight(data.targets).tolist()}
    if accelerator.is_main_process:
        report |= evaluate(model, load_training_set(prepared, ("val",), cfg), scheduler, cfg)
    return TrainedClassifier(model, report, accelerator.is_main_process)


def fit(cfg: ClassifierTrainConfig, stage: str, accelerator: Accelerator, model: torch.nn.Module,
        optimizer: torch.optim.Optimizer, loader: DataLoader, loss_fn: torch.nn.Module,
        scheduler: DDPMScheduler | None) -> tuple[int, str, float]:
    """The optimisation loop; returns (steps, stop reason, minutes)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + accelerator.process_index)
    n_steps = scheduler.config.num_train_timesteps if scheduler else 1
    bar = tqdm(total=cfg.max_steps, desc=stage,
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    step, started, stop_reason = 0, time.perf_counter(), "max_steps"
    model.train()
    while step < cfg.max_steps and stop_reason == "max_steps":
        for x0, target in loader:
            t = sample_timesteps(cfg, n_steps, x0.shape[0], gen).to(x0.device)
            x_t = scheduler.add_noise(x0, torch.randn(x0.shape, generator=gen).to(x0.device), t) if scheduler else x0
            loss = loss_fn(model(x_t, t).float(), target)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * (1 - step / cfg.max_steps) if cfg.anneal_lr else cfg.lr
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if over_budget(cfg.max_minutes, time.perf_counter() - started):
                stop_reason = "max_minutes"
            if step >= cfg.max_steps or stop_reason != "max_steps":
                break
    bar.close()
    if stop_reason == "max_minutes":
        warn_time_stop(stage, cfg.max_minutes, step, cfg.max_steps, accelerator)
    return step, stop_reason, (time.perf_counter() - started) / 60


def bucket_ranges(n_steps: int, n_buckets: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of t splitting [0, n_steps) into n_buckets nearly equal parts."""
    edges = [round(i * n_steps / n_buckets) for i in range(n_buckets + 1)]
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def evaluate(model: NoisyLitterClassifier, val: ImageSet, scheduler: DDPMScheduler | None,
             cfg: ClassifierTrainConfig) -> dict:
    """Per-class AP and accuracy (threshold 0.5) on val, per bucket of noise level t, and on
    [0, low_noise_max_t) as `low_noise` when the classifier trained with a low-noise share."""
    names = list(val.class_names)
    n_steps = scheduler.config.num_train_timesteps if scheduler else 1
    gen = torch.Generator().manual_seed(cfg.eval_seed)
    device = next(model.parameters()).device
    x0, target = to_model_range(val.images).to(device), val.targets.to(device).long()

    def score(lo: int, hi: int) -> dict:
        t = torch.randint(lo, hi, (len(x0),), generator=gen).to(device)
        x_t = scheduler.add_noise(x0, torch.randn(x0.shape, generator=gen).to(device), t) if scheduler else x0
        logits = torch.cat([model(x_t[i:i + 256], t[i:i + 256]) for i in range(0, len(x0), 256)])
        ap = MultilabelAveragePrecision(num_labels=len(names), average=None)(logits, target)
        accuracy = ((logits > 0).long() == target).float().mean(dim=0)
        return {
            "t_range": [lo, hi - 1],
            "ap": {n: None if math.isnan(v) else round(v, 4) for n, v in zip(names, ap.tolist())},
            "accuracy": {n: round(v, 4) for n, v in zip(names, accuracy.tolist())},
            "mean_accuracy": round(accuracy.mean().item(), 4),
            "mAP": None if torch.isnan(ap).all() else round(ap.nanmean().item(), 4),
        }

    report = {"class_names": names, "n_val_images": len(x0),
              "buckets": [score(lo, hi) for lo, hi in bucket_ranges(n_steps, cfg.eval_buckets if scheduler else 1)]}
    if cfg.low_noise_share > 0:  # noised only (ClassifierTrainConfig)
        report["low_noise"] = score(0, cfg.low_noise_max_t)
    return report
