"""params.yaml is the only source of settings: every section loads, and every key in it is required."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from core.errors import StageError
from core.params import FREE_FORM_KEYS, check_agreement, section, to_jsonable
from core.profiles import load_profile, profiled_params
from tests.support import REPO, SECTIONS, repo_params

PARAMS_TEXT = (REPO / "params.yaml").read_text()


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


# ---- one key, one line: params.yaml as `dvc exp run -S` writes it, shared values that agree

def test_params_yaml_has_no_yaml_anchors_aliases_or_merges():
    settings = [line.split("#")[0] for line in (REPO / "params.yaml").read_text().splitlines()]
    assert not [line for line in settings if re.search(r"[&*][\w-]+|<<:", line)]


def test_the_values_several_sections_state_agree_in_params_yaml_and_in_every_shipped_profile():
    check_agreement(repo_params())
    for path in sorted((REPO / "pipelines" / "profiles").glob("*.yaml")):
        check_agreement(yaml.safe_load(profiled_params(PARAMS_TEXT, [load_profile(path)])))


@pytest.mark.parametrize("key, value, message", [
    ("classifier.image_size", 16, "classifier.image_size: 16 must equal unet.image_size, 32"),
    ("upsampler.low_res", 64, "upsampler.low_res: 64 must equal unet.image_size, 32"),
    ("upsampler.image_size", 256, "upsampler.image_size: 256 must equal dataset.image_size, 128"),
    ("patch_judge.crops.px", 48, "patch_judge.crops.px: 48 must equal patch_unet.crops.px, 64"),
    ("classifier.model.layers_per_block", 2,
     "classifier.model.layers_per_block: 2 must equal unet.model.layers_per_block, 1 (classifier.init_from_unet is true)"),
    ("patch_unet.image_size", 64, "patch_classifier.image_size: 32 must equal patch_unet.image_size, 64"),
])
def test_a_shared_value_set_in_one_section_only_stops_every_stage_reading_either_with_one_line(key, value, message):
    params = copy.deepcopy(repo_params())
    *parents, last = key.split(".")
    target = params
    for part in parents:
        target = target[part]
    target[last] = value
    other = message.split(" must equal ")[1].split(".")[0]
    for name in (parents[0], other):
        with pytest.raises(StageError, match=f"^params.yaml: {re.escape(message)}$"):
            section(SECTIONS[name], name, params)


def test_a_wrongly_typed_shared_value_is_named_by_its_own_section_first():
    params = copy.deepcopy(repo_params())
    params["unet"]["image_size"] = 0
    with pytest.raises(StageError, match="^params.yaml: unet.image_size: must be >= 1, got 0$"):
        section(SECTIONS["unet"], "unet", params)


def test_a_model_setting_differs_freely_where_its_section_does_not_start_from_the_unet():
    params = copy.deepcopy(repo_params())
    params["judge"]["model"]["layers_per_block"] = 3  # the judge never starts from the UNet
    params["classifier"]["init_from_unet"] = False
    params["classifier"]["model"]["dropout"] = 0.3
    check_agreement(params)


def resolved_settings(params: dict) -> dict[str, object]:
    """Every stage's settings as read by its dataclass, flattened to dotted keys."""
    flat: dict[str, object] = {}

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, f"{prefix}.{key}")
        else:
            flat[prefix] = value
    for name, cls in SECTIONS.items():
        walk(to_jsonable(section(cls, name, params)), name)
    return flat


@pytest.mark.parametrize("override, key, value", [
    ("generate.guidance_scale=8", "generate.guidance_scale", 8),
    ("yolo.budget.epochs=150", "yolo.budget.epochs", 150),
    ("unet.max_steps=1200", "unet.max_steps", 1200),
    ("patch_unet.crops.count=8192", "patch_unet.crops.count", 8192),
    ("inpaint.change_threshold=20.5", "inpaint.change_threshold", 20.5),
])
def test_dvcs_override_writer_changes_one_line_and_only_the_overridden_setting(override, key, value, tmp_path):
    """`dvc exp run -S` writes params.yaml with dvc.utils.hydra.apply_overrides: one key, one line, one setting."""
    copy_ = tmp_path / "params.yaml"
    copy_.write_text(PARAMS_TEXT)
    apply_overrides(copy_, [override])
    before, after = PARAMS_TEXT.splitlines(), copy_.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(changed) == 1 and changed[0][1].lstrip().startswith(f"{key.split('.')[-1]}: ")
    old_settings, new_settings = resolved_settings(repo_params()), resolved_settings(yaml.safe_load(copy_.read_text()))
    assert {name for name in old_settings if old_settings[name] != new_settings[name]} == {key}
    assert new_settings[key] == value
    check_agreement(yaml.safe_load(copy_.read_text()))


def test_dvcs_override_writer_on_a_list_setting_changes_that_setting_only(tmp_path):
    copy_ = tmp_path / "params.yaml"
    copy_.write_text(PARAMS_TEXT)
    apply_overrides(copy_, ["yolo.seeds=[0,1,2,3]"])
    old_settings, new_settings = resolved_settings(repo_params()), resolved_settings(yaml.safe_load(copy_.read_text()))
    assert {name for name in old_settings if old_settings[name] != new_settings[name]} == {"yolo.seeds"}
    assert copy_.read_text().replace("  - 3\n", "", 1) == PARAMS_TEXT
