"""Start a stage under params.yaml `launch.accelerate`: `python -m pipelines.launch pipelines.<stage> [args]`.

dvc.yaml starts the accelerate stages (train_unet, train_classifier, train_judge, train_upsampler,
generate) through this instead of templating `${launch.accelerate}` into their `cmd`: the launcher says where a
stage runs (one process, four GPUs), not what it computes, so changing it must not make DVC
retrain the models. Reads the same `--params` file as the stage, then replaces this process with
`<launch.accelerate> -m pipelines.<stage> [args]` (`python` is this interpreter).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from core.errors import StageError
from core.params import read_params, section
from pipelines.stage import Launch, run_stage


def launch_command(launcher: str, module: str, stage_argv: list[str]) -> list[str]:
    """The command line that runs `module` (a pipelines.* stage) with `stage_argv` under `launcher`."""
    if not module.startswith("pipelines.") or module == "pipelines.launch":
        raise StageError(f"pipelines.launch: {module!r} is not a stage module (pipelines.<stage>)")
    command = shlex.split(launcher)
    if not command:
        raise StageError("params.yaml: launch.accelerate: is empty (use python, or e.g. accelerate launch --multi_gpu)")
    if command[0] == "python":
        command[0] = sys.executable
    return command + ["-m", module, *stage_argv]


def _main(argv: list[str] | None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise StageError("pipelines.launch: name the stage module to start, e.g. pipelines.train_unet")
    module, stage_argv = argv[0], argv[1:]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml")
    params_file = parser.parse_known_args(stage_argv)[0].params
    command = launch_command(section(Launch, "launch", read_params(params_file)).accelerate, module, stage_argv)
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise StageError(f"params.yaml: launch.accelerate: cannot start {command[0]!r}: {err.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
