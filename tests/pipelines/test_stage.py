"""pipelines.stage: the command line every stage shares, its paths, and the exit on a bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import StageError
from pipelines.stage import Paths, run_stage, stage_args
from tests.support import REPO, write_params


def test_stage_args_read_the_params_file_and_its_paths(tmp_path):
    write_params(tmp_path, paths={"prepared": "elsewhere/prepared"})
    args, params, paths = stage_args("Stage x: does y.\n\nmore", ["--params", str(tmp_path / "params.yaml"), "--k", "3"],
                                     lambda parser: parser.add_argument("--k", type=int))
    assert args.k == 3 and set(params) >= {"paths", "unet"}
    assert isinstance(paths, Paths) and paths.prepared == Path("elsewhere/prepared") and paths.unet == Path("models/unet")


def test_a_params_file_without_paths_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("launch: {accelerate: python, torch_threads: 1}\nunet: {}\n")
    with pytest.raises(StageError, match="^params.yaml: section 'paths' is missing$"):
        stage_args("x", ["--params", str(tmp_path / "params.yaml")])


def test_stage_args_fix_the_torch_thread_count(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        write_params(tmp_path, launch={"torch_threads": 1})
        stage_args("x", ["--params", str(tmp_path / "params.yaml")])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_run_stage_turns_a_stage_error_into_one_line_and_exit_2(capsys):
    def body(argv):
        raise StageError("data/x.csv: row 3: bad")

    assert run_stage(body, []) == 2
    assert capsys.readouterr().err == "error: data/x.csv: row 3: bad\n"
    assert run_stage(lambda argv: None, []) == 0


def omp_spin_count(env_overrides: dict[str, str], imports: str) -> str:
    """libgomp's spin count in a fresh process that runs `import <imports>`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(env_overrides, OMP_DISPLAY_ENV="VERBOSE")
    done = subprocess.run([sys.executable, "-c", f"import {imports}"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    return re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr).group(1)


@pytest.mark.parametrize("env, imports, spin_count", [
    ({}, "torch", "300000"),                                        # libgomp's default: idle threads spin
    ({}, "pipelines.train_unet", "0"),                              # a stage imports torch with them asleep
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "pipelines, torch", "30000000000"),  # the user's own policy is kept
    ({"GOMP_SPINCOUNT": "300000"}, "pipelines, torch", "300000"),   # as is a spin count (the default back)
])
def test_stages_let_idle_openmp_threads_sleep_unless_the_environment_says_otherwise(env, imports, spin_count):
    assert omp_spin_count(env, imports) == spin_count


@pytest.mark.parametrize("threads", [1, 2])
def test_a_stage_that_loads_torch_through_ultralytics_keeps_its_thread_count(tmp_path, threads):
    """ultralytics sets CPU torch to cores - 1 threads whenever it selects a device; a stage's count wins."""
    write_params(tmp_path, launch={"torch_threads": threads})
    script = (f"import pipelines.train_yolo, sys; from pipelines.stage import stage_args\n"
              f"stage_args('x', ['--params', {str(tmp_path / 'params.yaml')!r}])\n"
              f"assert 'torch' not in sys.modules\n"
              f"from detection.yolo import ultralytics_offline\n"
              f"ultralytics_offline()\n"
              f"from ultralytics.utils.torch_utils import select_device\n"
              f"import torch; select_device('cpu', verbose=False); print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**env, "YOLO_OFFLINE": "true"},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == str(threads)
