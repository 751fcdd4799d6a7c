"""ADM's super-resolution model: generated images from the generative resolution to the detector's.

guided-diffusion's `SuperResModel` is a UNet that sees x_t and the low-resolution image, bilinearly
upsampled to the output size, as 6 input channels, and predicts eps (or v) of the 3 image
channels; its training pairs are real images and their area-downsampled versions. Here it trains
like the scene UNet (`augment.train_unet`: accelerate, EMA, resumable checkpoints) through the
training view `PatchesWithLowRes`: random `patch_size` crops of the prepared images at the
detector's resolution, each conditioned on its own area-downsampled version. The crops sit on the
low-resolution pixel grid, so a crop's low-resolution view is exactly a window of the whole
image's. Being convolutional, the model then upsamples whole images: `Upsampler` runs DDIM
(`augment.samplers.sample`, clipping as trained) on the 3 image channels with the conditioning
held fixed (`LowResConditioned`).

`target: image` diffuses the image itself, as ADM does. `target: residual` diffuses what the
conditioning lacks, (image - conditioning) * `residual_scale`, and adds the conditioning back
after sampling (SRDiff, Li et al. 2022): the colours and layout come from the low-resolution image
by construction, so a short CPU training only has to learn the detail.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import FrozenDict
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from augment.data import load_image_set, to_model_range, to_rgb_arrays
from augment.precision import sampling_precision
from augment.samplers import sample
from augment.train_unet import TrainedUNet, UNetTrainConfig, save_samples, write_training_records
from augment.unet import build_unet
from core.errors import StageError
from core.io import write_json
from core.params import check_choice, check_positive

TARGETS = ("image", "residual")


@dataclass(frozen=True)
class UpsamplerTrainConfig(UNetTrainConfig):
    """The scene UNet's settings (image_size: the detector's resolution, where the crops are cut)
    plus the resolution it upsamples from and the crop size."""

    low_res: int                       # px of the images it takes (the generative resolution)
    patch_size: int                    # px of the training crops, at image_size
    target: str                        # image (ADM: x_0 is the image) | residual (x_0 = scale * (image - condition))
    residual_scale: float              # residual: brings the residual's small spread towards the image's

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "target", TARGETS)
        check_positive(self, "residual_scale")
        if self.model.attention_resolutions:
            raise ValueError("model.attention_resolutions: must be empty: the upsampler learns from crops and "
                             "upsamples whole images, which only a convolutional model sees alike")
        if self.low_res < 1 or self.image_size % self.low_res or self.image_size == self.low_res:
            raise ValueError(f"low_res: {self.low_res} px must divide image_size {self.image_size} at least twice over")
        if self.patch_size > self.image_size or self.patch_size < 1 or self.patch_size % self.factor:
            raise ValueError(f"patch_size: {self.patch_size} must be a multiple of the upsampling factor {self.factor} "
                             f"and at most image_size {self.image_size}")

    @property
    def factor(self) -> int:
        return self.image_size // self.low_res


def bilinear(low: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, s, s] -> [B, C, size, size], bilinear (ADM's upsampling of the conditioning image)."""
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def low_res_condition(x0: torch.Tensor, factor: int) -> torch.Tensor:
    """What the model sees of x_0 [B, 3, S, S]: area-downsampled by `factor`, bilinearly upsampled back."""
    return bilinear(F.avg_pool2d(x0, factor), x0.shape[-1])


class PatchesWithLowRes:
    """The upsampler's training view (see `augment.train_unet.WholeImages`)."""

    code = (sys.modules[__name__],)

    def __init__(self, cfg: UpsamplerTrainConfig):
        self.patch_size, self.factor, self.target, self.residual_scale = (cfg.patch_size, cfg.factor, cfg.target,
                                                                          cfg.residual_scale)

    def build(self, cfg: UNetTrainConfig, image_size: int) -> UNet2DModel:
        return build_unet(cfg.model, cfg.schedule, self.patch_size, in_channels=6, mid_attention=False)

    def clean(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> one random crop [B, 3, P, P] each, on the low-resolution grid, in [-1, 1]."""
        size, patch = images.shape[-1], self.patch_size
        offsets = torch.randint(0, (size - patch) // self.factor + 1, (len(images), 2), generator=gen) * self.factor
        crops = [image[:, y:y + patch, x:x + patch] for image, (y, x) in zip(images, offsets.tolist())]
        return to_model_range(torch.stack(crops))

    def split(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, conditioning): the image, or its scaled residual over the conditioning; the image area-
        downsampled by the factor and bilinearly upsampled back."""
        condition = low_res_condition(images, self.factor)
        x0 = (images - condition) * self.residual_scale if self.target == "residual" else images
        return x0, condition

    def model_input(self, x_t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_t, condition], dim=1)


class LowResConditioned(nn.Module):
    """The upsampler seen by the samplers as an unconditional 3-channel model at the output size:
    every call gets the fixed conditioning (the low-resolution images, bilinearly upsampled)."""

    def __init__(self, unet: UNet2DModel, condition: torch.Tensor):
        super().__init__()
        self.unet, self.condition = unet, condition

    config = property(lambda self: FrozenDict({**self.unet.config, "in_channels": 3,
                                               "sample_size": self.condition.shape[-1]}))
    device = property(lambda self: self.unet.device)
    dtype = property(lambda self: self.unet.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> UNet2DOutput:
        return self.unet(torch.cat([x, self.condition.to(x.dtype)], dim=1), t)


@dataclass(frozen=True)
class Upsampler:
    """A trained upsampler with what sampling needs to know of its training."""

    unet: UNet2DModel                  # 6 input channels: x_t and the conditioning
    scheduler: DDPMScheduler           # x_0 clipped to the image range, or the scaled residual's
    factor: int                        # output px / input px
    target: str                        # image | residual (see UpsamplerTrainConfig)
    residual_scale: float

    def __post_init__(self) -> None:
        if self.unet.config.in_channels != 6:
            raise ValueError("an upsampler has 6 input channels (x_t and the low-resolution image), "
                             f"got {self.unet.config.in_channels}")

    @classmethod
    def trained(cls, unet: UNet2DModel, scheduler: DDPMScheduler, cfg: UpsamplerTrainConfig) -> "Upsampler":
        """The trained model with its scheduler clipping x_0 where the diffused values live: [-1, 1] for
        images, [-scale, scale] for residuals (a residual of at most the whole image range)."""
        clip = cfg.residual_scale if cfg.target == "residual" else 1.0
        return cls(unet, DDPMScheduler.from_config(scheduler.config, clip_sample_range=clip), cfg.factor, cfg.target,
                   cfg.residual_scale)

    def save(self, folder: Path) -> None:
        self.unet.save_pretrained(folder)
        self.scheduler.save_pretrained(folder / "scheduler")
        write_json(folder / "upsampler.json", {"factor": self.factor, "target": self.target,
                                                "residual_scale": self.residual_scale})

    @classmethod
    def load(cls, folder: Path | str, device: torch.device | str = "cpu", precision: str = "no") -> "Upsampler":
        """The saved upsampler, sampling at `precision` (augment.precision.sampling_precision)."""
        folder = Path(folder)
        if not (folder / "upsampler.json").is_file():
            raise StageError(f"{folder / 'upsampler.json'}: missing; run stage train_upsampler first")
        try:
            meta = json.loads((folder / "upsampler.json").read_text())
            factor, target, scale = int(meta["factor"]), str(meta["target"]), float(meta["residual_scale"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise StageError(f"{folder / 'upsampler.json'}: unreadable ({type(err).__name__}: {err}); "
                             "run stage train_upsampler again") from None
        unet = sampling_precision(UNet2DModel.from_pretrained(folder).to(device).eval(), precision)
        return cls(unet, DDPMScheduler.from_pretrained(folder / "scheduler"), factor, target, scale)

    @torch.no_grad()
    def __call__(self, low: torch.Tensor, steps: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Low-resolution images [B, 3, s, s] in [-1, 1] -> [B, 3, s * factor, s * factor] in [-1, 1] by
        DDIM (eta 0) in `steps` steps; image b draws its noise from generators[b]."""
        condition = bilinear(low.float(), low.shape[-1] * self.factor).to(self.unet.device)
        x0 = sample("ddim", LowResConditioned(self.unet, condition), self.scheduler, generators, steps=steps)
        if self.target == "residual":
            x0 = condition + x0 / self.residual_scale
        return x0.clamp(-1, 1)


def upsample_images(upsampler: Upsampler, images: Sequence[np.ndarray], seeds: Sequence[int], steps: int,
                    batch_size: int) -> list[np.ndarray]:
    """uint8 RGB images [s, s, 3] -> uint8 [s * factor, s * factor, 3]; image i draws from seeds[i],
    so the result does not depend on the batching."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        low = to_model_range(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2))
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[start:start + batch_size]]
        high = upsampler(low, steps, generators).cpu()
        out.extend(to_rgb_arrays(high))
    return out


def write_upsampler_outputs(result: TrainedUNet, cfg: UpsamplerTrainConfig, prepared: Path | str, model_dir: Path,
                            report_dir: Path) -> Upsampler:
    """model_dir: the EMA upsampler (`Upsampler.save`), params.json and samples.png, where each row is
    a real `val` image, its area-downsampled version bicubic-resampled back, and the upsampler's
    version of it (DDIM, sample_steps); report_dir: loss.csv and training.json."""
    upsampler = Upsampler.trained(result.ema_unet, result.scheduler, cfg)
    upsampler.save(model_dir)
    real = to_model_range(load_image_set(prepared, ("val",), cfg.image_size).images[:cfg.n_samples])
    low = F.avg_pool2d(real, cfg.factor)
    bicubic = F.interpolate(low, size=cfg.image_size, mode="bicubic", align_corners=False).clamp(-1, 1)
    generators = [torch.Generator().manual_seed(cfg.sample_seed + i) for i in range(len(low))]
    rows = torch.stack([real, bicubic, upsampler(low, cfg.sample_steps, generators).cpu()], dim=1).flatten(0, 1)
    save_samples(model_dir / "samples.png", rows, 3, f"upsampler after {result.summary['steps']} training steps",
                 ["real (val)", f"bicubic from {cfg.low_res} px", f"upsampled ({cfg.sample_steps} DDIM steps)"])
    write_training_records(result, "upsampler", cfg, model_dir, report_dir)
    return upsampler
