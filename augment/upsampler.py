"""ADM's super-resolution model: generated images from the generative resolution to the detector's.

guided-diffusion's `SuperResModel` is a UNet that sees x_t and the low-resolution image, bilinearly
upsampled to the output size, as 6 input channels, and predicts eps (or v) of the 3 image
channels; its training pairs are real images and their area-downsampled versions. Here it trains
like the scene UNet (`augment.train_unet`: accelerate, EMA, resumable checkpoints) through the
training view `PatchesWithLowRes`: random `patch_size` crops of the prepared images at the
detector's resolution, each conditioned on its own area-downsampled version. The crops sit on the
low-resolution pixel grid, so a crop's low-resolution view is exactly a window of the whole
image's. Being convolutional, the model then upsamples whole images: `upsample` runs DDIM
(`augment.samplers.sample`, clipping as trained) on the 3 image channels with the conditioning
held fixed (`LowResConditioned`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import FrozenDict
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from augment.data import to_model_range
from augment.samplers import sample
from augment.train_unet import UNetTrainConfig
from augment.unet import build_unet


@dataclass(frozen=True)
class UpsamplerTrainConfig(UNetTrainConfig):
    """The scene UNet's settings (image_size: the detector's resolution, where the crops are cut)
    plus the resolution it upsamples from and the crop size."""

    low_res: int                       # px of the images it takes (the generative resolution)
    patch_size: int                    # px of the training crops, at image_size

    def __post_init__(self) -> None:
        super().__post_init__()
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
        self.patch_size, self.factor = cfg.patch_size, cfg.factor

    def build(self, cfg: UNetTrainConfig, image_size: int) -> UNet2DModel:
        return build_unet(cfg.model, cfg.schedule, self.patch_size, in_channels=6)

    def clean(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> one random crop [B, 3, P, P] each, on the low-resolution grid, in [-1, 1]."""
        size, patch = images.shape[-1], self.patch_size
        offsets = torch.randint(0, (size - patch) // self.factor + 1, (len(images), 2), generator=gen) * self.factor
        crops = [image[:, y:y + patch, x:x + patch] for image, (y, x) in zip(images, offsets.tolist())]
        return to_model_range(torch.stack(crops))

    def model_input(self, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_t, low_res_condition(x0, self.factor)], dim=1)


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


@torch.no_grad()
def upsample(unet: UNet2DModel, scheduler: DDPMScheduler, low: torch.Tensor, factor: int, steps: int,
             generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Low-resolution images [B, 3, s, s] in [-1, 1] -> [B, 3, s * factor, s * factor] in [-1, 1] by
    DDIM (eta 0) in `steps` steps; image b draws its noise from generators[b]."""
    if unet.config.in_channels != 6:
        raise ValueError("an upsampler has 6 input channels (x_t and the low-resolution image), "
                         f"got {unet.config.in_channels}")
    condition = bilinear(low.float(), low.shape[-1] * factor).to(unet.device)
    model = LowResConditioned(unet, condition)
    return sample("ddim", model, scheduler, generators, steps=steps).clamp(-1, 1)
