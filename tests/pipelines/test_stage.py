"""pipelines.stage: the command line every stage shares, its paths, and the exit on a bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import StageError
from pipelines.stage import Paths, run_stage, stage_args
from tests.support import write_params


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
