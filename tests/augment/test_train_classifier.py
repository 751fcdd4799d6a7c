"""augment/train_classifier.py + the train_classifier / train_judge stages, end to end on 16-px images."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DModel

from augment.classifier import load_classifier
from augment.train_classifier import ClassifierTrainConfig, bucket_ranges, sample_timesteps
from augment.unet import build_scheduler, build_unet
from pipelines import train_classifier
from tests import support
from tests.support import adm_schedule, settings, tiny_arch

MODEL = {"attention_head_dim": 8, "dropout": 0.0}
CLASSIFIER = {"model": MODEL, "mixed_precision": "no", "eval_buckets": 5, "init_from_unet": False,
              "low_noise_share": 0.0}
JUDGE = {"model": MODEL, "mixed_precision": "no", "seed": 9}


def write_params(tmp_path, classifier=None, judge=None):
    """The tiny params with this module's classifier and judge, and the UNet of their shape (init_from_unet)."""
    support.write_params(tmp_path, classifier={**CLASSIFIER, **(classifier or {})}, judge={**JUDGE, **(judge or {})},
                         unet={"model": MODEL})


def judge_main(argv=()):
    return train_classifier.main(["--section", "judge", *argv])


def test_bucket_ranges_cover_all_timesteps():
    ranges = bucket_ranges(1000, 5)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000 and len(ranges) == 5
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


@pytest.mark.parametrize("share, expected_low", [(0.0, 0.05), (0.5, 0.525), (1.0, 1.0)])
def test_low_noise_share_moves_that_share_of_each_batch_below_max_t(share, expected_low):
    cfg = settings(ClassifierTrainConfig, "classifier", low_noise_share=share, low_noise_max_t=50)
    t = sample_timesteps(cfg, 1000, 20_000, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 1000 and t.dtype == torch.long
    # uniform over [0, 1000) puts 5% below 50; the low-noise share adds the rest of itself
    assert (t < 50).float().mean().item() == pytest.approx(expected_low, abs=0.01)
    if share == 1.0:
        assert t.max() == 49 and torch.bincount(t).min() > 300  # still uniform inside [0, 50)
    clean = sample_timesteps(settings(ClassifierTrainConfig, "judge"), 1000, 8, torch.Generator().manual_seed(0))
    assert clean.tolist() == [0] * 8


@pytest.mark.slow
def test_classifier_stage_reports_per_class_metrics_per_noise_bucket(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_scheduler(adm_schedule(num_train_timesteps=200)).save_pretrained(tmp_path / "models/unet/scheduler")
    write_params(tmp_path)
    assert train_classifier.main([]) == 0
    report = json.loads((tmp_path / "reports/classifier.json").read_text())
    names = ["bottle", "can", "paper"]
    assert report["class_names"] == names and report["steps"] == 4 and report["n_val_images"] == 6
    assert [b["t_range"] for b in report["buckets"]] == [[0, 39], [40, 79], [80, 119], [120, 159], [160, 199]]
    for bucket in report["buckets"]:
        assert set(bucket["ap"]) == set(bucket["accuracy"]) == set(names)
        accuracy = list(bucket["accuracy"].values())
        assert all(abs(v * 6 - round(v * 6)) < 1e-3 for v in accuracy)  # a share of the 6 val images
        assert bucket["mean_accuracy"] == pytest.approx(sum(accuracy) / 3, abs=1e-4)
    model = load_classifier(tmp_path / "models/classifier")
    assert model.config.num_train_timesteps == 200 and model.class_names == names
    assert json.loads((tmp_path / "models/classifier/params.json").read_text())["classifier"]["noised"] is True
    assert "low_noise" not in report

    write_params(tmp_path, classifier={"low_noise_share": 0.5, "low_noise_max_t": 20})
    assert train_classifier.main([]) == 0
    report = json.loads((tmp_path / "reports/classifier.json").read_text())
    assert report["low_noise"]["t_range"] == [0, 19] and len(report["buckets"]) == 5
    assert set(report["low_noise"]["ap"]) == set(names)


@pytest.mark.slow
def test_judge_stage_trains_clean_and_independently(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert judge_main() == 0  # needs no UNet scheduler
    report = json.loads((tmp_path / "reports/judge.json").read_text())
    assert [b["t_range"] for b in report["buckets"]] == [[0, 0]]
    judge = load_classifier(tmp_path / "models/judge")
    assert judge.config.pooling == "adaptive"
    params = json.loads((tmp_path / "models/judge/params.json").read_text())["judge"]
    assert params["noised"] is False and params["seed"] == 9


@pytest.mark.slow
def test_classifier_encoder_can_start_from_the_trained_unet(tiny_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    schedule = adm_schedule(num_train_timesteps=200)
    build_unet(tiny_arch(**MODEL), schedule, 16).save_pretrained(tmp_path / "models/unet")
    build_scheduler(schedule).save_pretrained(tmp_path / "models/unet/scheduler")
    unet_state = UNet2DModel.from_pretrained(tmp_path / "models/unet").state_dict()
    for init in (False, True):
        write_params(tmp_path, classifier={"init_from_unet": init, "max_steps": 1, "lr": 1e-12})  # weights kept
        assert train_classifier.main([]) == 0
        state = load_classifier(tmp_path / "models/classifier").state_dict()
        same = [torch.allclose(state[k], unet_state[k], rtol=0, atol=1e-8) for k in ("conv_in.weight", "mid_block.attentions.0.to_q.weight")]
        assert same == [init, init]
    assert json.loads((tmp_path / "models/classifier/params.json").read_text())["classifier"]["init_from_unet"]


@pytest.mark.parametrize("override, message", [
    ({"init_from_unet": True}, "params.yaml: judge.init_from_unet: needs noised: true"),
    ({"noised": True}, "params.yaml: judge.noised: must be False"),
    ({"low_noise_share": 0.5}, "params.yaml: judge.low_noise_share: needs noised: true"),
])
def test_judge_with_noise_or_unet_weights_is_refused(tiny_prepared, tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, judge=override)
    assert judge_main() == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "models/judge").exists()


def test_classifier_without_unet_schedule_fails_with_one_line(tiny_prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert train_classifier.main([]) == 2
    assert capsys.readouterr().err == "error: models/unet/scheduler: noise schedule not found; run train_unet first\n"


@pytest.mark.parametrize("override, message", [
    ({"low_noise_share": 1.5}, "params.yaml: classifier.low_noise_share: must be in [0, 1], got 1.5"),
    ({"low_noise_share": 0.5, "low_noise_max_t": 0}, "params.yaml: classifier.low_noise_max_t: must be in [1, 200]"),
    ({"low_noise_share": 0.5, "low_noise_max_t": 201}, "params.yaml: classifier.low_noise_max_t: must be in [1, 200]"),
])
def test_bad_low_noise_settings_fail_with_one_line(tiny_prepared, tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    build_scheduler(adm_schedule(num_train_timesteps=200)).save_pretrained(tmp_path / "models/unet/scheduler")
    write_params(tmp_path, classifier=override)
    assert train_classifier.main([]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "models/classifier").exists()
