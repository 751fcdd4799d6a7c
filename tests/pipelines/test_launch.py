"""pipelines.launch: the accelerate stages start under params.yaml `launch.accelerate`, read at run time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.errors import StageError
from pipelines import launch
from tests.support import REPO, write_params


def test_python_is_this_interpreter_and_the_stage_arguments_follow_the_module():
    assert launch.launch_command("python", "pipelines.train_classifier", ["--section", "judge"]) == [
        sys.executable, "-m", "pipelines.train_classifier", "--section", "judge"]


def test_an_accelerate_launcher_is_split_like_a_shell_command():
    assert launch.launch_command("accelerate launch --multi_gpu --num_processes 4 --mixed_precision 'bf16'",
                                 "pipelines.generate", []) == [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "4", "--mixed_precision", "bf16",
        "-m", "pipelines.generate"]


@pytest.mark.parametrize("launcher, module, message", [
    ("python", "augment.generate", "^pipelines.launch: 'augment.generate' is not a stage module"),
    ("python", "pipelines.launch", "^pipelines.launch: 'pipelines.launch' is not a stage module"),
    ("  ", "pipelines.generate", "^params.yaml: launch.accelerate: is empty"),
])
def test_what_cannot_be_launched_is_one_line(launcher, module, message):
    with pytest.raises(StageError, match=message):
        launch.launch_command(launcher, module, [])


def test_the_launcher_comes_from_the_stages_own_params_file(tmp_path, monkeypatch):
    write_params(tmp_path, launch={"accelerate": "accelerate launch --num_processes 2"})
    started = []
    monkeypatch.setattr(launch.os, "execvp", lambda file, args: started.append((file, args)))
    assert launch.main(["pipelines.train_unet", "--params", str(tmp_path / "params.yaml")]) == 0
    assert started == [("accelerate", ["accelerate", "launch", "--num_processes", "2", "-m", "pipelines.train_unet",
                                       "--params", str(tmp_path / "params.yaml")])]


def test_a_launcher_that_is_not_installed_is_one_line(tmp_path, capsys):
    write_params(tmp_path, launch={"accelerate": "no-such-launcher-xyz --flag"})
    assert launch.main(["pipelines.generate", "--params", str(tmp_path / "params.yaml")]) == 2
    assert capsys.readouterr().err == (
        "error: params.yaml: launch.accelerate: cannot start 'no-such-launcher-xyz': No such file or directory\n")


def test_the_launched_stage_really_runs_with_its_arguments(tmp_path):
    params = write_params(tmp_path, dataset={"path": str(tmp_path / "nowhere")})
    done = subprocess.run([sys.executable, "-m", "pipelines.launch", "pipelines.import_dataset",
                           "--params", str(tmp_path / "params.yaml")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and params["launch"]["accelerate"] == "python"
    assert done.stderr.startswith("error: ") and "nowhere" in done.stderr  # the import stage's own error
