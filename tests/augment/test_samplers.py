"""Guided samplers: one step vs the closed-form shift (Algorithms 1 and 2), scale 0, determinism."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from augment.guidance import classifier_guidance, prob_present
from augment.samplers import (
    SAMPLERS,
    ddpm_variance,
    fresh_scheduler,
    guided_ddpm_step,
    guided_eps_step,
    initial_noise,
    sample,
    unet_output,
)
from augment.settings import SAMPLER_NAMES
from core.errors import StageError
from tests.support import LinearClassifier, tiny_unet, trained_scheduler

SIZE = 16


def test_the_settings_admit_exactly_the_samplers_there_are():
    assert tuple(SAMPLERS) == SAMPLER_NAMES


def generators(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def toy_classifier() -> LinearClassifier:
    return LinearClassifier(3, (3, SIZE, SIZE), seed=1)


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_ddpm_step_shifts_the_mean_by_sigma_times_closed_form_grad(variance_type):
    unet = tiny_unet(6 if variance_type == "learned_range" else 3)
    scheduler = fresh_scheduler(DDPMScheduler, trained_scheduler(variance_type), steps=10)
    classifier, s = toy_classifier(), 3.0
    x, target = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 2])
    t, t_prev = scheduler.timesteps[4], scheduler.timesteps[5]
    guided = guided_ddpm_step(unet, scheduler, x, t, generators([7, 8]), classifier_guidance(classifier, s), target)
    plain = guided_ddpm_step(unet, scheduler, x, t, generators([7, 8]), None, target)

    # Sigma_t from the DDPM formulas (Ho et al. eq. 7; Nichol & Dhariwal eq. 15 for learned_range).
    abar_t, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t_prev]
    beta = 1 - abar_t / abar_prev
    beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta
    if variance_type == "learned_range":
        frac = (unet_output(unet, x, t)[:, 3:] + 1) / 2
        sigma = torch.exp(frac * beta.log() + (1 - frac) * beta_tilde.log())
    else:
        sigma = beta_tilde
    expected_shift = sigma * s * classifier.closed_form_grad(x, target)
    assert expected_shift.abs().max() > 1e-4
    torch.testing.assert_close(guided - plain, expected_shift, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_variance_is_the_variance_the_scheduler_draws_noise_with(variance_type):
    unet = tiny_unet(6 if variance_type == "learned_range" else 3)
    scheduler = fresh_scheduler(DDPMScheduler, trained_scheduler(variance_type), steps=10)
    x, t = torch.randn(2, 3, SIZE, SIZE), scheduler.timesteps[3]
    a = guided_ddpm_step(unet, scheduler, x, t, generators([1, 2]), None, None)
    b = guided_ddpm_step(unet, scheduler, x, t, generators([3, 4]), None, None)
    z_a = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=g) for g in generators([1, 2])])
    z_b = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=g) for g in generators([3, 4])])
    sigma = ddpm_variance(scheduler, t, unet_output(unet, x, t))
    torch.testing.assert_close(a - b, sigma.sqrt() * (z_a - z_b), rtol=1e-4, atol=1e-6)


def eps_coefficient(abar_t, abar_prev, noise_var=0.0):
    """d x_{t-1} / d eps of a DDIM step x_{t-1} = sqrt(abar') x_0(eps) + sqrt(1 - abar' - var) eps + sqrt(var) z."""
    return (1 - abar_prev - noise_var).sqrt() - abar_prev.sqrt() * (1 - abar_t).sqrt() / abar_t.sqrt()


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_equals_unguided_step_plus_closed_form_eps_shift(eta):
    unet, classifier, s = tiny_unet(), toy_classifier(), 4.0
    scheduler = fresh_scheduler(DDIMScheduler, trained_scheduler(clip_sample=False), steps=10)
    x, target = torch.randn(2, 3, SIZE, SIZE), torch.tensor([1, 2])
    t, t_prev = scheduler.timesteps[5], scheduler.timesteps[6]
    guided = guided_eps_step(unet, scheduler, x, t, classifier_guidance(classifier, s), target,
                             eta=eta, generator=generators([5, 6]))
    plain = guided_eps_step(unet, scheduler, x, t, None, target, eta=eta, generator=generators([5, 6]))
    abar_t, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t_prev]
    noise_var = eta**2 * (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    eps_shift = -(1 - abar_t).sqrt() * s * classifier.closed_form_grad(x, target)  # Algorithm 2
    torch.testing.assert_close(guided - plain, eps_coefficient(abar_t, abar_prev, noise_var) * eps_shift,
                               rtol=1e-4, atol=1e-6)


def test_dpm_solver_pp_first_step_equals_unguided_plus_closed_form_eps_shift():
    unet, classifier, s = tiny_unet(), toy_classifier(), 4.0
    trained = trained_scheduler()
    x, target = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 1])
    steps = {}
    for name, cond_fn in (("guided", classifier_guidance(classifier, s)), ("plain", None)):
        scheduler = fresh_scheduler(DPMSolverMultistepScheduler, trained, 10, algorithm_type="dpmsolver++")
        t, t_prev = scheduler.timesteps[0], scheduler.timesteps[1]
        steps[name] = guided_eps_step(unet, scheduler, x, t, cond_fn, target)
    # The first multistep step is first order, i.e. DDIM with eta = 0 between t and t_prev.
    abar_t, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t_prev]
    eps_shift = -(1 - abar_t).sqrt() * s * classifier.closed_form_grad(x, target)
    expected = eps_coefficient(abar_t, abar_prev) * eps_shift
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(steps["guided"] - steps["plain"], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_scale_zero_reproduces_the_unguided_sample_exactly(name):
    unet, target = tiny_unet(), torch.tensor([0, 1])
    kwargs = {"eta": 0.5} if name == "ddim" else {}
    guided = sample(name, unet, trained_scheduler(), generators([3, 4]), steps=4,
                    cond_fn=classifier_guidance(toy_classifier(), 0.0), target=target, **kwargs)
    plain = sample(name, unet, trained_scheduler(), generators([3, 4]), steps=4, **kwargs)
    assert torch.equal(guided, plain)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_guidance_raises_the_target_probability(name):
    unet, classifier, trained = tiny_unet(), toy_classifier(), trained_scheduler()
    seeds, target = range(6), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = sample(name, unet, trained, generators(seeds), steps=4, target=target)
    guided = sample(name, unet, trained, generators(seeds), steps=4, target=target,
                    cond_fn=classifier_guidance(classifier, 20.0))
    p_plain = prob_present(classifier, plain.clamp(-1, 1), target)
    p_guided = prob_present(classifier, guided.clamp(-1, 1), target)
    assert p_guided.mean() > p_plain.mean() + 0.2
    assert torch.all(p_guided > p_plain)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seeds_same_images_independent_of_batch(name):
    unet, trained = tiny_unet(), trained_scheduler()
    kwargs = {"eta": 1.0} if name == "ddim" else {}
    cond_fn, target = classifier_guidance(toy_classifier(), 2.0), torch.tensor([0, 1, 2])
    batch = sample(name, unet, trained, generators([10, 11, 12]), steps=3, cond_fn=cond_fn, target=target, **kwargs)
    again = sample(name, unet, trained, generators([10, 11, 12]), steps=3, cond_fn=cond_fn, target=target, **kwargs)
    assert torch.equal(batch, again)
    alone = [sample(name, unet, trained, generators([s]), steps=3, cond_fn=cond_fn, target=target[i:i + 1], **kwargs)
             for i, s in enumerate([10, 11, 12])]
    # CPU kernels differ slightly by batch size: equal up to float rounding, not bitwise.
    torch.testing.assert_close(torch.cat(alone), batch, rtol=1e-3, atol=1e-4 * float(batch.abs().max()))
    other = sample(name, unet, trained, generators([13, 11, 12]), steps=3, cond_fn=cond_fn, target=target, **kwargs)
    assert not torch.allclose(other[0], batch[0]) and torch.equal(other[1:], batch[1:])


def test_eps_samplers_use_the_first_three_channels_of_a_learned_variance_unet():
    unet6 = tiny_unet(6)

    class FirstThree(torch.nn.Module):
        config = SimpleNamespace(**{**unet6.config, "out_channels": 3})
        device, dtype = unet6.device, unet6.dtype

        def forward(self, x, t):
            return SimpleNamespace(sample=unet6(x, t).sample[:, :3])

    learned = sample("ddim", unet6, trained_scheduler("learned_range"), generators([1]), steps=3)
    fixed = sample("ddim", FirstThree(), trained_scheduler("fixed_small"), generators([1]), steps=3)
    assert torch.equal(learned, fixed)
    assert torch.equal(sample("ddim", unet6, trained_scheduler("learned_range"), generators([1]), steps=3), learned)


def test_initial_noise_is_drawn_per_image_from_its_generator():
    noise = initial_noise(tiny_unet(), trained_scheduler(), generators([5, 9]))
    assert noise.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(noise[1:], torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize("call, message", [
    (lambda: sample("ddpm", tiny_unet(6), trained_scheduler(), generators([0]), steps=2), "needs a UNet with 3"),
    (lambda: sample("ddim", tiny_unet(), trained_scheduler(), generators([0]), steps=0),
     r"^0 sampling steps: must be in 1..1000, the UNet's num_train_timesteps$"),
])
def test_a_model_or_step_count_that_does_not_fit_fails_with_one_line(call, message):
    with pytest.raises(StageError, match=message):
        call()


@pytest.mark.parametrize("name, eta", [("euler", 0.0), ("ddpm", 0.5)])
def test_names_and_eta_the_settings_refuse_are_programming_errors(name, eta):
    with pytest.raises(ValueError, match="the settings classes admit only"):
        sample(name, tiny_unet(), trained_scheduler(), generators([0]), steps=2, eta=eta)


class DeltaOracle(torch.nn.Module):
    """The exact denoiser of a one-point data distribution {x0}, predicting eps or v."""

    def __init__(self, x0: torch.Tensor, trained: DDPMScheduler):
        super().__init__()
        self.x0, self.trained = x0, trained
        self.config = SimpleNamespace(sample_size=SIZE, in_channels=3, out_channels=3)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def forward(self, x, t):
        abar = self.trained.alphas_cumprod[torch.as_tensor(t).long()]
        eps = (x - abar.sqrt() * self.x0) / (1 - abar).sqrt()
        v = abar.sqrt() * eps - (1 - abar).sqrt() * self.x0
        return SimpleNamespace(sample=v if self.trained.config.prediction_type == "v_prediction" else eps)


def v_scheduler() -> DDPMScheduler:
    return DDPMScheduler.from_config(trained_scheduler().config, prediction_type="v_prediction")


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_exact_v_denoiser_of_one_point_samples_that_point(name):
    x0 = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)) * 1.6 - 0.8
    samples = sample(name, DeltaOracle(x0, v_scheduler()), v_scheduler(), generators([1, 2]), steps=6)
    torch.testing.assert_close(samples, x0.expand(2, -1, -1, -1), rtol=0, atol=1e-3)


class HandConvertedEps(torch.nn.Module):
    """Reference: eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t (Salimans & Ho 2022, eq. in sec. 4)."""

    def __init__(self, v_unet: UNet2DModel):
        super().__init__()
        self.v_unet, self.config = v_unet, v_unet.config
        self.device, self.dtype = v_unet.device, v_unet.dtype

    def forward(self, x, t):
        abar = v_scheduler().alphas_cumprod[torch.as_tensor(t).long()]
        return SimpleNamespace(sample=abar.sqrt() * self.v_unet(x, t).sample + (1 - abar).sqrt() * x)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_guided_v_model_samples_as_its_eps_form(name):
    v_unet, cond_fn, target = tiny_unet(seed=3), classifier_guidance(toy_classifier(), 3.0), torch.tensor([0, 2])
    guided = sample(name, v_unet, v_scheduler(), generators([1, 2]), steps=5, cond_fn=cond_fn, target=target)
    reference = sample(name, HandConvertedEps(v_unet), trained_scheduler(), generators([1, 2]), steps=5,
                       cond_fn=cond_fn, target=target)
    plain = sample(name, v_unet, v_scheduler(), generators([1, 2]), steps=5)
    torch.testing.assert_close(guided, reference, rtol=1e-4, atol=1e-4)
    assert (guided - plain).abs().max() > 1e-2
