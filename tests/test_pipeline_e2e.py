"""The whole DVC pipeline on tiny params in a temporary copy of the repo, and DVC's cache behaviour."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "augment", "detection", "pipelines")

# Tiny settings: every stage runs for real, on 16-px images, in about a minute on 2 CPU cores.
TINY_NET = {"block_out_channels": [16, 32], "attention_resolutions": [8], "attention_head_dim": 16,
            "norm_num_groups": 8}
TINY = {
    "demo": {"n_images": 48, "image_size": 32},
    "dataset": {"image_size": 16},
    "split": {"train": 0.4, "tagged": 0.2, "val": 0.2, "test": 0.2},
    "unet": {"model": TINY_NET, "batch_size": 8, "max_steps": 4, "warmup_steps": 1, "checkpoint_every": 2,
             "log_every": 1, "n_samples": 4, "sample_steps": 4},
    "classifier": {"model": TINY_NET, "batch_size": 8, "max_steps": 4},
    "judge": {"model": TINY_NET, "batch_size": 8, "max_steps": 4},
    "yolo": {"train": {"epochs": 1, "imgsz": 32, "batch": 8}},
    "generate": {"steps": 4, "balance_factor": 0.0, "min_per_class": 2, "control_per_class": 1, "batch_size": 8},
    "sweep": {"scales": [0, 3], "per_class": 1, "steps": 4},
    "pseudo_label": {"conf": 0.001},
    "evaluate": {"bootstrap": {"n_resamples": 50}, "grid_images": 4},
}


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def dvc(workdir: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "YOLO_OFFLINE": "true", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(workdir)}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def set_param(workdir: Path, stage: str, key: str, value) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params[stage][key] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("repo")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / name)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(workdir, "init", "--no-scm", "-q")
    dvc(workdir, "config", "core.analytics", "false")
    dvc(workdir, "repro")
    return workdir


@pytest.mark.slow
def test_full_repro_writes_every_stage_output(pipeline_copy):
    report = json.loads((pipeline_copy / "reports/import.json").read_text())
    demo_info = json.loads((pipeline_copy / "data/raw/demo/annotations.json").read_text())["info"]
    assert report["images"] == TINY["demo"]["n_images"]
    assert report["boxes_per_class"] == demo_info["object_counts"]


@pytest.mark.slow
def test_second_repro_reruns_nothing(pipeline_copy):
    assert stages_run(dvc(pipeline_copy, "repro")) == set()


def stages_run(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", repro_output))


@pytest.mark.slow
def test_changing_the_guidance_scale_reruns_only_generation_and_what_follows(pipeline_copy):
    params = yaml.safe_load((pipeline_copy / "params.yaml").read_text())
    set_param(pipeline_copy, "generate", "guidance_scale", params["generate"]["guidance_scale"] + 1.5)
    assert stages_run(dvc(pipeline_copy, "repro")) == {
        "generate", "gen_metrics", "pseudo_label", "train_yolo@augmented", "evaluate"}
    assert stages_run(dvc(pipeline_copy, "repro")) == set()
