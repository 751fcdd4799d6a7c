"""augment/superres.py: ADM's super-resolution model, its training view, conditioning and sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from augment.samplers import sample
from augment.superres import (
    LowResConditioned,
    PatchesWithLowRes,
    Upsampler,
    UpsamplerTrainConfig,
    bilinear,
    low_res_condition,
    upsample_images,
)
from augment.train_unet import UNetTrainConfig, train_unet
from augment.unet import build_scheduler, build_unet
from core.errors import StageError
from tests.support import TINY_SIZE, TINY_UPSAMPLER, adm_schedule, settings, tiny_arch, tiny_upsampler

TINY = settings(UpsamplerTrainConfig, "upsampler", **TINY_UPSAMPLER, seed=5, max_steps=4, checkpoint_every=2)
SCENE = settings(UNetTrainConfig, "unet", seed=5, batch_size=4, mixed_precision="no", max_steps=2)
RESIDUAL = dataclasses.replace(TINY, target="residual", residual_scale=4.0)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_conditioning_is_the_block_mean_upsampled_bilinearly():
    x0 = torch.randn(2, 3, 8, 8)
    blocks = x0.reshape(2, 3, 2, 4, 2, 4).mean(dim=(3, 5))  # area downsampling by 4, written out
    assert torch.allclose(F.avg_pool2d(x0, 4), blocks, atol=1e-6)
    expected = F.interpolate(blocks, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(low_res_condition(x0, 4), expected, atol=1e-6)
    assert torch.allclose(low_res_condition(torch.full((1, 3, 8, 8), 0.3), 4), torch.full((1, 3, 8, 8), 0.3))


def test_crops_lie_on_the_low_res_grid_so_their_low_res_view_is_a_window_of_the_whole_images():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    view = PatchesWithLowRes(TINY)
    crops = view.clean(images, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 8, 8) and crops.min() >= -1 and crops.max() <= 1
    whole = F.avg_pool2d(images.float() / 127.5 - 1, 4)
    for crop, low in zip(crops, whole):
        windows = [low[:, y:y + 2, x:x + 2] for y in range(3) for x in range(3)]
        assert any(torch.allclose(F.avg_pool2d(crop[None], 4)[0], w, atol=1e-5) for w in windows)
    again = view.clean(images, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)


def test_the_model_sees_x_t_and_the_conditioning_and_predicts_three_channels():
    view = PatchesWithLowRes(TINY)
    unet = view.build(TINY, TINY_SIZE)
    assert (unet.config.in_channels, unet.config.out_channels, unet.config.sample_size) == (6, 3, 8)
    assert not any("Attention" in type(m).__name__ for m in unet.modules())  # convolutional: crops and wholes alike
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    x0, condition = view.split(images)
    assert torch.equal(x0, images) and torch.equal(condition, low_res_condition(images, 4))
    x_t = torch.randn(2, 3, 8, 8)
    model_input = view.model_input(x_t, condition)
    assert torch.equal(model_input[:, :3], x_t) and torch.equal(model_input[:, 3:], condition)


def test_the_residual_target_diffuses_the_scaled_detail_the_conditioning_lacks():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    x0, condition = PatchesWithLowRes(RESIDUAL).split(images)
    assert torch.equal(condition, low_res_condition(images, 4))
    assert torch.allclose(x0, 4.0 * (images - condition), atol=1e-6)
    flat, _ = PatchesWithLowRes(RESIDUAL).split(torch.full((1, 3, 8, 8), 0.3))
    assert torch.allclose(flat, torch.zeros_like(flat), atol=1e-6)  # nothing to add to a flat image


@pytest.mark.parametrize("changes, message", [
    ({"low_res": 5}, "low_res: 5 px must divide image_size 16 at least twice over"),
    ({"low_res": 16}, "low_res: 16 px must divide image_size 16 at least twice over"),
    ({"patch_size": 6}, "patch_size: 6 must be a multiple of the upsampling factor 4 and at most image_size 16"),
    ({"patch_size": 20}, "patch_size: 20 must be a multiple of the upsampling factor 4 and at most image_size 16"),
    ({"target": "edges"}, "target: 'edges' is not one of image, residual"),
    ({"residual_scale": 0.0}, "residual_scale: must be > 0, got 0.0"),
    ({"model": tiny_arch()}, "model.attention_resolutions: must be empty: the upsampler learns from crops and "
                             "upsamples whole images, which only a convolutional model sees alike"),
])
def test_sizes_that_do_not_fit_the_factor_are_refused(changes, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        dataclasses.replace(TINY, **changes)


@pytest.mark.slow
def test_trains_through_the_scene_unets_loop_and_resumes_to_the_same_weights(tiny_prepared, tmp_path):
    straight = train_unet(TINY, tiny_prepared, tmp_path / "a", view=PatchesWithLowRes(TINY))
    assert straight.summary["steps"] == 4 and straight.ema_unet.config.in_channels == 6
    assert straight.loss_log["loss"].notna().all()
    train_unet(dataclasses.replace(TINY, max_steps=2), tiny_prepared, tmp_path / "b", view=PatchesWithLowRes(TINY))
    resumed = train_unet(TINY, tiny_prepared, tmp_path / "b", view=PatchesWithLowRes(TINY))
    assert resumed.summary["resumed_from"].name == "step_00000002"
    a, b = state(straight.raw_unet), state(resumed.raw_unet)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    scene = train_unet(SCENE, tiny_prepared, tmp_path / "b")
    assert scene.summary["steps"] == 2  # the scene UNet's checkpoints in the same folder are not the upsampler's
    assert scene.summary["resumed_from"] is None


def seeded(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(i) for i in range(n)]


def test_upsampling_gives_the_detector_resolution_deterministically_and_follows_the_low_res_image():
    upsampler = tiny_upsampler()
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    out = upsampler(low, 3, seeded(2))
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, upsampler(low, 3, seeded(2)))
    assert not torch.allclose(out, upsampler(-low, 3, seeded(2)))
    assert upsampler.scheduler.config.clip_sample_range == 1.0


def test_the_residual_upsampler_adds_the_sampled_detail_to_the_conditioning():
    upsampler = tiny_upsampler(target="residual", residual_scale=4.0)
    assert upsampler.scheduler.config.clip_sample_range == 4.0  # a residual of at most the image range
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    condition = bilinear(low, 16)
    detail = sample("ddim", LowResConditioned(upsampler.unet, condition), upsampler.scheduler, seeded(2), steps=3)
    expected = (condition + detail / 4.0).clamp(-1, 1)
    assert torch.allclose(upsampler(low, 3, seeded(2)), expected, atol=1e-6)


def test_a_saved_upsampler_loads_as_it_was_and_its_absence_is_one_line(tmp_path):
    upsampler = tiny_upsampler(target="residual", residual_scale=4.0)
    upsampler.save(tmp_path / "up")
    loaded = Upsampler.load(tmp_path / "up")
    assert (loaded.factor, loaded.target, loaded.residual_scale) == (4, "residual", 4.0)
    low = torch.rand(1, 3, 4, 4) * 2 - 1
    assert torch.allclose(loaded(low, 2, seeded(1)), upsampler(low, 2, seeded(1)), atol=1e-6)
    with pytest.raises(StageError, match="upsampler.json: missing; run stage train_upsampler first$"):
        Upsampler.load(tmp_path / "nothing")
    (tmp_path / "up" / "upsampler.json").write_text('{"factor": 4}')
    with pytest.raises(StageError, match=r"upsampler.json: unreadable \(KeyError: 'target'\); run stage "
                                         "train_upsampler again$"):
        Upsampler.load(tmp_path / "up")


def test_upsampled_uint8_images_do_not_depend_on_the_batching():
    upsampler = tiny_upsampler()
    images = [np.random.default_rng(i).integers(0, 256, (4, 4, 3), dtype=np.uint8) for i in range(3)]
    one_by_one = upsample_images(upsampler, images, [7, 8, 9], steps=2, batch_size=1)
    together = upsample_images(upsampler, images, [7, 8, 9], steps=2, batch_size=3)
    assert [a.shape for a in together] == [(16, 16, 3)] * 3 and together[0].dtype == np.uint8
    # the noise is per image; only the batched convolutions' float rounding (~1e-6) may flip a uint8 level
    gaps = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(one_by_one, together)]
    assert max(g.max() for g in gaps) <= 1 and sum((g > 0).sum() for g in gaps) <= 0.01 * 3 * 16 * 16 * 3
    assert not np.array_equal(upsample_images(upsampler, images[:1], [1], 2, 1)[0], together[0])


def test_the_samplers_see_a_three_channel_model_that_always_gets_the_conditioning():
    seen = []

    class Recorder(UNet2DModel):
        def forward(self, sample, timestep, **kwargs):
            seen.append(sample.clone())
            return super().forward(sample, timestep, **kwargs)

    unet = Recorder.from_config(build_unet(tiny_arch(), adm_schedule(), 8, in_channels=6).config)
    condition = torch.randn(1, 3, 16, 16)
    model = LowResConditioned(unet, condition)
    assert (model.config.in_channels, model.config.sample_size) == (3, 16) and unet.config.in_channels == 6
    x = torch.randn(1, 3, 16, 16)
    model(x, torch.tensor([10]))
    assert torch.equal(seen[0][:, :3], x) and torch.equal(seen[0][:, 3:], condition)


def test_a_scene_unet_is_not_an_upsampler():
    unet = build_unet(tiny_arch(), adm_schedule(), 8)
    with pytest.raises(ValueError, match="an upsampler has 6 input channels"):
        Upsampler(unet, build_scheduler(adm_schedule()), 4, "image", 1.0)
