"""Several processes of one accelerate stage, really started: two CPU processes under torchrun render
the same images as one and train a model that loads; processes that do not cooperate are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import UNet2DModel

from augment.processes import check_cooperating, check_rendezvous
from core.errors import StageError
from tests.support import (
    REPO,
    TINY_GENERATE,
    write_params,
    write_tiny_models,
    write_tiny_patch_models,
    write_tiny_prepared,
)

ONE = "python"
TWO = "torchrun --standalone --nproc_per_node 2"  # README "Several processes": gloo between CPU processes
CROPS = {"crops": {"px": 8}}  # 8-px windows in the 16-px tiny images, models at 4 px
PARAMS = {"generate": {**TINY_GENERATE, "batch_size": 1},
          "patch_unet": CROPS, "patch_classifier": CROPS, "patch_judge": CROPS,
          "inpaint": {"steps": 2, "jump_length": 1, "context_px": 1, "hole_margin_px": 1, "change_threshold": 0.0,
                      "quota": {"bottle": 2, "can": 1, "paper": 1}, "control_per_class": 1, "batch_size": 1}}


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def launch(root: Path, module: str, launcher: str) -> str:
    """`python -m pipelines.launch <module>` in `root` under `launcher`, as dvc.yaml starts it."""
    write_params(root, launch={"accelerate": launcher, "torch_threads": 1}, **PARAMS)
    done = subprocess.run([sys.executable, "-m", "pipelines.launch", module], cwd=root, env=stage_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{module} under {launcher}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def files(path: Path) -> dict[str, bytes]:
    found = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {p.relative_to(path.parent).as_posix(): p.read_bytes() for p in found if p.is_file()}


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("processes")
    write_tiny_prepared(root)
    write_tiny_models(root)
    write_tiny_patch_models(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("module, outputs", [
    ("pipelines.generate", ("data/synthetic", "reports/generation.json")),
    ("pipelines.inpaint", ("data/pseudo/inpaint", "reports/inpaint.json")),  # the report: every window rendered
])
def test_two_cpu_processes_give_the_images_of_one(stage_root, module, outputs):
    launch(stage_root, module, ONE)
    single = {out: files(stage_root / out) for out in outputs}
    assert sum(name.endswith(".png") for name in single[outputs[0]]) >= 1
    for out in outputs:
        shutil.rmtree(stage_root / out) if (stage_root / out).is_dir() else (stage_root / out).unlink()
    launch(stage_root, module, TWO)
    for out in outputs:
        assert files(stage_root / out) == single[out], f"{out}: two processes wrote other bytes than one"


@pytest.mark.slow
def test_two_cpu_processes_train_one_unet_that_loads(stage_root):
    printed = launch(stage_root, "pipelines.train_unet", TWO)
    assert printed.count("steps (max_steps) -> models/unet") == 1  # the main process writes, once
    training = json.loads((stage_root / "reports/unet/training.json").read_text())
    assert training["num_processes"] == 2 and training["steps"] == 4
    assert UNet2DModel.from_pretrained(stage_root / "models/unet").config.sample_size == 16
    assert json.loads((stage_root / "models/unet/params.json").read_text())["training"]["num_processes"] == 2


def test_processes_that_do_not_cooperate_are_refused_with_one_line():
    rendezvous = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    check_rendezvous({}), check_rendezvous(rendezvous)
    check_cooperating(1, "NO", {}), check_cooperating(2, "MULTI_CPU", rendezvous)
    with pytest.raises(StageError, match=r"^launch.accelerate: started 2 processes \(WORLD_SIZE\) that do not "
                                         r"cooperate: accelerate sees 1 \(NO\), so each would do all the work; on a "
                                         r"CPU use `torchrun --nproc_per_node 2`"):
        check_cooperating(1, "NO", rendezvous)
    with pytest.raises(StageError, match=r"^launch.accelerate: WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT "
                                         r"unset: the processes do not know of each other; on a CPU use"):
        check_rendezvous({"WORLD_SIZE": "2"})


@pytest.mark.slow
def test_a_launcher_whose_processes_cannot_meet_stops_the_stage_with_one_line(stage_root):
    write_params(stage_root, launch={"accelerate": "env WORLD_SIZE=2 python", "torch_threads": 1}, **PARAMS)
    done = subprocess.run([sys.executable, "-m", "pipelines.launch", "pipelines.generate"], cwd=stage_root,
                          env=stage_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: launch.accelerate: WORLD_SIZE is 2 but RANK")
    assert done.stderr.count("\n") == 1
