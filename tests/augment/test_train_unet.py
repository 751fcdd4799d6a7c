"""augment/train_unet.py + pipelines/train_unet.py: resume, EMA, wall-clock stop, outputs."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from augment.train_unet import (
    PatchUNetTrainConfig,
    UNetTrainConfig,
    WholeImages,
    fingerprint,
    sample_grid,
    train_unet,
    write_unet_outputs,
)
from core.errors import StageError
from pipelines import train_unet as stage
from tests.support import (
    adm_schedule,
    move_tagged_to_unlabelled,
    settings,
    tiny_unet,
    trained_scheduler,
    write_params,
)

TINY = settings(
    UNetTrainConfig, "unet", seed=3, model={"attention_head_dim": 8, "dropout": 0.1},
    schedule={"learn_sigma": True, "prediction_type": "epsilon"}, snr_gamma=None,
    batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=2, mixed_precision="no",
    max_steps=6, max_minutes=10.0, checkpoint_every=2, log_every=1, n_samples=4, sample_steps=3,
)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_scene_unet_learns_from_unlabelled_images_too_the_patch_unet_only_from_known_ones(
        tiny_prepared, tmp_path, monkeypatch):
    move_tagged_to_unlabelled(tmp_path, 3)
    result = train_unet(dataclasses.replace(TINY, max_steps=1), tiny_prepared, tmp_path / "ckpt")
    assert result.summary["n_images"] == 8 + 5 + 3  # train, the tagged left, the unlabelled
    asked = []

    def splits_only(prepared, splits, cfg):
        asked.append(tuple(splits))
        raise StageError("stop here")

    monkeypatch.setattr("augment.train_unet.load_training_set", splits_only)
    with pytest.raises(StageError, match="stop here"):
        train_unet(settings(PatchUNetTrainConfig, "patch_unet"), tiny_prepared, tmp_path / "patch")
    assert asked == [("train", "tagged")]  # crops need every box known (augment.patches)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tiny_prepared, tmp_path):
    straight = train_unet(TINY, tiny_prepared, tmp_path / "ckpt_a")
    first = train_unet(dataclasses.replace(TINY, max_steps=3), tiny_prepared, tmp_path / "ckpt_b")
    assert first.summary["steps"] == 3
    resumed = train_unet(TINY, tiny_prepared, tmp_path / "ckpt_b")
    assert resumed.summary["resumed_from"].name == "step_00000003"
    assert resumed.summary["steps"] == straight.summary["steps"] == 6
    for a, b in [(straight.raw_unet, resumed.raw_unet), (straight.ema_unet, resumed.ema_unet)]:
        sa, sb = state(a), state(b)
        assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    columns = ["step", "loss", "lr"]
    pd.testing.assert_frame_equal(straight.loss_log[columns], resumed.loss_log[columns])
    assert sorted(p.name for p in (tmp_path / "ckpt_b").iterdir()) == ["step_00000004", "step_00000006"]


@pytest.mark.slow
def test_saved_model_holds_ema_weights_not_raw(tiny_prepared, tmp_path):
    result = train_unet(TINY, tiny_prepared, tmp_path / "ckpt")
    (tmp_path / "model").mkdir()
    (tmp_path / "report").mkdir()
    write_unet_outputs(result, TINY, tmp_path / "model", tmp_path / "report")
    saved = state(UNet2DModel.from_pretrained(tmp_path / "model"))
    ema, raw = state(result.ema_unet), state(result.raw_unet)
    assert all(torch.equal(saved[k], ema[k]) for k in saved)
    assert any(not torch.allclose(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    assert DDPMScheduler.from_pretrained(tmp_path / "model" / "scheduler").config.variance_type == "learned_range"


def test_wall_clock_budget_stops_warns_and_is_recorded(tiny_prepared, tmp_path, capsys):
    cfg = dataclasses.replace(TINY, max_minutes=1e-9, grad_accum=1, schedule=adm_schedule())
    result = train_unet(cfg, tiny_prepared, tmp_path / "ckpt")
    assert result.summary["steps"] == 1 and result.summary["stop_reason"] == "max_minutes"
    assert "warning: train_unet: stopped by max_minutes (1e-09) at step 1 of 6" in capsys.readouterr().err


def test_the_demo_has_no_time_limit_so_runs_end_at_max_steps():
    assert settings(UNetTrainConfig, "unet").max_minutes is None


def test_the_sample_grid_is_the_unguided_ddim_sampler_with_one_seed_per_image():
    from augment.samplers import sample

    unet, scheduler = tiny_unet(), trained_scheduler()
    grid = sample_grid(unet, scheduler, n=3, steps=2, seed=5)
    alone = sample("ddim", unet, scheduler, [torch.Generator().manual_seed(6)], steps=2)
    assert grid.shape == (3, 3, 16, 16) and grid.abs().max() <= 1
    torch.testing.assert_close(grid[1:2], alone.clamp(-1, 1))


def test_checkpoints_of_other_settings_are_not_resumed(tiny_prepared, tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=2, grad_accum=1, schedule=adm_schedule())
    train_unet(cfg, tiny_prepared, tmp_path / "ckpt")
    other = train_unet(dataclasses.replace(cfg, lr=5e-4), tiny_prepared, tmp_path / "ckpt")
    assert other.summary["resumed_from"] is None and other.summary["steps"] == 2


@pytest.mark.slow
def test_stage_main_writes_model_samples_and_loss_plot(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, unet={"batch_size": 4, "max_steps": 3, "log_every": 1, "n_samples": 4, "sample_steps": 2})
    assert stage.main([]) == 0
    model_dir = tmp_path / "models" / "unet"
    assert {"config.json", "diffusion_pytorch_model.safetensors", "scheduler", "params.json", "samples.png"} <= {
        p.name for p in model_dir.iterdir()}
    params = json.loads((model_dir / "params.json").read_text())
    assert params["training"]["steps"] == 3 and params["training"]["stop_reason"] == "max_steps"
    log = pd.read_csv(tmp_path / "reports" / "unet" / "loss.csv")
    assert list(log.columns) == ["step", "loss", "lr", "images_per_s"] and list(log["step"]) == [1, 2, 3]
    assert UNet2DModel.from_pretrained(model_dir).config.sample_size == 16
    with Image.open(model_dir / "samples.png") as grid:  # 2 x 2 samples of 16 px, each shown at least 96 px
        assert grid.width >= 2 * 96 and grid.height >= 2 * 96


def test_unknown_param_fails_with_one_line(tiny_prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, unet={"batchsize": 4})
    assert stage.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: unet: unknown key(s) batchsize; known: seed,") and err.count("\n") == 1
    assert not (tmp_path / "models").exists()


def test_checkpoint_fingerprint_covers_the_training_code_and_the_resolved_precision(tmp_path, monkeypatch):
    import augment.unet
    from augment.train_unet import WholeImages, fingerprint

    images, whole = torch.zeros(2, 3, 16, 16, dtype=torch.uint8), WholeImages()
    fp32, bf16 = SimpleNamespace(mixed_precision="no", num_processes=1), SimpleNamespace(mixed_precision="bf16",
                                                                                        num_processes=1)
    before = fingerprint(TINY, images, fp32, whole)
    assert fingerprint(TINY, images, fp32, whole) == before
    assert fingerprint(dataclasses.replace(TINY, max_steps=99, log_every=5), images, fp32, whole) == before  # resumable
    assert fingerprint(TINY, images, bf16, whole) != before  # `auto` may resolve otherwise on another machine
    assert fingerprint(TINY, images, SimpleNamespace(mixed_precision="no", num_processes=2), whole) != before
    patched = tmp_path / "unet.py"
    patched.write_text(open(augment.unet.__file__).read() + "\n# a fix to the loss\n")
    monkeypatch.setattr(augment.unet, "__file__", str(patched))
    assert fingerprint(TINY, images, fp32, whole) != before


def test_lowering_max_steps_resumes_an_earlier_checkpoint_never_a_later_one(tiny_prepared, tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=4, grad_accum=1, checkpoint_every=1, keep_checkpoints=4,
                              schedule=adm_schedule())
    train_unet(cfg, tiny_prepared, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir())[-1] == "step_00000004"
    lowered = train_unet(dataclasses.replace(cfg, max_steps=2), tiny_prepared, tmp_path / "ckpt")
    assert lowered.summary["steps"] == 2 and lowered.summary["resumed_from"].name == "step_00000002"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000001", "step_00000002"]
    straight = train_unet(dataclasses.replace(cfg, max_steps=2), tiny_prepared, tmp_path / "fresh")
    a, b = state(lowered.ema_unet), state(straight.ema_unet)
    assert all(torch.equal(a[k], b[k]) for k in a)
    only_later = train_unet(dataclasses.replace(cfg, max_steps=1), tiny_prepared, tmp_path / "fresh")
    assert only_later.summary["resumed_from"].name == "step_00000001"
    none_usable = train_unet(dataclasses.replace(cfg, max_steps=3, keep_checkpoints=1, checkpoint_every=3),
                             tiny_prepared, tmp_path / "late")
    assert none_usable.summary["resumed_from"] is None
    retrained = train_unet(dataclasses.replace(cfg, max_steps=2, keep_checkpoints=1, checkpoint_every=3),
                           tiny_prepared, tmp_path / "late")  # only step 3 exists: past max_steps, start fresh
    assert retrained.summary["resumed_from"] is None and retrained.summary["steps"] == 2
    assert [p.name for p in (tmp_path / "late").iterdir()] == ["step_00000002"]


def test_a_unet_started_from_saved_weights_has_them_and_they_enter_the_fingerprint(tmp_path):
    cfg = settings(PatchUNetTrainConfig, "patch_unet")
    saved = WholeImages().build(cfg, 16)
    torch.nn.init.normal_(saved.conv_in.weight)  # not what a fresh build draws
    saved.save_pretrained(tmp_path / "scene")
    started = WholeImages(tmp_path / "scene").build(cfg, 16)
    assert all(torch.equal(a, b) for a, b in zip(started.state_dict().values(), saved.state_dict().values()))
    accelerator = SimpleNamespace(mixed_precision="no", num_processes=1)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    keys = {fingerprint(cfg, images, accelerator, WholeImages()),
            fingerprint(cfg, images, accelerator, WholeImages(tmp_path / "scene"))}
    torch.nn.init.normal_(saved.conv_in.weight)
    saved.save_pretrained(tmp_path / "scene")
    keys.add(fingerprint(cfg, images, accelerator, WholeImages(tmp_path / "scene")))
    assert len(keys) == 3


def test_starting_weights_that_are_missing_or_do_not_fit_are_one_line(tmp_path):
    cfg = settings(PatchUNetTrainConfig, "patch_unet")
    with pytest.raises(StageError, match=r"diffusion_pytorch_model.safetensors: not found; run train_unet first"):
        WholeImages(tmp_path / "none").build(cfg, 16)
    tiny_unet().save_pretrained(tmp_path / "other")  # another shape
    with pytest.raises(StageError, match=r"other: its weights do not fit this model \(init_from_unet needs the same "):
        WholeImages(tmp_path / "other").build(cfg, 16)
