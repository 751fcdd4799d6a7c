"""Guided sampling equals openai/guided-diffusion as released, x_0 clipping included.

`GuidedDiffusion` below is written from guided-diffusion's `gaussian_diffusion.py` (`SpacedDiffusion`
on the sampler's timesteps): `p_mean_variance`, `condition_mean`, `condition_score`, `p_sample`
and `ddim_sample`, in float64. A v-prediction model enters it as eps = sqrt(abar) v + sqrt(1 - abar)
x_t (guided-diffusion has eps models only). Noise is drawn per image from the same generators the
project's samplers use, in the same order, so whole trajectories can be compared.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from augment.guidance import classifier_guidance
from augment.samplers import as_epsilon_model, fresh_scheduler, guided_ddpm_step, guided_eps_step, sample, x0_clip
from tests.support import LinearClassifier, tiny_unet

SIZE, SCALE = 16, 30.0
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def trained(schedule: str, prediction: str, clip: bool, variance_type: str = "fixed_small") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=SCHEDULES[schedule], prediction_type=prediction,
                         variance_type=variance_type, clip_sample=clip)


def generators(seeds=(11, 12)) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def per_image_noise(gens) -> torch.Tensor:
    return torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=g) for g in gens]).double()


class GuidedDiffusion:
    """guided-diffusion's GaussianDiffusion respaced to `timesteps` (its `space_timesteps` chain)."""

    def __init__(self, scheduler: DDPMScheduler, timesteps, model, cond_fn, target, clip: bool):
        self.used = sorted(int(t) for t in timesteps)
        abar = scheduler.alphas_cumprod.double()[self.used]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.abar, self.abar_prev = abar, abar_prev
        self.betas = 1 - abar / abar_prev
        self.posterior_variance = self.betas * (1 - abar_prev) / (1 - abar)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]]))
        self.coef1 = self.betas * abar_prev.sqrt() / (1 - abar)
        self.coef2 = (1 - abar_prev) * (1 - self.betas).sqrt() / (1 - abar)
        self.variance_type, self.prediction = scheduler.config.variance_type, scheduler.config.prediction_type
        self.model, self.cond_fn, self.target, self.clip = model, cond_fn, target, clip

    def t(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.used[i], dtype=torch.long)

    def predict_xstart_from_eps(self, x, i, eps):
        return (1 / self.abar[i]).sqrt() * x - (1 / self.abar[i] - 1).sqrt() * eps

    def predict_eps_from_xstart(self, x, i, pred_xstart):
        return ((1 / self.abar[i]).sqrt() * x - pred_xstart) / (1 / self.abar[i] - 1).sqrt()

    def q_posterior_mean(self, x_start, x, i):
        return self.coef1[i] * x_start + self.coef2[i] * x

    def p_mean_variance(self, x, i):
        out = self.model(x.float(), self.t(i, x)).sample.double()
        eps = out[:, :3]
        if self.prediction == "v_prediction":
            eps = self.abar[i].sqrt() * eps + (1 - self.abar[i]).sqrt() * x
        if self.variance_type == "learned_range":
            min_log, max_log = self.posterior_log_variance_clipped[i], torch.log(self.betas[i])
            frac = (out[:, 3:] + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = log_variance.exp()
        elif self.variance_type == "fixed_large":
            variance = torch.cat([self.posterior_variance[1:2], self.betas[1:]])[i]
            log_variance = variance.log()
        else:
            variance, log_variance = self.posterior_variance[i], self.posterior_log_variance_clipped[i]
        pred_xstart = self.predict_xstart_from_eps(x, i, eps)
        if self.clip:
            pred_xstart = pred_xstart.clamp(-1, 1)
        return {"mean": self.q_posterior_mean(pred_xstart, x, i), "variance": variance,
                "log_variance": log_variance, "pred_xstart": pred_xstart}

    def grad(self, x, i):
        return self.cond_fn(x.float(), self.t(i, x), self.target).double()

    def condition_mean(self, out, x, i):
        return out["mean"] + out["variance"] * self.grad(x, i)

    def condition_score(self, out, x, i):
        eps = self.predict_eps_from_xstart(x, i, out["pred_xstart"])
        eps = eps - (1 - self.abar[i]).sqrt() * self.grad(x, i)
        pred_xstart = self.predict_xstart_from_eps(x, i, eps)
        return {**out, "pred_xstart": pred_xstart, "mean": self.q_posterior_mean(pred_xstart, x, i)}

    def p_sample(self, x, i, noise):
        out = self.p_mean_variance(x, i)
        mean = self.condition_mean(out, x, i) if self.cond_fn else out["mean"]
        return mean + (i != 0) * torch.exp(0.5 * out["log_variance"]) * noise

    def ddim_sample(self, x, i, noise, eta):
        out = self.p_mean_variance(x, i)
        if self.cond_fn:
            out = self.condition_score(out, x, i)
        eps = self.predict_eps_from_xstart(x, i, out["pred_xstart"])
        abar, abar_prev = self.abar[i], self.abar_prev[i]
        sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
        mean_pred = out["pred_xstart"] * abar_prev.sqrt() + (1 - abar_prev - sigma**2).sqrt() * eps
        return mean_pred + (i != 0) * sigma * noise

    def loop(self, name: str, gens, eta: float = 0.0) -> torch.Tensor:
        """The whole chain from x_T, drawing noise where the project's step does (ddpm: t > 0;
        ddim: every step when eta > 0)."""
        x = per_image_noise(gens)
        for i in reversed(range(len(self.used))):
            if name == "ddpm":
                x = self.p_sample(x, i, per_image_noise(gens) if i > 0 else 0.0)
            else:
                x = self.ddim_sample(x, i, per_image_noise(gens) if eta > 0 else 0.0, eta)
        return x


def setup(schedule, prediction, clip, variance_type="fixed_small", scale=SCALE):
    unet = tiny_unet(6 if variance_type == "learned_range" else 3, seed=3)
    classifier = LinearClassifier(3, (3, SIZE, SIZE), seed=1)
    return (unet, trained(schedule, prediction, clip, variance_type), classifier_guidance(classifier, scale),
            torch.tensor([0, 2]))


CASES = [(s, p, c) for s in SCHEDULES for p in ("epsilon", "v_prediction") for c in (True, False)]


@pytest.mark.parametrize("schedule, prediction, clip", CASES)
@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_ddim_trajectory_equals_guided_diffusion(schedule, prediction, clip, eta):
    unet, scheduler, cond_fn, target = setup(schedule, prediction, clip)
    ours = sample("ddim", unet, scheduler, generators(), steps=5, cond_fn=cond_fn, target=target, eta=eta)
    timesteps = fresh_scheduler(DDIMScheduler, scheduler, 5).timesteps
    reference = GuidedDiffusion(scheduler, timesteps, unet, cond_fn, target, clip).loop("ddim", generators(), eta)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("schedule, prediction, clip", CASES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_trajectory_equals_guided_diffusion(schedule, prediction, clip, variance_type):
    unet, scheduler, cond_fn, target = setup(schedule, prediction, clip, variance_type)
    ours = sample("ddpm", unet, scheduler, generators(), steps=5, cond_fn=cond_fn, target=target)
    timesteps = fresh_scheduler(DDPMScheduler, scheduler, 5).timesteps
    reference = GuidedDiffusion(scheduler, timesteps, unet, cond_fn, target, clip).loop("ddpm", generators())
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_one_guided_ddim_step_where_the_guided_x0_leaves_the_clip_range(schedule, prediction):
    unet, scheduler, cond_fn, target = setup(schedule, prediction, clip=True, scale=200.0)
    eps_model, eps_scheduler = as_epsilon_model(unet, scheduler)
    step_scheduler = fresh_scheduler(DDIMScheduler, eps_scheduler, 10, clip_sample=False)
    reference = GuidedDiffusion(scheduler, step_scheduler.timesteps, unet, cond_fn, target, clip=True)
    i = 4  # the reference's index of timesteps[5] (its chain is ascending)
    t = step_scheduler.timesteps[5]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    ours = guided_eps_step(eps_model, step_scheduler, x, t, cond_fn, target, clip=x0_clip(scheduler))
    expected = reference.ddim_sample(x.double(), i, 0.0, 0.0)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-5)

    guided_x0 = reference.condition_score(reference.p_mean_variance(x.double(), i), x.double(), i)["pred_xstart"]
    assert (guided_x0.abs() > 1).float().mean() > 0.05  # the guidance pushes x_0 out of [-1, 1] here...
    clipping_after = fresh_scheduler(DDIMScheduler, eps_scheduler, 10)  # ...where clipping after the shift,
    swallowed = guided_eps_step(eps_model, clipping_after, x, t, cond_fn, target)  # the former algorithm, differs
    assert (swallowed - ours).abs().max() > 1e-2


def test_clip_is_refused_when_the_scheduler_clips_again():
    unet, scheduler, cond_fn, target = setup("cosine", "epsilon", clip=True)
    clipping = fresh_scheduler(DDIMScheduler, scheduler, 10)
    with pytest.raises(ValueError, match="clip_sample=False"):
        guided_eps_step(unet, clipping, torch.zeros(2, 3, SIZE, SIZE), clipping.timesteps[0], cond_fn, target,
                        clip=1.0)


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range"])
def test_last_ddpm_step_shift_uses_guided_diffusions_variance_bound(variance_type):
    unet, scheduler, cond_fn, target = setup("linear", "epsilon", clip=True, variance_type=variance_type)
    step_scheduler = fresh_scheduler(DDPMScheduler, scheduler, 10)
    t, above = step_scheduler.timesteps[-1], step_scheduler.timesteps[-2]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    shift = (guided_ddpm_step(unet, step_scheduler, x, t, generators(), cond_fn, target)
             - guided_ddpm_step(unet, step_scheduler, x, t, generators(), None, target)).double()
    abar, abar_above = scheduler.alphas_cumprod.double()[t], scheduler.alphas_cumprod.double()[above]
    floor = (1 - abar) / (1 - abar_above) * (1 - abar_above / abar)  # posterior_variance[1]
    if variance_type == "learned_range":
        assert floor > 1e-6  # diffusers' own lower bound there is 1e-20
        frac = (unet(x, t).sample[:, 3:].double() + 1) / 2
        variance = torch.exp(frac * torch.log(1 - abar) + (1 - frac) * torch.log(floor))
    else:
        variance = floor
    grad = cond_fn(x, torch.full((2,), int(t)), target).double()
    torch.testing.assert_close(shift, variance * grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpm_solver_pp_first_step_is_the_clipped_guided_ddim_step(prediction):
    """DPM-Solver++ is not in guided-diffusion; its first (first-order) step is DDIM with eta 0
    between its first two timesteps, and it gets the same condition_score, clip included."""
    unet, scheduler, cond_fn, target = setup("cosine", prediction, clip=True, scale=200.0)
    eps_model, eps_scheduler = as_epsilon_model(unet, scheduler)
    # "leading" spacing starts at t = 900: at DPM-Solver's own t = 999, alpha_t ~ 1e-4 magnifies float32 rounding
    dpm = fresh_scheduler(DPMSolverMultistepScheduler, eps_scheduler, 10, algorithm_type="dpmsolver++",
                          timestep_spacing="leading")
    t, t_prev = dpm.timesteps[0], dpm.timesteps[1]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    ours = guided_eps_step(eps_model, dpm, x, t, cond_fn, target, clip=x0_clip(scheduler))
    reference = GuidedDiffusion(scheduler, [t_prev, t], unet, cond_fn, target, clip=True)
    torch.testing.assert_close(ours.double(), reference.ddim_sample(x.double(), 1, 0.0, 0.0), rtol=1e-4, atol=1e-4)
