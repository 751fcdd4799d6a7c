"""What the UNet and classifier training loops share: the optional time budget and the run details kept out of hashed outputs."""

from __future__ import annotations

from accelerate import Accelerator

from core.errors import warn

# Training-summary entries that differ between runs of the same training (a resumed run, a slower
# machine): reported, but kept out of the model folders whose hashes later stages depend on.
RUN_DETAILS = ("train_minutes", "resumed_from")


def without_run_details(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in RUN_DETAILS}


def over_budget(max_minutes: float | None, elapsed_s: float) -> bool:
    return max_minutes is not None and elapsed_s >= max_minutes * 60


def warn_time_stop(stage: str, max_minutes: float, step: int, max_steps: int, accelerator: Accelerator) -> None:
    """A run cut by the clock ends at a step count that depends on the machine and its load."""
    if accelerator.is_main_process:
        warn(stage, f"stopped by max_minutes ({max_minutes}) at step {step} of {max_steps}; the weights depend on "
                    "this machine's speed. For reproducible runs set max_minutes: null and size max_steps.")
