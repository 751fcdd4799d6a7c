"""augment/upsampler.py: ADM's super-resolution model, its training view, conditioning and sampling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from augment.train_unet import UNetTrainConfig, train_unet
from augment.unet import build_scheduler, build_unet
from augment.upsampler import LowResConditioned, PatchesWithLowRes, UpsamplerTrainConfig, low_res_condition, upsample
from core.params import from_dict, to_jsonable
from tests.support import TINY_SIZE, adm_schedule, settings, tiny_arch

SCENE = settings(UNetTrainConfig, "unet", seed=5, snr_gamma=None, batch_size=4, grad_accum=1, lr=1e-3, warmup_steps=1,
                 mixed_precision="no", max_steps=4, checkpoint_every=2, log_every=1, n_samples=2, sample_steps=2)
# The tiny prepared images are 16 px; the upsampler brings 4-px images to them (factor 4) from 8-px crops.
TINY = from_dict(UpsamplerTrainConfig, {**to_jsonable(SCENE), "image_size": TINY_SIZE, "low_res": 4, "patch_size": 8,
                                        "schedule": to_jsonable(adm_schedule(noise_schedule="linear"))},
                 where="tiny upsampler")


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
    x_t, x0 = torch.randn(2, 3, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1
    model_input = view.model_input(x_t, x0)
    assert torch.equal(model_input[:, :3], x_t) and torch.equal(model_input[:, 3:], low_res_condition(x0, 4))


@pytest.mark.parametrize("changes, message", [
    ({"low_res": 5}, "low_res: 5 px must divide image_size 16 at least twice over"),
    ({"low_res": 16}, "low_res: 16 px must divide image_size 16 at least twice over"),
    ({"patch_size": 6}, "patch_size: 6 must be a multiple of the upsampling factor 4 and at most image_size 16"),
    ({"patch_size": 20}, "patch_size: 20 must be a multiple of the upsampling factor 4 and at most image_size 16"),
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
    scene = train_unet(dataclasses.replace(SCENE, max_steps=2), tiny_prepared, tmp_path / "b")
    assert scene.summary["steps"] == 2  # the scene UNet's checkpoints in the same folder are not the upsampler's
    assert scene.summary["resumed_from"] is None


def test_upsampling_gives_the_detector_resolution_deterministically_and_follows_the_low_res_image():
    torch.manual_seed(0)
    unet = build_unet(tiny_arch(), adm_schedule(noise_schedule="linear"), 8, in_channels=6).eval()
    scheduler = build_scheduler(adm_schedule(noise_schedule="linear"))
    low = torch.rand(2, 3, 4, 4) * 2 - 1

    def run(images):
        return upsample(unet, scheduler, images, 4, 3, [torch.Generator().manual_seed(i) for i in range(2)])

    out = run(low)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, run(low))
    assert not torch.allclose(out, run(-low))


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
        upsample(unet, build_scheduler(adm_schedule()), torch.zeros(1, 3, 4, 4), 4, 2, [torch.Generator()])
