"""augment/unet.py: the ADM-style UNet from params, and the L_simple / L_hybrid losses."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D

from augment.unet import ArchConfig, ScheduleConfig, build_scheduler, build_unet, diffusion_loss, vlb_terms
from core.errors import StageError
from core.params import from_dict
from tests.support import adm_schedule, tiny_arch

ARCH = tiny_arch(attention_head_dim=8)


def test_unet_has_configured_widths_attention_and_resnet_updown():
    unet = build_unet(dataclasses.replace(ARCH, resblock_updown=True), adm_schedule(), image_size=16)
    assert unet.config.block_out_channels == (16, 32) or list(unet.config.block_out_channels) == [16, 32]
    assert unet.config.out_channels == 3
    assert [type(b).__name__ for b in unet.down_blocks] == ["ResnetDownsampleBlock2D", "AttnDownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["AttnUpBlock2D", "ResnetUpsampleBlock2D"]
    down = unet.down_blocks[0].downsamplers[0]
    assert isinstance(down, ResnetBlock2D) and down.down
    assert isinstance(unet.up_blocks[0].upsamplers[0], ResnetBlock2D) and unet.up_blocks[0].upsamplers[0].up
    attention = unet.down_blocks[1].attentions[0]
    assert attention.heads == 32 // 8  # fixed channels per head
    assert unet.mid_block.attentions[0].group_norm is not None
    assert all(r.time_embedding_norm == "scale_shift" for r in unet.down_blocks[0].resnets)
    assert unet(torch.randn(2, 3, 16, 16), torch.tensor([0, 999])).sample.shape == (2, 3, 16, 16)


def test_without_resblock_updown_the_unet_resamples_with_convolutions():
    unet = build_unet(dataclasses.replace(ARCH, resblock_updown=False), adm_schedule(), image_size=16)
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "AttnDownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["AttnUpBlock2D", "UpBlock2D"]
    assert isinstance(unet.down_blocks[0].downsamplers[0], Downsample2D)
    assert isinstance(unet.up_blocks[0].upsamplers[0], Upsample2D)
    resnet_version = build_unet(dataclasses.replace(ARCH, resblock_updown=True), adm_schedule(), image_size=16)
    assert sum(p.numel() for p in unet.parameters()) < sum(p.numel() for p in resnet_version.parameters())
    assert unet(torch.randn(2, 3, 16, 16), torch.tensor([0, 999])).sample.shape == (2, 3, 16, 16)


def test_learned_variance_gives_six_channels_and_learned_range():
    schedule = adm_schedule(noise_schedule="cosine", learn_sigma=True)
    unet = build_unet(ARCH, schedule, image_size=16)
    assert unet.conv_out.out_channels == 6
    scheduler = build_scheduler(schedule)
    assert scheduler.config.variance_type == "learned_range"
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"


def reference_posterior(betas: torch.Tensor, t: int):
    """q(x_{t-1} | x_t, x_0) coefficients straight from DDPM eq. 6-7 (Ho et al. 2020)."""
    alphas = 1 - betas
    alpha_bar = torch.cumprod(alphas, 0)
    prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0)
    coef_x0 = math.sqrt(prev) * betas[t] / (1 - alpha_bar[t])
    coef_xt = math.sqrt(alphas[t]) * (1 - prev) / (1 - alpha_bar[t])
    return alpha_bar[t], coef_x0, coef_xt, (1 - prev) / (1 - alpha_bar[t]) * betas[t]


def test_vlb_term_is_kl_between_gaussians_in_bits():
    scheduler = build_scheduler(adm_schedule(learn_sigma=True))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 4, 4, generator=gen) * 2 - 1
    t = torch.tensor([1, 250, 900])
    noise = torch.randn(3, 3, 4, 4, generator=gen)
    x_t = scheduler.add_noise(x0, noise, t)
    eps = noise + 0.1 * torch.randn(3, 3, 4, 4, generator=gen)  # an imperfect eps_theta
    v = torch.rand(3, 3, 4, 4, generator=gen) * 2 - 1
    got = vlb_terms(scheduler, x0, x_t, t, eps, v)
    for i, ti in enumerate(t.tolist()):
        alpha_bar, c0, ct, var = reference_posterior(scheduler.betas.double(), ti)
        x0_pred = (x_t[i] - math.sqrt(1 - alpha_bar) * eps[i]) / math.sqrt(alpha_bar)
        mu_q, mu_p = c0 * x0[i] + ct * x_t[i], c0 * x0_pred + ct * x_t[i]
        frac = (v[i] + 1) / 2
        var_p = torch.exp(frac * math.log(scheduler.betas[ti]) + (1 - frac) * math.log(var))
        # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
        kl = 0.5 * torch.log(var_p / var) + (var + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5
        assert torch.allclose(got[i], kl.mean().float() / math.log(2), rtol=1e-3, atol=1e-5)


def test_simple_loss_is_mse_and_hybrid_adds_weighted_vlb_on_variance_only():
    scheduler = build_scheduler(adm_schedule(learn_sigma=True))
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    x_t = scheduler.add_noise(x0, noise, t)
    out = torch.randn(4, 6, 4, 4, generator=gen, requires_grad=True)
    simple = diffusion_loss(scheduler, out[:, :3], x0, x_t, t, noise)
    assert torch.allclose(simple, ((out[:, :3] - noise) ** 2).mean())
    hybrid = diffusion_loss(scheduler, out, x0, x_t, t, noise, vlb_weight=0.001)
    vlb = vlb_terms(scheduler, x0, x_t, t, out[:, :3].detach(), out[:, 3:]).mean()
    assert torch.allclose(hybrid, simple + 0.001 * 1000 * vlb)
    (grad_vlb,) = torch.autograd.grad(hybrid - simple, out)
    assert grad_vlb[:, :3].abs().max() == 0  # stop-gradient on the mean
    assert grad_vlb[:, 3:].abs().max() > 0


def test_min_snr_weighting_matches_closed_form_and_only_downweights_clean_timesteps():
    scheduler = build_scheduler(adm_schedule())
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=gen)
    t = torch.tensor([0, 100, 500, 999])
    out = torch.randn(4, 3, 4, 4, generator=gen)
    x_t = scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler.alphas_cumprod[t].double()
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    per_sample = ((out - noise) ** 2).double().mean(dim=(1, 2, 3))
    got = diffusion_loss(scheduler, out, x0, x_t, t, noise, snr_gamma=5.0)
    assert torch.allclose(got.double(), (weight * per_sample).mean(), rtol=1e-5)
    assert weight[0] < 0.01 and weight[-1] == 1.0  # t = 0 has SNR ~ 1e4+; t = T-1 has SNR < 5


def test_v_prediction_loss_targets_the_velocity_with_its_min_snr_weight():
    scheduler = build_scheduler(adm_schedule(prediction_type="v_prediction"))
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(3, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, generator=gen)
    t = torch.tensor([5, 400, 990])
    out = torch.randn(3, 3, 4, 4, generator=gen)
    x_t = scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0  # Salimans & Ho 2022
    assert torch.allclose(diffusion_loss(scheduler, out, x0, x_t, t, noise), ((out - v) ** 2).mean(), rtol=1e-5)
    snr = (alpha_bar / (1 - alpha_bar)).flatten()
    weight = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1)
    expected = (weight * ((out - v) ** 2).mean(dim=(1, 2, 3))).mean()
    assert torch.allclose(diffusion_loss(scheduler, out, x0, x_t, t, noise, snr_gamma=5.0), expected, rtol=1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"prediction_type": "sample"}, "params.yaml: unet.schedule.prediction_type: 'sample' is not one of epsilon, "
                                    "v_prediction"),
    ({"noise_schedule": "sigmoid"}, "params.yaml: unet.schedule.noise_schedule: 'sigmoid' is not one of linear, cosine"),
])
def test_unknown_schedule_settings_fail_with_one_line_naming_the_key(changes, message):
    values = {"noise_schedule": "cosine", "num_train_timesteps": 1000, "learn_sigma": False,
              "prediction_type": "epsilon", **changes}
    with pytest.raises(StageError) as err:
        from_dict(ScheduleConfig, values, where="params.yaml: unet.schedule")
    assert str(err.value) == message


@pytest.mark.parametrize("changes, message", [
    ({"block_out_channels": [16, 24]}, "params.yaml: unet.model.block_out_channels: width 24 must be a multiple of "
                                       "norm_num_groups (8) and attention_head_dim (16)"),
    ({"resnet_time_scale_shift": "film"}, "params.yaml: unet.model.resnet_time_scale_shift: 'film' is not one of "
                                          "scale_shift, default"),
    ({"block_out_channels": "abc"}, "params.yaml: unet.model.block_out_channels: expected a list, got 'abc'"),
    ({"block_out_channels": [16, 0]}, "params.yaml: unet.model.block_out_channels: expected a list of widths >= 1, "
                                      "got (16, 0)"),
])
def test_bad_arch_settings_fail_with_one_line_naming_the_key(changes, message):
    values = {**dataclasses.asdict(tiny_arch()), **changes}
    with pytest.raises(StageError) as err:
        from_dict(ArchConfig, values, where="params.yaml: unet.model")
    assert str(err.value) == message


def test_an_image_size_that_does_not_halve_at_every_level_is_refused():
    with pytest.raises(StageError, match=r"^params.yaml: unet.model: image size 15 is not divisible by 2\^1"):
        build_unet(ARCH, adm_schedule(), image_size=15)
