"""Classifier guidance: the gradient closure the guided samplers call at every step.

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs"), section 4 / openai/guided-diffusion
`cond_fn`: guidance toward class y adds s * grad_x log p_phi(y | x_t, t) to each sampling step.
The litter classifier is multi-label (one sigmoid per class, `augment.classifier`), so

    log p_phi(y present | x_t, t) = logsigmoid(logits[:, y])

Symbols: x_t -> `x_t` [B, 3, H, W] in the diffusion's space, t -> `timesteps` [B] (training
timesteps, 0 .. num_train_timesteps - 1), y -> `target` LongTensor [B] (class indices),
s -> `scale` (`generate.guidance_scale`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augment.samplers import CondFn


def classifier_guidance(classifier: nn.Module, scale: float) -> CondFn:
    """The guided-diffusion `cond_fn` closure around a multi-label classifier(x, timesteps) -> logits.

    The gradient is taken by autograd on a detached fp32 copy of x_t (autocast off), so the
    sampler's graph and precision are untouched; the result is fp32.
    """

    def cond_fn(x_t: torch.Tensor, timesteps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad(), torch.autocast(x_t.device.type, enabled=False):
            x = x_t.detach().float().requires_grad_(True)
            log_p = log_prob_present(classifier, x, timesteps, target)  # [B]
            (grad,) = torch.autograd.grad(log_p.sum(), x)
        return scale * grad

    return cond_fn


def log_prob_present(
    classifier: nn.Module, x: torch.Tensor, timesteps: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """log p(target present | x, t) = logsigmoid(logits[b, target[b]]), [B]."""
    timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
    logits = classifier(x, timesteps).float()  # [B, n_classes]
    return F.logsigmoid(logits.gather(1, target.to(x.device).reshape(-1, 1))).squeeze(1)


@torch.no_grad()
def prob_present(classifier: nn.Module, x: torch.Tensor, target: torch.Tensor, timestep: int = 0) -> torch.Tensor:
    """p(target present | x) [B] of images x [B, 3, H, W] in [-1, 1] at one timestep (0: clean)."""
    timesteps = torch.full((x.shape[0],), timestep, dtype=torch.long, device=x.device)
    return log_prob_present(classifier, x.float(), timesteps, target).exp()
