"""Classifier-guided RePaint inpainting (Lugmayr et al. 2022) and the box of what it inserted.

Paper symbol -> code (mask convention of diffusers' `RePaintScheduler`: 1 = known, 0 = to inpaint):

    x_0 (the real image)         original, [B, 3, H, W] in [-1, 1]
    m                            known, [B, 1, H, W] (or broadcastable), 1 where the real pixels stay
    x_{t-1}^known                sqrt(alpha_bar_{t-1}) x_0 + sqrt(1 - alpha_bar_{t-1}) z: q(x_{t-1} | x_0)
    x_{t-1}^unknown              the model's reverse step from x_t (DDIM formula with eta; eta = 1 is
                                 the ancestral DDPM step RePaint uses), plus ADM's Algorithm 1 shift
                                 Sigma_t g, g = s grad log p(y | x_t, t) (`augment.guidance`), as
                                 RePaint's reference code does with guided-diffusion's `cond_fn`
    x_{t-1}                      m * known + (1 - m) * unknown
    resampling                   the jump schedule of `RePaintScheduler.set_timesteps(steps,
                                 jump_length, jump_n_sample)`: after every `jump_length` steps
                                 down, go `jump_length` steps back up by q(x_{t+1} | x_t)
                                 (`undo_step`), `jump_n_sample - 1` times per jump point

`RePaintScheduler.step` draws x_{t-1} = mu + sigma_t z with z also used for the known part; z
enters additively, so step(...) + (1 - m) Sigma_t g is exactly a draw from the shifted Gaussian on
the unknown pixels (the same argument as `augment.samplers.guided_ddpm_step`). Sigma_t = (eta
sigma_t^DDIM)^2, zero at the last step, where no noise is drawn and guided-diffusion's fixed-small
variance is zero as well.

A v-prediction UNet is sampled through `augment.samplers.EpsilonView`, like every other sampler.
Every image draws its noise (x_T, each step's z, each jump's forward noise) from its own CPU
`torch.Generator`, so an image depends only on its seed, never on its batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler, RePaintScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from scipy import ndimage

from augment.samplers import CondFn, as_epsilon_model, batch_timesteps, check_model_pair, unet_output
from core.errors import StageError


def repaint_scheduler(trained: DDPMScheduler, steps: int, jump_length: int, jump_n_sample: int,
                      eta: float = 1.0) -> RePaintScheduler:
    """diffusers' RePaintScheduler on the trained UNet's noise schedule, with its jump schedule set."""
    if not 1 <= steps <= trained.config.num_train_timesteps:
        raise StageError(f"inpaint: {steps} steps must be in 1..{trained.config.num_train_timesteps}")
    if jump_length < 1 or jump_n_sample < 1:
        raise StageError(f"inpaint: jump_length {jump_length} and jump_n_sample {jump_n_sample} must be >= 1")
    if not 0.0 <= eta <= 1.0:
        raise StageError(f"inpaint: eta {eta} must be in [0, 1]")
    scheduler = RePaintScheduler.from_config(trained.config, eta=eta)
    scheduler.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    return scheduler


def step_variance(scheduler: RePaintScheduler, t: int) -> torch.Tensor:
    """Sigma_t: the variance `RePaintScheduler.step` draws the unknown part of x_{t-1} with."""
    return scheduler.eta**2 * scheduler._get_variance(t)


@torch.no_grad()
def guided_repaint_step(unet: torch.nn.Module, scheduler: RePaintScheduler, x: torch.Tensor, t: int,
                        original: torch.Tensor, known: torch.Tensor, generator: Sequence[torch.Generator],
                        cond_fn: CondFn | None, target: torch.Tensor | None) -> torch.Tensor:
    """One reverse step: x_{t-1} = m * q(x_{t-1} | x_0) + (1 - m) * (model step + Sigma_t g).
    `unet` predicts eps (`as_epsilon_model`)."""
    eps = unet_output(unet, x, torch.as_tensor(t))[:, :3]
    x_prev = scheduler.step(eps, t, x, original, known, generator=list(generator)).prev_sample
    if cond_fn is None:
        return x_prev
    return x_prev + (1 - known) * step_variance(scheduler, t) * cond_fn(x, batch_timesteps(t, x), target)


@torch.no_grad()
def repaint(unet: UNet2DModel, trained: DDPMScheduler, original: torch.Tensor, known: torch.Tensor,
            generator: Sequence[torch.Generator], *, steps: int, jump_length: int, jump_n_sample: int,
            eta: float = 1.0, cond_fn: CondFn | None = None, target: torch.Tensor | None = None) -> torch.Tensor:
    """Inpaint the unknown pixels (known == 0) of `original` [B, 3, H, W] in [-1, 1], guided toward
    `target` [B] when `cond_fn` is given; returns x_0 [B, 3, H, W] in [-1, 1] (fp32, on the UNet's device).
    The known pixels of the result are the original's, exactly."""
    check_model_pair(unet, trained)
    if len(generator) != original.shape[0]:
        raise ValueError(f"repaint: {len(generator)} generators for {original.shape[0]} images")
    model, eps_scheduler = as_epsilon_model(unet, trained)
    scheduler = repaint_scheduler(eps_scheduler, steps, jump_length, jump_n_sample, eta)
    device = unet.device
    original, known = original.to(device, torch.float32), known.to(device, torch.float32)
    x = randn_tensor(original.shape, generator=list(generator), device=device, dtype=torch.float32)
    t_last = int(scheduler.timesteps[0]) + 1
    for t in scheduler.timesteps.tolist():
        if t < t_last:
            x = guided_repaint_step(model, scheduler, x, t, original, known, generator, cond_fn, target)
        else:
            x = scheduler.undo_step(x, t_last, generator=list(generator))
        t_last = t
    return torch.where(known.bool().expand_as(x), original, x.clamp(-1, 1))


def box_from_change(original: np.ndarray, result: np.ndarray, hole: np.ndarray,
                    threshold: float) -> tuple[int, int, int, int] | None:
    """The tight xyxy box (px, exclusive max) of the largest 8-connected component of the pixels inside
    `hole` [H, W] (bool) whose largest channel change |result - original| exceeds `threshold` (same units
    as the images, [H, W, C] each); None when no pixel changed that much."""
    if original.shape != result.shape or original.shape[:2] != hole.shape:
        raise ValueError(f"box_from_change: shapes {original.shape}, {result.shape} and hole {hole.shape} differ")
    change = np.abs(result.astype(np.float32) - original.astype(np.float32)).max(axis=-1)
    changed = (change > threshold) & hole.astype(bool)
    labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
