"""core.params: params sections as typed, frozen dataclasses; every key required; errors name the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from core.errors import StageError
from core.params import check_at_least, check_choice, from_dict, read_params, section, to_jsonable
from core.params_trace import TRACE_ENV


@dataclass(frozen=True)
class Inner:
    rate: float
    name: str

    def __post_init__(self) -> None:
        check_choice(self, "name", ("a", "b"))
        if not self.rate > 0:
            raise ValueError(f"rate: must be > 0, got {self.rate}")


@dataclass(frozen=True)
class Outer:
    steps: int
    flag: bool
    guard: float | None
    folder: Path
    sizes: tuple[int, ...]
    inner: Inner
    extra: dict

    def __post_init__(self) -> None:
        check_at_least(self, 1, "steps")


GOOD = {"steps": 3, "flag": True, "guard": None, "folder": "data/x", "sizes": [1, 2],
        "inner": {"rate": "1e-3", "name": "a"}, "extra": {"k": 1}}


def build(**changes):
    values = {**GOOD, **changes}
    return from_dict(Outer, {k: v for k, v in values.items() if v is not ...}, where="params.yaml: outer")


def test_values_become_typed_fields():
    outer = build()
    assert outer.inner.rate == 0.001  # YAML 1.1 reads 1e-3 as a string
    assert outer.folder == Path("data/x") and outer.sizes == (1, 2) and outer.guard is None
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"


@pytest.mark.parametrize("changes, message", [
    ({"steps": 10.5}, "params.yaml: outer.steps: expected int, got 10.5"),
    ({"steps": True}, "params.yaml: outer.steps: expected int, got True"),
    ({"flag": "yes"}, "params.yaml: outer.flag: expected bool, got 'yes'"),
    ({"guard": "soon"}, "params.yaml: outer.guard: expected a number, got 'soon'"),
    ({"folder": 3}, "params.yaml: outer.folder: expected a path, got 3"),
    ({"inner": {"rate": "fast", "name": "a"}}, "params.yaml: outer.inner.rate: expected a number, got 'fast'"),
    ({"inner": {"rate": 1, "name": 2}}, "params.yaml: outer.inner.name: expected str, got 2"),
    ({"inner": {"rate": 1, "name": False}}, "params.yaml: outer.inner.name: expected str, got False (YAML reads "
                                            "unquoted no / yes / off / on as booleans: quote the word)"),
    ({"inner": 5}, "params.yaml: outer.inner: expected a mapping, got int"),
])
def test_wrongly_typed_values_fail_with_the_key_and_value(changes, message):
    with pytest.raises(StageError) as err:
        build(**changes)
    assert str(err.value) == message


def test_missing_and_unknown_keys_fail_with_their_names():
    with pytest.raises(StageError, match=r"^params.yaml: outer: missing key\(s\) flag, extra$"):
        build(flag=..., extra=...)
    with pytest.raises(StageError, match=r"^params.yaml: outer.inner: missing key\(s\) name$"):
        build(inner={"rate": 1.0})
    with pytest.raises(StageError, match=r"^params.yaml: outer: unknown key\(s\) stpes; known: steps, flag"):
        build(stpes=4)


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "params.yaml: outer.steps: must be >= 1, got 0"),
    ({"inner": {"rate": 1.0, "name": "c"}}, "params.yaml: outer.inner.name: 'c' is not one of a, b"),
    ({"inner": {"rate": -1.0, "name": "a"}}, "params.yaml: outer.inner.rate: must be > 0, got -1.0"),
])
def test_validation_errors_name_the_section_they_were_read_from(changes, message):
    with pytest.raises(StageError) as err:
        build(**changes)
    assert str(err.value) == message


def test_section_reads_the_named_section_and_fails_when_it_is_absent(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"inner": {"rate": 2.0, "name": "b"}}))
    assert section(Inner, "inner", read_params(path)) == Inner(2.0, "b")
    with pytest.raises(StageError, match="^params.yaml: section 'other' is missing$"):
        section(Inner, "other", read_params(path))


@pytest.mark.parametrize("text, message", [
    (None, "params file not found"),
    ("a: [1, 2\n", "malformed YAML"),
    ("- 1\n- 2\n", "expected a mapping of sections"),
])
def test_read_params_refuses_a_missing_malformed_or_flat_file(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(StageError, match=message) as err:
        read_params(path)
    assert "\n" not in str(err.value)


def test_to_jsonable_turns_dataclasses_paths_and_tuples_into_json_types():
    assert to_jsonable(build()) == {**GOOD, "inner": {"rate": 0.001, "name": "a"}}


def test_params_files_are_read_as_dvc_writes_them_yaml_1_2(tmp_path):
    """`dvc exp run -S` writes the string "no" unquoted: it must stay a word, not become false."""
    (tmp_path / "params.yaml").write_text("unet:\n  mixed_precision: no\n  lr: 1e-3\n  hflip: true\n  max_minutes:\n")
    assert read_params(tmp_path / "params.yaml") == {"unet": {"mixed_precision": "no", "lr": 0.001, "hflip": True,
                                                              "max_minutes": None}}


def test_a_key_written_twice_is_malformed_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("unet:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(StageError, match=r"^.*params.yaml: malformed YAML: .*duplicate key"):
        read_params(tmp_path / "params.yaml")


TRACED = textwrap.dedent("""
    import dataclasses
    from core.params import section

    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int
        b: int

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner
        c: int
        d: int

    params = {"outer": {"inner": {"a": 1, "b": 2}, "c": 3, "d": 4}, "other": {"a": 5, "b": 6}}
    settings = section(Outer, "outer", params)
    settings.c
    copied = dataclasses.replace(settings.inner, b=7)  # copying is not reading ...
    copied.a, copied.b                                 # ... reading the copy is, but b is the code's
    dataclasses.asdict(section(Inner, "other", params))
    section(Outer, "outer", params)                    # built, never read
""")


def test_the_trace_records_the_keys_whose_fields_were_read_per_process(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), TRACE_ENV: str(tmp_path), "DVC_STAGE": "train_yolo@baseline"}
    subprocess.run([sys.executable, "-c", TRACED], env=env, check=True, cwd=tmp_path)
    (record,) = tmp_path.glob("train_yolo@baseline.*.json")
    assert json.loads(record.read_text())["keys"] == ["other.a", "other.b", "outer.c", "outer.inner.a"]

    quiet = {k: v for k, v in env.items() if k != TRACE_ENV}
    subprocess.run([sys.executable, "-c", TRACED], env=quiet, check=True, cwd=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # no trace unless asked for


def test_a_dotted_section_name_reads_a_mapping_inside_a_section():
    @dataclass(frozen=True)
    class Crops:
        px: int

    assert section(Crops, "patch.crops", {"patch": {"crops": {"px": 64}}}).px == 64
    with pytest.raises(StageError, match=r"^params.yaml: section 'patch.crops' is missing$"):
        section(Crops, "patch.crops", {"patch": {}})
