"""params.yaml is the only source of settings: every section loads, and every key in it is required."""

from __future__ import annotations

import copy

import pytest

from core.errors import StageError
from core.params import FREE_FORM_KEYS, section
from tests.support import SECTIONS, repo_params


def key_paths(values: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of a section, nested ones as paths; free-form mappings (class_map, extra, ...) count as one key."""
    out = []
    for key, value in values.items():
        out.append((*prefix, key))
        if isinstance(value, dict) and key not in FREE_FORM_KEYS:
            out += key_paths(value, (*prefix, key))
    return out


def test_every_section_is_read_by_a_stage_and_loads():
    params = repo_params()
    assert set(params) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert isinstance(section(cls, name, params), cls)


@pytest.mark.parametrize("name, key", [(name, key) for name in SECTIONS for key in key_paths(repo_params()[name])],
                         ids=lambda v: ".".join(v) if isinstance(v, tuple) else v)
def test_a_missing_key_is_an_error_naming_it(name, key):
    params = copy.deepcopy(repo_params())
    parent = params[name]
    for part in key[:-1]:
        parent = parent[part]
    del parent[key[-1]]
    where = ".".join((name, *key[:-1]))
    with pytest.raises(StageError) as err:
        section(SECTIONS[name], name, params)
    assert str(err.value) == f"params.yaml: {where}: missing key(s) {key[-1]}"


@pytest.mark.parametrize("name, key, value, message", [
    ("classifier", "mixed_precision", "fp8", "params.yaml: classifier.mixed_precision: 'fp8' is not one of auto, no, bf16, fp16"),
    ("judge", "mixed_precision", "fp8", "params.yaml: judge.mixed_precision: 'fp8' is not one of auto, no, bf16, fp16"),
    ("unet", "mixed_precision", "fp8", "params.yaml: unet.mixed_precision: 'fp8' is not one of auto, no, bf16, fp16"),
    ("sweep", "sampler", "euler", "params.yaml: sweep.sampler: 'euler' is not one of ddpm, ddim, dpmsolver++"),
    ("generate", "sampler", "euler", "params.yaml: generate.sampler: 'euler' is not one of ddpm, ddim, dpmsolver++"),
    ("judge", "init_from_unet", True, "params.yaml: judge.init_from_unet: needs noised: true; a clean classifier "
     "(the judge) sees t = 0 only and must not share the generator's weights"),
])
def test_shared_settings_classes_name_the_section_they_were_read_from(name, key, value, message):
    params = copy.deepcopy(repo_params())
    params[name][key] = value
    with pytest.raises(StageError) as err:
        section(SECTIONS[name], name, params)
    assert str(err.value) == message
