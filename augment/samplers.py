"""Classifier-guided samplers on diffusers schedulers (Dhariwal & Nichol 2021, Algorithms 1 and 2).

Paper symbol -> code:

    x_t                          x, [B, 3, H, W]
    eps_theta(x_t, t)            eps = unet(x, t).sample[:, :3]; a 6-channel UNet (improved DDPM,
                                 `variance_type="learned_range"`) puts the variance interpolation v
                                 in channels 3:6
    alpha_bar_t                  scheduler.alphas_cumprod[t]
    x_0 (predicted)              clipped to [-r, r] (r = clip_sample_range) when the trained
                                 scheduler's `clip_sample` is on: inside DDPMScheduler.step
                                 (ddpm), in `condition_score` (ddim, dpmsolver++)
    mu, Sigma_t                  mean and variance of p(x_{t-1} | x_t) (DDPMScheduler.step)
    s * grad log p(y | x_t, t)   g = cond_fn(x, t, y) (`augment.guidance`)

Both algorithms are step for step those of openai/guided-diffusion as released
(`gaussian_diffusion.py`), x_0 clipping included; tests/augment/test_guidance_parity.py checks one
step and whole trajectories against formulas written from its `p_mean_variance`,
`condition_mean`, `condition_score`, `p_sample` and `ddim_sample`.

Algorithm 1 (`ddpm`, guided-diffusion's `p_sample` + `condition_mean`): x_{t-1} ~
N(mu + Sigma_t g, Sigma_t), mu from the clipped x_0. `DDPMScheduler.step` clips x_0 and returns
mu + sqrt(Sigma_t) z, and z enters additively, so step(...) + Sigma_t g is exactly a draw from the
shifted Gaussian with the same z (the shift itself is not clipped). Sigma_t is the variance the
scheduler draws its noise with (beta-tilde, beta or the model's learned one), except at the last
step, where no noise is drawn and Sigma_0 only scales the shift: there guided-diffusion bounds a
learned (and a fixed-large) variance below by the posterior variance of the step above,
log(posterior_variance[1]), where diffusers uses 1e-20 (`ddpm_variance`).

Algorithm 2 (`ddim`, `dpmsolver++`; guided-diffusion's `condition_score`): x_0 from the model's
eps, clipped to the trained scheduler's `clip_sample_range` when `clip_sample` is on, eps
re-derived from the clipped x_0, eps_hat = eps - sqrt(1 - alpha_bar_t) g, then the scheduler's
step on eps_hat with no clipping of its own (`DDIMScheduler` with eta, or
`DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`, both built `from_config` of the
trained DDPM scheduler). So the guided x_0 may leave [-1, 1]: clipping it again would swallow the
guidance wherever it pushes x_0 outside (and diffusers' DDIM would also keep the unclipped eps for
the direction term).

A v-prediction UNet (`unet.schedule.prediction_type: v_prediction`) is sampled through
`EpsilonView`, which turns its v into eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t, so
both algorithms stay exactly as written for eps.

Every image draws its noise (x_T and each step's z) from its own CPU `torch.Generator`, so an
image depends only on its generator's seed and not on the batch it is rendered in.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from augment.unet import PREDICTION_TYPES, eps_from_v
from core.errors import StageError

LEARNED_VARIANCE = ("learned", "learned_range")
# cond_fn(x_t [B,3,H,W], timesteps [B], target [B]) -> s * grad_x log p(target | x_t, t) [B,3,H,W] (augment.guidance)
CondFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# name -> (diffusers scheduler built from the trained one's config, its settings). `ddpm` steps by
# Algorithm 1; `ddim` (with eta) and `dpmsolver++` (Lu et al. 2022, multistep, 2nd order) by Algorithm 2.
SAMPLERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {"clip_sample": False}),  # x_0 is clipped before the guidance shift (condition_score)
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


def sample(name: str, unet: UNet2DModel, scheduler: DDPMScheduler, generator: Sequence[torch.Generator],
           *, steps: int, cond_fn: CondFn | None = None, target: torch.Tensor | None = None,
           eta: float = 0.0) -> torch.Tensor:
    """x_0 [B, 3, H, W] (B = len(generator)) by sampler `name` (SAMPLERS) in `steps` steps, guided
    by `cond_fn` toward `target` [B] when given; eta is DDIM's and must be 0 for the others."""
    if name not in SAMPLERS or (eta and name != "ddim"):
        raise ValueError(f"sampler {name!r} with eta {eta}: the settings classes admit only "
                         f"{', '.join(SAMPLERS)}, and eta only for ddim")
    check_model_pair(unet, scheduler)
    unet, trained = as_epsilon_model(unet, scheduler)
    scheduler_class, overrides = SAMPLERS[name]
    scheduler = fresh_scheduler(scheduler_class, trained, steps, **overrides)
    ddim_kwargs = {"eta": eta, "generator": generator} if name == "ddim" else {}
    clip = x0_clip(trained)
    x = initial_noise(unet, scheduler, generator)
    for t in scheduler.timesteps:
        if name == "ddpm":
            x = guided_ddpm_step(unet, scheduler, x, t, generator, cond_fn, target)
        else:
            x = guided_eps_step(unet, scheduler, x, t, cond_fn, target, clip=clip, **ddim_kwargs)
    return x


def x0_clip(trained: DDPMScheduler) -> float | None:
    """The range x_0 predictions are clipped to (the trained scheduler's `clip_sample_range`), or None."""
    return float(trained.config.clip_sample_range) if trained.config.clip_sample else None


class EpsilonView(nn.Module):
    """A v-prediction UNet seen as an eps-prediction one: channels 0:3 become eps, the rest pass."""

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler):
        super().__init__()
        self.unet, self.scheduler = unet, scheduler

    config = property(lambda self: self.unet.config)
    device = property(lambda self: self.unet.device)
    dtype = property(lambda self: self.unet.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> UNet2DOutput:
        out = self.unet(x, t).sample
        eps = eps_from_v(self.scheduler, out[:, :3].float(), x.float(), t).to(out.dtype)
        return UNet2DOutput(sample=torch.cat([eps, out[:, 3:]], dim=1))


def as_epsilon_model(unet: UNet2DModel, scheduler: DDPMScheduler) -> tuple[nn.Module, DDPMScheduler]:
    """(unet, scheduler) unchanged for eps prediction; for v, the EpsilonView and an eps scheduler."""
    if scheduler.config.prediction_type == "epsilon":
        return unet, scheduler
    return EpsilonView(unet, scheduler), DDPMScheduler.from_config(scheduler.config, prediction_type="epsilon")


@torch.no_grad()
def guided_ddpm_step(unet: UNet2DModel, scheduler: DDPMScheduler, x: torch.Tensor, t: torch.Tensor,
                     generator: Sequence[torch.Generator], cond_fn: CondFn | None,
                     target: torch.Tensor | None) -> torch.Tensor:
    """One step of Algorithm 1: x_{t-1} = mu + sqrt(Sigma_t) z + Sigma_t g."""
    model_output = unet_output(unet, x, t)  # [B, 3 or 6, H, W]
    x_prev = scheduler.step(model_output, t, x, generator=list(generator)).prev_sample
    if cond_fn is None:
        return x_prev
    return x_prev + ddpm_variance(scheduler, t, model_output) * cond_fn(x, batch_timesteps(t, x), target)


@torch.no_grad()
def guided_eps_step(unet: UNet2DModel, scheduler: SchedulerMixin, x: torch.Tensor, t: torch.Tensor,
                    cond_fn: CondFn | None, target: torch.Tensor | None, *, clip: float | None = None,
                    **step_kwargs) -> torch.Tensor:
    """One step of Algorithm 2: eps_hat = `condition_score(...)`, then scheduler.step(eps_hat).
    `clip`: the x_0 range (`x0_clip`); the scheduler must not clip again."""
    if clip is not None and isinstance(scheduler, DDIMScheduler) and scheduler.config.clip_sample:
        raise ValueError("guided_eps_step: with clip, build the scheduler with clip_sample=False (SAMPLERS)")
    eps = condition_score(scheduler, unet_output(unet, x, t)[:, :3], x, t, cond_fn, target, clip)
    if "generator" in step_kwargs:
        step_kwargs["generator"] = list(step_kwargs["generator"])
    return scheduler.step(eps, t, x, **step_kwargs).prev_sample


def condition_score(scheduler: SchedulerMixin, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                    cond_fn: CondFn | None, target: torch.Tensor | None, clip: float | None) -> torch.Tensor:
    """guided-diffusion's `p_mean_variance` + `condition_score`, on eps: x_0 = (x - sqrt(1 - abar) eps)
    / sqrt(abar) clipped to [-clip, clip], eps re-derived from it (only where the clip changed x_0, so
    that elsewhere eps stays bit-identical), then eps - sqrt(1 - abar) g."""
    alpha_bar = scheduler.alphas_cumprod[t].to(x.device)
    sigma = (1 - alpha_bar).sqrt()
    if clip is not None:
        x0 = (x - sigma * eps) / alpha_bar.sqrt()
        clipped = x0.clamp(-clip, clip)
        eps = torch.where(clipped == x0, eps, (x - alpha_bar.sqrt() * clipped) / sigma)
    if cond_fn is not None:
        eps = eps - sigma * cond_fn(x, batch_timesteps(t, x), target)
    return eps


def ddpm_variance(scheduler: DDPMScheduler, t: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
    """Sigma_t, the variance DDPMScheduler.step draws x_{t-1} with (scalar, or [B, 3, H, W] if learned),
    with guided-diffusion's bound at the last step (`last_step_log_floor`).

    The scheduler's `_get_variance` returns a variance, a std or a log-variance depending on
    `variance_type` (mirroring how its `step` uses it); this turns each into the variance.
    """
    kind = scheduler.config.variance_type
    floor = last_step_log_floor(scheduler, t) if kind in ("fixed_large", "learned_range") else None
    if floor is not None:
        log_beta = (1 - scheduler.alphas_cumprod[t]).log()  # alpha_bar_prev = 1 at the last step
        if kind == "fixed_large":
            return floor.exp()
        frac = (model_output[:, 3:] + 1) / 2
        return (frac * log_beta + (1 - frac) * floor).exp()
    predicted = model_output[:, 3:] if kind in LEARNED_VARIANCE else None
    value = scheduler._get_variance(t, predicted_variance=predicted)
    if kind == "fixed_small_log":
        return value**2
    if kind in ("fixed_large_log", "learned_range"):
        return value.exp()
    return value  # fixed_small, fixed_large (variances) and learned (the model's variance)


def last_step_log_floor(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor | None:
    """At the last step of the chain, guided-diffusion's lower log-variance bound for a learned
    (and its fixed-large) variance: log(posterior_variance[1]), the posterior variance of the step
    above it in the (respaced) chain. None at every other step, or when there is no step above."""
    if scheduler.previous_timestep(t) >= 0:
        return None
    index = int((scheduler.timesteps == t).nonzero()[0, 0])
    if index == 0:
        return None
    above = scheduler.timesteps[index - 1]
    abar, abar_above = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[above]
    return ((1 - abar) / (1 - abar_above) * (1 - abar_above / abar)).log()


def fresh_scheduler(cls: type[SchedulerMixin], trained: DDPMScheduler, steps: int, **overrides) -> SchedulerMixin:
    """A new `cls` built from the trained DDPM scheduler's config, with `steps` inference timesteps."""
    if steps < 1 or steps > trained.config.num_train_timesteps:
        raise StageError(f"{steps} sampling steps: must be in 1..{trained.config.num_train_timesteps}, the UNet's "
                         "num_train_timesteps")
    scheduler = cls.from_config(trained.config, **overrides)
    scheduler.set_timesteps(steps)
    return scheduler


def initial_noise(unet: UNet2DModel, scheduler: SchedulerMixin, generator: Sequence[torch.Generator]) -> torch.Tensor:
    """x_T [B, C, H, W], one image per generator, fp32 on the UNet's device."""
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (len(generator), unet.config.in_channels, height, width)
    noise = randn_tensor(shape, generator=list(generator), device=unet.device, dtype=torch.float32)
    return noise * scheduler.init_noise_sigma


def unet_output(unet: UNet2DModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return unet(x.to(unet.dtype), t).sample.float()


def batch_timesteps(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The step's timestep as a LongTensor [B] on x's device (what the classifier takes)."""
    return torch.as_tensor(t, device=x.device).long().reshape(1).expand(x.shape[0])


def check_model_pair(unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
    """The UNet predicts eps or v (and the variance interpolation iff the scheduler's variance is learned)."""
    where = "models/unet/scheduler"
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise StageError(f"{where}: prediction_type '{scheduler.config.prediction_type}' is not one of "
                         f"{', '.join(PREDICTION_TYPES)}")
    learned = scheduler.config.variance_type in LEARNED_VARIANCE
    expected = 2 * unet.config.in_channels if learned else unet.config.in_channels
    if unet.config.out_channels != expected:
        raise StageError(f"{where}: variance_type '{scheduler.config.variance_type}' needs a UNet with "
                         f"{expected} output channels, got {unet.config.out_channels}")
