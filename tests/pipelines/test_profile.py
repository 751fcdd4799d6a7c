"""pipelines.profile: settings profiles applied to params.yaml, its comments and layout kept."""

from __future__ import annotations

import re

import pytest
import yaml

from augment.unet import check_arch
from core.errors import StageError
from core.params import section
from pipelines import profile
from tests.support import REPO, SECTIONS

PARAMS_TEXT = (REPO / "params.yaml").read_text()


def test_no_override_gives_params_yaml_back_byte_for_byte():
    assert profile.profiled_params(PARAMS_TEXT, []) == PARAMS_TEXT


@pytest.mark.parametrize("names", [["one_gpu"], ["one_gpu", "gpu_check"]])
def test_every_shipped_profile_gives_settings_every_stage_accepts(names):
    overrides = [profile.load_profile(profile.profile_path(name)) for name in names]
    params = yaml.safe_load(profile.profiled_params(PARAMS_TEXT, overrides))
    for name, cls in SECTIONS.items():
        assert isinstance(section(cls, name, params), cls)
    unet = section(SECTIONS["unet"], "unet", params)
    check_arch(unet.model, unet.image_size, "unet")


def test_the_one_gpu_profile_follows_the_seed_and_states_shared_values_in_every_section():
    text = profile.profiled_params(PARAMS_TEXT, [profile.load_profile(profile.profile_path("one_gpu"))])
    params = yaml.safe_load(text)
    assert (params["dataset"]["image_size"], params["yolo"]["train"]["imgsz"]) == (256, 256)
    assert (params["upsampler"]["image_size"], params["upsampler"]["low_res"]) == (256, 64)
    for name in ("unet", "classifier", "judge", "patch_unet", "patch_classifier", "patch_judge"):
        assert params[name]["image_size"] == 64, name
    assert params["unet"]["model"]["block_out_channels"] == [128, 256, 256, 512]
    for name in ("classifier", "patch_unet", "patch_classifier"):
        assert params[name]["model"] == params["unet"]["model"], name
    assert params["judge"]["model"] == params["patch_judge"]["model"] == {**params["unet"]["model"], "dropout": 0.1}
    assert params["unet"]["mixed_precision"] == "bf16" and params["yolo"]["train"]["amp"] == "bf16"
    assert params["patch_unet"]["max_steps"] == 300 and params["patch_unet"]["lr"] == params["unet"]["lr"]
    assert params["yolo"]["train"]["extra"] == {"nbs": 64}  # a free-form mapping is replaced whole (mosaic back on)
    assert params["yolo"]["budget"]["max_epochs"] == 300 and params["split"]["test"] == 0.15
    assert re.search(r"^  image_size: 64 +# the generative resolution", text, re.MULTILINE)
    assert "&" not in text.replace("&&", "") and "<<:" not in text and "*" not in text.split("#")[0]
    assert params["launch"] == yaml.safe_load(PARAMS_TEXT)["launch"]  # where it runs is the launcher's business


def test_a_profile_that_leaves_sections_disagreeing_is_one_line_naming_the_key():
    with pytest.raises(StageError, match=r"^params.yaml: classifier.image_size: 32 must equal unet.image_size, 64$"):
        profile.profiled_params(PARAMS_TEXT, [{"unet": {"image_size": 64}}])


def test_set_overrides_come_after_the_profiles_and_parse_as_yaml():
    overrides = [{"unet": {"max_steps": 7}}, profile.parse_set("unet.max_steps=9"), profile.parse_set("yolo.seeds=[4, 5]")]
    params = yaml.safe_load(profile.profiled_params(PARAMS_TEXT, overrides))
    assert params["unet"]["max_steps"] == 9 and params["yolo"]["seeds"] == [4, 5]
    assert re.search(r"^  seeds: +# every variant trains once per seed.*\n  - 4\n  - 5\n", profile.profiled_params(
        PARAMS_TEXT, overrides), re.MULTILINE)


@pytest.mark.parametrize("override, message", [
    ({"unet": {"modle": {"dropout": 0.1}}}, "^profile: unet.modle: params.yaml has no such key$"),
    ({"yolo": {"train": {"epoch": 3}}}, "^profile: yolo.train.epoch: params.yaml has no such key$"),
    ({"upsampling": {"max_steps": 3}}, "^profile: upsampling: params.yaml has no such key$"),
])
def test_a_key_params_yaml_lacks_is_an_error_naming_it(override, message):
    with pytest.raises(StageError, match=message):
        profile.profiled_params(PARAMS_TEXT, [override])


def test_a_malformed_set_is_one_line():
    with pytest.raises(StageError, match="^--set unet.max_steps: expected section.key=value$"):
        profile.parse_set("unet.max_steps")


def test_the_command_writes_the_profiled_file_and_a_missing_profile_is_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT)
    assert profile.main(["gpu_check", "--params", str(params), "--out", str(tmp_path / "check.yaml")]) == 0
    assert params.read_text() == PARAMS_TEXT
    assert yaml.safe_load((tmp_path / "check.yaml").read_text())["yolo"]["seeds"] == [0]
    assert profile.main(["no_such_profile", "--params", str(params)]) == 2
    assert capsys.readouterr().err == "error: no_such_profile: profile not found\n"
    assert params.read_text() == PARAMS_TEXT
