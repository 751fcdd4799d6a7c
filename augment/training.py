"""What the UNet and classifier training loops share: the precision choice and the optional time budget."""

from __future__ import annotations

import torch
from accelerate import Accelerator

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# Training-summary entries that differ between runs of the same training (a resumed run, a slower
# machine): reported, but kept out of the model folders whose hashes later stages depend on.
RUN_DETAILS = ("train_minutes", "resumed_from")


def without_run_details(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in RUN_DETAILS}


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 (or fp16) autocast on a GPU; bf16 on a CPU only where it has bf16 instructions."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    has_bf16 = torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or torch.cpu._is_amx_tile_supported()
    return "bf16" if has_bf16 else "no"


def over_budget(max_minutes: float | None, elapsed_s: float) -> bool:
    return max_minutes is not None and elapsed_s >= max_minutes * 60


def warn_time_stop(stage: str, max_minutes: float, step: int, max_steps: int, accelerator: Accelerator) -> None:
    """A run cut by the clock ends at a step count that depends on the machine and its load."""
    accelerator.print(
        f"{stage}: WARNING: stopped by max_minutes ({max_minutes}) at step {step} of {max_steps}; the "
        f"weights depend on this machine's speed. For reproducible runs set max_minutes: null and size max_steps."
    )
