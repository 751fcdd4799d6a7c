"""ADM-style `UNet2DModel` and its noise schedule, built from the `unet` params section.

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", openai/guided-diffusion) in diffusers terms:

    ADM                          diffusers
    channel_mult * model_ch      block_out_channels (one width per resolution level)
    num_res_blocks               layers_per_block
    attention_resolutions        AttnDownBlock2D / AttnUpBlock2D at those feature-map sizes
    num_head_channels            attention_head_dim (fixed channels per head)
    resblock_updown              ResnetDownsampleBlock2D / ResnetUpsampleBlock2D, or
                                 downsample_type = upsample_type = "resnet" in attention levels
    use_scale_shift_norm (AdaGN) resnet_time_scale_shift = "scale_shift"
    learn_sigma                  out_channels = 6, scheduler variance_type = "learned_range"
    noise_schedule cosine        beta_schedule = "squaredcos_cap_v2"

ADM predicts eps. `prediction_type: v_prediction` (Salimans & Ho 2022) is the demo default:
short CPU runs of an eps model give colour-cast samples (bench/RESULTS.md, bench_unet_budget),
because its errors in x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) are amplified at
high noise. Guidance still works on eps: `augment.samplers.EpsilonView` converts v to eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import compute_snr

from core.errors import StageError
from core.params import check_at_least, check_choice


@dataclass(frozen=True)
class ArchConfig:
    """The UNet's (and the classifier encoder's) shape, one level per entry of block_out_channels."""

    block_out_channels: tuple[int, ...]       # width per resolution level
    layers_per_block: int                     # res-blocks per level (ADM num_res_blocks)
    attention_resolutions: tuple[int, ...]    # feature-map sizes (px) with self-attention
    attention_head_dim: int                   # channels per attention head (ADM num_head_channels)
    dropout: float
    norm_num_groups: int
    resnet_time_scale_shift: str              # scale_shift (AdaGN) | default (additive)
    resblock_updown: bool                     # BigGAN-style res-block down/up-sampling

    def __post_init__(self) -> None:
        if not self.block_out_channels or not all(isinstance(w, int) and w >= 1 for w in self.block_out_channels):
            raise ValueError(f"block_out_channels: expected a list of widths >= 1, got {self.block_out_channels!r}")
        check_at_least(self, 1, "layers_per_block", "attention_head_dim", "norm_num_groups")
        check_choice(self, "resnet_time_scale_shift", ("scale_shift", "default"))
        for width in self.block_out_channels:
            if width % self.norm_num_groups or width % self.attention_head_dim:
                raise ValueError(f"block_out_channels: width {width} must be a multiple of norm_num_groups "
                                 f"({self.norm_num_groups}) and attention_head_dim ({self.attention_head_dim})")


BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class ScheduleConfig:
    noise_schedule: str                       # linear | cosine (squaredcos_cap_v2)
    num_train_timesteps: int
    learn_sigma: bool                         # 6 output channels + hybrid loss (improved DDPM)
    prediction_type: str                      # epsilon | v_prediction (v = sqrt(a) eps - sqrt(1-a) x_0)

    def __post_init__(self) -> None:
        check_choice(self, "noise_schedule", BETA_SCHEDULES)
        check_choice(self, "prediction_type", PREDICTION_TYPES)
        check_at_least(self, 2, "num_train_timesteps")


def check_arch(arch: ArchConfig, image_size: int, where: str) -> None:
    """The image size must halve cleanly at every level below the first."""
    levels = len(arch.block_out_channels)
    if image_size % 2 ** (levels - 1):
        raise StageError(f"{where}: image size {image_size} is not divisible by 2^{levels - 1} "
                         f"({levels} levels in block_out_channels)")


def level_resolutions(arch: ArchConfig, image_size: int) -> list[int]:
    """Feature-map size (px) of each level, finest first."""
    return [image_size // 2**i for i in range(len(arch.block_out_channels))]


def down_block_types(arch: ArchConfig, image_size: int) -> tuple[str, ...]:
    plain = "ResnetDownsampleBlock2D" if arch.resblock_updown else "DownBlock2D"
    return tuple(
        "AttnDownBlock2D" if res in arch.attention_resolutions else plain
        for res in level_resolutions(arch, image_size)
    )


def up_block_types(arch: ArchConfig, image_size: int) -> tuple[str, ...]:
    plain = "ResnetUpsampleBlock2D" if arch.resblock_updown else "UpBlock2D"
    return tuple(
        "AttnUpBlock2D" if res in arch.attention_resolutions else plain
        for res in reversed(level_resolutions(arch, image_size))
    )


def build_unet(arch: ArchConfig, schedule: ScheduleConfig, image_size: int, in_channels: int = 3,
               mid_attention: bool = True) -> UNet2DModel:
    """A fresh ADM-style UNet2DModel predicting eps or v (and the variance interpolation if learn_sigma)
    for 3 image channels; `in_channels` above 3 are conditioning channels (the upsampler's 6).
    `mid_attention` False: no attention in the mid block either (a purely convolutional model)."""
    check_arch(arch, image_size, where="params.yaml: unet.model")
    updown = "resnet" if arch.resblock_updown else "conv"
    return UNet2DModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=6 if schedule.learn_sigma else 3,
        down_block_types=down_block_types(arch, image_size),
        up_block_types=up_block_types(arch, image_size),
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        attention_head_dim=arch.attention_head_dim,
        add_attention=mid_attention,           # ADM's mid block attends
        downsample_type=updown,
        upsample_type=updown,
        dropout=arch.dropout,
        norm_num_groups=arch.norm_num_groups,
        attn_norm_num_groups=arch.norm_num_groups,  # keep GroupNorm in the mid attention with AdaGN
        resnet_time_scale_shift=arch.resnet_time_scale_shift,
    )


def unet_arch_mismatch(unet_config: dict, arch: ArchConfig, image_size: int) -> str | None:
    """The first way a saved UNet2DModel config's encoder differs from `arch` at `image_size` (None: same)."""
    expected = {
        "sample_size": image_size, "block_out_channels": list(arch.block_out_channels),
        "layers_per_block": arch.layers_per_block, "down_block_types": list(down_block_types(arch, image_size)),
        "attention_head_dim": arch.attention_head_dim, "norm_num_groups": arch.norm_num_groups,
        "resnet_time_scale_shift": arch.resnet_time_scale_shift,
        "downsample_type": "resnet" if arch.resblock_updown else "conv",
    }
    for key, wanted in expected.items():  # unet_config is read from JSON: sequences are lists
        if unet_config.get(key) != wanted:
            return f"{key} is {unet_config.get(key)}, the classifier's is {wanted}"
    return None


def build_scheduler(schedule: ScheduleConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=schedule.num_train_timesteps,
        beta_schedule=BETA_SCHEDULES[schedule.noise_schedule],
        variance_type="learned_range" if schedule.learn_sigma else "fixed_small",
        prediction_type=schedule.prediction_type,
        clip_sample=True,
    )


# Hybrid loss of improved DDPM (Nichol & Dhariwal 2021, eq. 16): L_hybrid = L_simple + lambda * L_vlb.
# L_vlb = sum_t L_t, estimated as T * L_t at one uniform t; the mean of p_theta(x_{t-1} | x_t) uses a
# stop-gradient eps so L_vlb trains only the variance interpolation v (model channels 3:6).


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit data x in [-1, 1] under a Gaussian discretised to bins of width 2/255 (nats)."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1.0 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - mean - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def posterior(scheduler: DDPMScheduler, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample coefficients of q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, var), shaped [B, 1, 1, 1]."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)
    betas = scheduler.betas.to(t.device)
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    log_var_clipped = torch.log(torch.cat([var[1:2], var[1:]]))  # var[0] = 0: use var[1] (ADM)
    coefs = {
        "alpha_bar": alpha_bar, "c0": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
        "ct": (1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar),
        "log_var": log_var_clipped, "log_beta": torch.log(betas),
    }
    return {k: v[t].float().view(-1, 1, 1, 1) for k, v in coefs.items()}


def vlb_terms(scheduler: DDPMScheduler, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
              eps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L_t per sample [B] in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, and the
    decoder NLL -log p(x_0 | x_1) at t = 0. eps: predicted noise (detach it for the hybrid loss);
    v in [-1, 1]: log Sigma = (v+1)/2 log beta_t + (1-v)/2 log beta~_t (diffusers `learned_range`)."""
    c = posterior(scheduler, t)
    frac = (v.float() + 1) / 2
    model_log_var = frac * c["log_beta"] + (1 - frac) * c["log_var"]
    x0_pred = (x_t - (1 - c["alpha_bar"]).sqrt() * eps) / c["alpha_bar"].sqrt()
    model_mean = c["c0"] * x0_pred + c["ct"] * x_t
    true_mean = c["c0"] * x0 + c["ct"] * x_t
    kl = normal_kl(true_mean, c["log_var"], model_mean, model_log_var).mean(dim=(1, 2, 3))
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).mean(dim=(1, 2, 3))
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def eps_from_v(scheduler: DDPMScheduler, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t (Salimans & Ho 2022), t [B] or a scalar."""
    alpha_bar = scheduler.alphas_cumprod.to(x_t.device)[torch.as_tensor(t, device=x_t.device).long()]
    alpha_bar = alpha_bar.float().reshape(-1, 1, 1, 1)
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * x_t


def diffusion_loss(scheduler: DDPMScheduler, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                   t: torch.Tensor, noise: torch.Tensor, vlb_weight: float = 0.001,
                   snr_gamma: float | None = None) -> torch.Tensor:
    """L_simple = ||target - model||^2 on the first 3 channels (target eps, or v with
    `prediction_type: v_prediction`), or L_hybrid = L_simple + vlb_weight * T * L_t with learned
    variance (6 channels: prediction, variance interpolation).

    snr_gamma: Min-SNR-gamma weighting (Hang et al. 2023), min(SNR_t, gamma) / SNR_t per sample for
    eps and min(SNR_t, gamma) / (SNR_t + 1) for v (the same weighting of the implied x_0 error): the
    nearly clean timesteps stop dominating the gradient, and short runs learn the global layout sooner.
    """
    prediction = model_output[:, :3].float()
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(x0, noise, t) if v_prediction else noise
    per_sample = (prediction - target).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        snr = compute_snr(scheduler, t)
        per_sample = per_sample * snr.clamp(max=snr_gamma) / (snr + 1 if v_prediction else snr)
    loss = per_sample.mean()
    if model_output.shape[1] == 6:
        eps = eps_from_v(scheduler, prediction, x_t, t) if v_prediction else prediction
        n_steps = scheduler.config.num_train_timesteps
        loss = loss + vlb_weight * n_steps * vlb_terms(scheduler, x0, x_t, t, eps.detach(), model_output[:, 3:]).mean()
    return loss
