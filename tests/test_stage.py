"""pipelines.stage: params sections as typed, frozen dataclasses."""

from __future__ import annotations

import pytest
import yaml

from augment.train_unet import UNetTrainConfig
from pipelines.stage import StageError, from_dict


def test_yaml_exponent_strings_become_floats():
    values = yaml.safe_load("lr: 1e-3\nsnr_gamma: 5\nmax_minutes: null\n")
    assert values["lr"] == "1e-3"  # YAML 1.1 reads it as a string
    cfg = from_dict(UNetTrainConfig, values, where="params.yaml: unet")
    assert cfg.lr == 0.001 and isinstance(cfg.snr_gamma, float) and cfg.max_minutes is None


@pytest.mark.parametrize("values, message", [
    ({"lr": "fast"}, "params.yaml: unet.lr: expected a number, got 'fast'"),
    ({"max_steps": 10.5}, "params.yaml: unet.max_steps: expected int, got 10.5"),
    ({"max_steps": True}, "params.yaml: unet.max_steps: expected int, got True"),
    ({"hflip": "yes"}, "params.yaml: unet.hflip: expected bool, got 'yes'"),
    ({"mixed_precision": 16}, "params.yaml: unet.mixed_precision: expected str, got 16"),
    ({"model": {"dropout": "none"}}, "params.yaml: unet.model.dropout: expected a number, got 'none'"),
])
def test_wrongly_typed_values_fail_with_the_key_and_value(values, message):
    with pytest.raises(StageError) as err:
        from_dict(UNetTrainConfig, values, where="params.yaml: unet")
    assert str(err.value) == message
