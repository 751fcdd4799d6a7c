"""The numeric precision of the torch stages: what `mixed_precision: auto` resolves to, and why.

`auto` on a GPU: bf16 where the GPU computes it, else fp16. On a CPU: bf16 autocast only where
the CPU has bf16 instructions (AVX512-BF16 or AMX), since elsewhere bf16 is emulated and slower
than fp32. torch's own capability report misses some of those CPUs: on a 2-core AMD EPYC whose
/proc/cpuinfo lists `avx512_bf16`, `torch.backends.cpu.get_cpu_capability()` says `AVX512`, and
a UNet training step there runs faster under bf16 autocast (bench/RESULTS.md). So the flags
the kernel reports count as well.

Training precision is accelerate's `mixed_precision`. Sampling (`sampling_precision`) runs a
model's forward under the same autocast and hands its outputs back in fp32 (accelerate's
`convert_outputs_to_fp32`, as `Accelerator.prepare_model` does), so the schedulers' arithmetic
stays fp32. The sampling stages use it for the UNets only: the guidance classifier's gradient ran
hardly faster in bf16 there (bench/RESULTS.md), not worth its rounding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import torch
from accelerate.utils import convert_outputs_to_fp32
from torch import nn

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")          # /proc/cpuinfo names of native bf16 arithmetic
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPUINFO = Path("/proc/cpuinfo")
Settings = TypeVar("Settings")


class Precision(NamedTuple):
    name: str      # no | bf16 | fp16, accelerate's `mixed_precision`
    reason: str    # what decided it, for the stage's log and its outputs

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The instruction flags the kernel lists for the first CPU (x86 Linux); empty where there is no such file."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_bf16_evidence(cpuinfo: Path = CPUINFO) -> str | None:
    """What shows that this CPU computes bf16 natively, or None."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX512_BF16", "AMX"):
        return f"torch CPU capability {capability}"
    if torch.cpu._is_amx_tile_supported():
        return "AMX tiles"
    flags = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags(cpuinfo)]
    return f"CPU flag {flags[0]}" if flags else None


def resolve_mixed_precision(setting: str, device: torch.device, cpuinfo: Path = CPUINFO) -> Precision:
    """`setting` (augment.settings.MIXED_PRECISION) on `device`: `auto` decided as the module docstring says."""
    if setting != "auto":
        return Precision(setting, "set in params.yaml")
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Precision("bf16" if bf16 else "fp16", f"auto: {'bf16' if bf16 else 'no bf16'} on this GPU")
    if device.type != "cpu":
        return Precision("no", f"auto: fp32 on {device.type}")
    evidence = cpu_bf16_evidence(cpuinfo)
    if evidence is None:
        return Precision("no", "auto: no bf16 instructions on this CPU")
    return Precision("bf16", f"auto: {evidence}")


def sampling_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` itself with its forward run under autocast at `precision` and fp32 outputs (no: unchanged).

    Autocast is entered inside the forward, so it holds even where the caller turned it off; a
    gradient w.r.t. an fp32 input still comes back in fp32.
    """
    if precision == "no":
        return model
    device_type = next(model.parameters()).device.type
    autocast = torch.autocast(device_type, dtype=AUTOCAST_DTYPES[precision])
    model.forward = convert_outputs_to_fp32(autocast(model.forward))
    return model


def resolved_settings(settings: Settings, device: torch.device | str, stage: str,
                      log: Callable[[str], None] = print) -> Settings:
    """A sampling stage's settings with `mixed_precision` resolved for `device` (what its outputs
    record as the settings that made them); logs the choice and its reason."""
    precision = resolve_mixed_precision(settings.mixed_precision, torch.device(device))
    log(f"{stage}: mixed precision {precision}")
    return dataclasses.replace(settings, mixed_precision=precision.name)
