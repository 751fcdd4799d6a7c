"""augment.training: the precision choice and the optional wall-clock budget of the training loops."""

from __future__ import annotations

import pytest
import torch

from augment import training
from augment.training import over_budget, resolve_mixed_precision


@pytest.mark.parametrize("setting", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept(setting):
    assert resolve_mixed_precision(setting, torch.device("cpu")) == setting


@pytest.mark.parametrize("capability, amx, expected", [("AVX2", False, "no"), ("AVX512", False, "no"),
                                                       ("AVX512_BF16", False, "bf16"), ("AVX512", True, "bf16")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_has_bf16_instructions(monkeypatch, capability, amx, expected):
    monkeypatch.setattr(training.torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(training.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_mixed_precision("auto", torch.device("cpu")) == expected


def test_the_budget_is_off_when_null_and_hit_at_its_minute():
    assert not over_budget(None, 1e9)
    assert not over_budget(2.0, 119.9) and over_budget(2.0, 120.0)
