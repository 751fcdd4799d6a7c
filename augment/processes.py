"""The processes an accelerate stage runs as: one, or several that split its work between them.

`launch.accelerate` starts the stage (pipelines.launch). Several processes cooperate through
torch.distributed: NCCL on GPUs, gloo on a CPU. accelerate picks gloo only when asked for the CPU,
so a machine without CUDA asks for it: `torchrun --nproc_per_node 2` (or `accelerate launch
--multi_gpu --num_processes 2`, which starts torchrun's processes) then gives two cooperating CPU
processes. A launcher whose processes end up not knowing of each other (accelerate reads one
process while the launcher set WORLD_SIZE above 1) would have each train or render everything and
write the same outputs, or fail in torch.distributed with a traceback; the stage refuses both with
one line instead.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from accelerate import Accelerator, PartialState

from augment.precision import Precision, resolve_mixed_precision
from core.errors import StageError

ADVICE = "on a CPU use `torchrun --nproc_per_node {n}`, on GPUs `accelerate launch --multi_gpu --num_processes {n}`"


def check_rendezvous(environ: Mapping[str, str]) -> None:
    """One line when WORLD_SIZE > 1 but nothing tells the processes how to find each other."""
    launched = int(environ.get("WORLD_SIZE", "1"))
    missing = [key for key in ("RANK", "MASTER_ADDR", "MASTER_PORT") if key not in environ]
    if launched > 1 and missing:
        raise StageError(f"launch.accelerate: WORLD_SIZE is {launched} but {', '.join(missing)} unset: the processes "
                         f"do not know of each other; {ADVICE.format(n=launched)}")


def check_cooperating(num_processes: int, distributed_type: object, environ: Mapping[str, str]) -> None:
    """One line when the launcher started WORLD_SIZE > 1 processes but accelerate sees fewer."""
    launched = int(environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise StageError(f"launch.accelerate: started {launched} processes (WORLD_SIZE) that do not cooperate: accelerate "
                         f"sees {num_processes} ({distributed_type}), so each would do all the work; "
                         f"{ADVICE.format(n=launched)}")


def process_accelerator(mixed_precision: str, **kwargs: Any) -> tuple[Accelerator, Precision]:
    """An Accelerator for this process (`process_state`) at the precision `mixed_precision` resolves to."""
    state = process_state()
    precision = resolve_mixed_precision(mixed_precision, state.device)
    accelerator = Accelerator(mixed_precision=precision.name, cpu=state.device.type == "cpu", **kwargs)
    return accelerator, precision


def process_state() -> PartialState:
    """accelerate's state of this process (gloo between CPU processes), checked by both checks."""
    check_rendezvous(os.environ)
    state = PartialState(cpu=not torch.cuda.is_available())
    check_cooperating(state.num_processes, state.distributed_type, os.environ)
    return state
