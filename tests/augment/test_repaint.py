"""RePaint inpainting with ADM guidance: the combination step against its formula, the jump schedule
against the paper's, batch independence, and the box of the changed pixels."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from augment.guidance import classifier_guidance
from augment.repaint import box_from_change, guided_repaint_step, repaint, repaint_scheduler
from core.errors import StageError
from tests.support import LinearClassifier, tiny_unet

SIZE = 16


def trained(prediction: str = "epsilon", schedule: str = "squaredcos_cap_v2") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule, prediction_type=prediction, clip_sample=True)


def generators(seeds=(5, 6)) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def images_and_mask(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    original = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = torch.ones(n, 1, SIZE, SIZE)
    known[:, :, 4:11, 5:12] = 0
    return original, known


def paper_schedule(t_T: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's `get_schedule_jump` (andreas128/RePaint, guided_diffusion/scheduler.py), one jump level:
    go down one step at a time; at every jump point j (multiples of jump_length below t_T - jump_length)
    go jump_length steps back up, jump_n_sample - 1 times."""
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    return ts


@pytest.mark.parametrize("steps,jump_length,jump_n_sample", [(20, 5, 3), (25, 10, 10), (10, 1, 1), (8, 3, 2)])
def test_the_jump_schedule_is_the_papers(steps, jump_length, jump_n_sample):
    scheduler = repaint_scheduler(trained(), steps, jump_length, jump_n_sample)
    spacing = 1000 // steps
    assert (scheduler.timesteps // spacing).tolist() == paper_schedule(steps, jump_length, jump_n_sample)
    assert (scheduler.timesteps % spacing == 0).all()
    downs = sum(1 for a, b in zip(scheduler.timesteps, scheduler.timesteps[1:]) if b < a) + 1
    n_points = len(range(0, steps - jump_length, jump_length))
    assert downs == steps + (jump_n_sample - 1) * jump_length * n_points  # UNet evaluations


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("guided", [False, True])
def test_one_step_is_the_known_part_of_q_plus_the_guided_model_step(prediction, guided):
    torch.manual_seed(0)
    unet, sched = tiny_unet(), trained(prediction)
    from augment.samplers import as_epsilon_model

    model, eps_sched = as_epsilon_model(unet, sched)
    scheduler = repaint_scheduler(eps_sched, steps=10, jump_length=2, jump_n_sample=2)
    original, known = images_and_mask()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    classifier = LinearClassifier(3, (3, SIZE, SIZE))
    target = torch.tensor([0, 2])
    cond_fn = classifier_guidance(classifier, 30.0) if guided else None
    t = 500
    got = guided_repaint_step(model, scheduler, x, t, original, known, generators(), cond_fn, target)

    with torch.no_grad():
        out = unet(x, t).sample.double()
    abar = sched.alphas_cumprod.double()
    a_t, a_prev = abar[t], abar[t - 100]
    xd = x.double()
    eps = out if prediction == "epsilon" else a_t.sqrt() * out + (1 - a_t).sqrt() * xd
    x0 = ((xd - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)  # eta = 1
    z = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=g) for g in generators()]).double()
    unknown = a_prev.sqrt() * x0 + (1 - a_prev - var).sqrt() * eps + var.sqrt() * z
    if guided:
        unknown = unknown + var * 30.0 * classifier.closed_form_grad(x, target).double()
    known_part = a_prev.sqrt() * original.double() + (1 - a_prev).sqrt() * z
    expected = known * known_part + (1 - known) * unknown
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-4)


def test_guidance_moves_only_the_unknown_pixels():
    unet, sched = tiny_unet(), trained()
    scheduler = repaint_scheduler(sched, steps=10, jump_length=2, jump_n_sample=2)
    original, known = images_and_mask()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    cond_fn = classifier_guidance(LinearClassifier(3, (3, SIZE, SIZE)), 30.0)
    plain = guided_repaint_step(unet, scheduler, x, 500, original, known, generators(), None, None)
    guided = guided_repaint_step(unet, scheduler, x, 500, original, known, generators(), cond_fn, torch.tensor([0, 1]))
    moved = (guided - plain).abs().amax(dim=1, keepdim=True) > 0
    assert moved.any()
    assert not (moved & known.bool()).any()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_repaint_keeps_the_known_pixels_and_does_not_depend_on_the_batch(prediction):
    unet, sched = tiny_unet(), trained(prediction)
    original, known = images_and_mask(3)
    cond_fn = classifier_guidance(LinearClassifier(3, (3, SIZE, SIZE)), 10.0)
    target = torch.tensor([0, 1, 2])
    kwargs = dict(steps=6, jump_length=2, jump_n_sample=2, cond_fn=cond_fn)
    together = repaint(unet, sched, original, known, generators((1, 2, 3)), target=target, **kwargs)
    alone = torch.cat([repaint(unet, sched, original[i:i + 1], known[i:i + 1], generators((i + 1,)),
                               target=target[i:i + 1], **kwargs) for i in range(3)])
    assert together.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    keep = known.bool().expand_as(together)
    assert torch.equal(together[keep], original[keep])
    assert together.abs().max() <= 1
    hole = ~keep
    assert (together[hole] - original[hole]).abs().mean() > 0.05
    again = repaint(unet, sched, original, known, generators((1, 2, 3)), target=target, **kwargs)
    assert torch.equal(together, again)


def test_repaint_settings_are_checked():
    with pytest.raises(StageError, match="jump_length 0"):
        repaint_scheduler(trained(), 10, 0, 2)
    with pytest.raises(StageError, match="2000 steps"):
        repaint_scheduler(trained(), 2000, 2, 2)
    with pytest.raises(StageError, match="eta 1.5"):
        repaint_scheduler(trained(), 10, 2, 2, eta=1.5)
    original, known = images_and_mask()
    with pytest.raises(ValueError, match="1 generators for 2 images"):
        repaint(tiny_unet(), trained(), original, known, generators((1,)), steps=4, jump_length=1, jump_n_sample=1)


def test_box_from_change_takes_the_largest_changed_component_inside_the_hole():
    original = np.zeros((20, 20, 3), np.uint8)
    result = original.copy()
    result[3:9, 4:12, 1] = 200     # 48 px blob, the inserted object
    result[14:16, 14:16, 0] = 200  # 4 px speck
    result[10, 3, 2] = 15          # below the threshold
    result[0:2, 0:20] = 255        # changed but outside the hole
    hole = np.zeros((20, 20), bool)
    hole[2:18, 2:18] = True
    assert box_from_change(original, result, hole, threshold=20) == (4, 3, 12, 9)
    result[5, 12:16, 1] = 90       # a diagonal-free arm joins the blob: still one component
    assert box_from_change(original, result, hole, threshold=20) == (4, 3, 16, 9)
    assert box_from_change(original, original, hole, threshold=20) is None
    assert box_from_change(original, result, np.zeros((20, 20), bool), threshold=0) is None


def test_box_from_change_joins_diagonal_neighbours_and_checks_shapes():
    original = np.zeros((8, 8, 3), np.float32)
    result = original.copy()
    result[2, 2] = result[3, 3] = result[4, 4] = 1.0
    assert box_from_change(original, result, np.ones((8, 8), bool), threshold=0.5) == (2, 2, 5, 5)
    with pytest.raises(ValueError, match="shapes"):
        box_from_change(original, result[:4], np.ones((8, 8), bool), threshold=0.5)
