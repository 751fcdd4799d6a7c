"""Every bad setting and broken artifact stops its stage with one line naming the key or file, exit
code 2, and nothing written."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.support import TINY_DETECTION, make_synthetic, write_params, write_tiny_models, write_tiny_prepared

# (stage module, its arguments, params overrides, the one line it prints)
BAD_SETTINGS = [
    ("train_unet", [], {"unet": {"max_steps": 0}}, "params.yaml: unet.max_steps: must be >= 1, got 0"),
    ("train_unet", [], {"unet": {"batch_size": 0}}, "params.yaml: unet.batch_size: must be >= 1, got 0"),
    ("train_unet", [], {"unet": {"checkpoint_every": 0}}, "params.yaml: unet.checkpoint_every: must be >= 1, got 0"),
    ("train_unet", [], {"unet": {"keep_checkpoints": 0}}, "params.yaml: unet.keep_checkpoints: must be >= 1, got 0"),
    ("train_unet", [], {"unet": {"lr": -1}}, "params.yaml: unet.lr: must be > 0, got -1.0"),
    ("train_unet", [], {"unet": {"ema": 5}}, "params.yaml: unet.ema: expected a mapping, got int"),
    ("train_unet", [], {"unet": {"model": {"block_out_channels": "abc"}}},
     "params.yaml: unet.model.block_out_channels: expected a list, got 'abc'"),
    ("train_classifier", ["--section", "judge"], {"judge": {"max_steps": -1}},
     "params.yaml: judge.max_steps: must be >= 1, got -1"),
    ("import_dataset", [], {"dataset": {"classes": "can"}}, "params.yaml: dataset.classes: expected a list, got 'can'"),
    ("import_dataset", [], {"dataset": {"class_map": ["a", "b"]}},
     "params.yaml: dataset.class_map: expected a mapping, got ['a', 'b']"),
    ("import_dataset", [], {"dataset": {"on_missing_split": "ignore"}},
     "params.yaml: dataset.on_missing_split: 'ignore' is not one of skip, fail"),
    ("train_yolo", ["--variant", "baseline"], {"yolo": {"budget": {"max_epochs": 0}}},
     "params.yaml: yolo.budget.max_epochs: must be >= 1, got 0"),
    ("train_yolo", ["--variant", "baseline"], {"yolo": {"train": {"batch": 0}}},
     "params.yaml: yolo.train.batch: must be >= 1, got 0"),
    ("train_yolo", ["--variant", "baseline"], {"yolo": {"seeds": [0, 0]}},
     "params.yaml: yolo.seeds: expected a non-empty list of distinct seeds, got [0, 0]"),
    ("train_unet", [], {"launch": {"torch_threads": 0}}, "params.yaml: launch.torch_threads: must be >= 1, got 0"),
    ("train_unet", [], {"unet": {"image_size": 0}}, "params.yaml: unet.image_size: must be >= 1, got 0"),
    ("evaluate", [], {"evaluate": {"bootstrap": {"ci": 1.5}}},
     "params.yaml: evaluate.bootstrap.ci: must be in (0, 1), got 1.5"),
    ("evaluate", [], {"evaluate": {"bootstrap": {"n_resamples": 0}}},
     "params.yaml: evaluate.bootstrap.n_resamples: must be >= 1, got 0"),
    ("evaluate", [], {"evaluate": {"predict": {"batch": 0}}}, "params.yaml: evaluate.predict.batch: must be >= 1, got 0"),
    ("pseudo_label", [], {"pseudo_label": {"predict": {"batch": 0}}},
     "params.yaml: pseudo_label.predict.batch: must be >= 1, got 0"),
]


def run(stage: str, argv: list[str], capsys) -> str:
    assert importlib.import_module(f"pipelines.{stage}").main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.removeprefix("error: ").strip()


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("stage, argv, overrides, message", BAD_SETTINGS,
                         ids=[f"{s[0]}-{next(iter(s[2]))}" for s in BAD_SETTINGS])
def test_bad_settings_stop_before_any_work(tmp_path, monkeypatch, capsys, stage, argv, overrides, message):
    write_params(tmp_path, **overrides)
    monkeypatch.chdir(tmp_path)
    assert run(stage, argv, capsys) == message
    assert files(tmp_path) == {"params.yaml"}


@pytest.fixture
def generate_dir(tmp_path, monkeypatch) -> Path:
    write_tiny_prepared(tmp_path)
    write_tiny_models(tmp_path)
    write_params(tmp_path, generate={"steps": 2, "min_per_class": 1, "control_per_class": 0})
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "models/classifier/config.json").write_text("{not json"),
     "models/classifier: unreadable classifier (OSError: It looks like the config file at "),
    (lambda root: truncate(root / "models/classifier/diffusion_pytorch_model.safetensors"),
     "models/classifier: unreadable classifier ("),
    (lambda root: truncate(root / "models/unet/diffusion_pytorch_model.safetensors"), "models/unet: unreadable UNet ("),
    (lambda root: (root / "models/unet/scheduler/scheduler_config.json").write_text("[1, 2"),
     "models/unet: unreadable UNet ("),
])
def test_broken_models_stop_generate_with_one_line(generate_dir, capsys, damage, message):
    damage(generate_dir)
    before = files(generate_dir)
    assert run("generate", [], capsys).startswith(message)
    assert files(generate_dir) == before


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:64])


@pytest.mark.parametrize("damage, message", [
    (lambda prepared: (prepared / "images/train/train_003.png").unlink(),
     "data/prepared/manifest.csv: image train_003: images/train/train_003.png not found; rerun the import stage"),
    (lambda prepared: (prepared / "manifest.csv").write_text(
        (prepared / "manifest.csv").read_text()[:-30]), "data/prepared/manifest.csv: line 29: "),
])
def test_a_broken_prepared_manifest_stops_train_yolo_with_one_line(tmp_path, monkeypatch, capsys, damage, message):
    damage(write_tiny_prepared(tmp_path))
    write_params(tmp_path, **TINY_DETECTION)
    monkeypatch.chdir(tmp_path)
    assert run("train_yolo", ["--variant", "baseline"], capsys).startswith(message)
    assert not (tmp_path / "models").exists()


def test_damaged_detector_weights_stop_pseudo_label_with_one_line(tmp_path, monkeypatch, capsys):
    write_tiny_prepared(tmp_path)
    make_synthetic(tmp_path)
    (tmp_path / "models/yolo/baseline/seed_0").mkdir(parents=True)
    (tmp_path / "models/yolo/baseline/seed_0/best.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    write_params(tmp_path, **TINY_DETECTION, paths={"upsampled": "data/synthetic"})  # generate's images, as upsample's
    monkeypatch.chdir(tmp_path)
    assert run("pseudo_label", [], capsys).startswith("models/yolo/baseline/seed_0/best.pt: unreadable YOLO weights (")
    assert not list((tmp_path / "data").glob("pseudo/**/*"))
