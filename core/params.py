"""params.yaml, the only source of settings: sections -> typed, frozen dataclasses.

A params dataclass has no defaults: every field must be in its params.yaml section, and a key
that is missing, unknown or of the wrong type is one `StageError` line naming
`params.yaml: <section>.<key>`. A dataclass validates its own values in `__post_init__` by
raising ValueError("<key>: <reason>"); `from_dict` adds the section the values were read from,
so shared code never guesses which section it serves.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from core.errors import StageError
from core.params_trace import TRACE_ENV, trace_reads

PARAMS_FILE = Path("params.yaml")
# Mappings whose keys are the user's (classes, ultralytics arguments), not settings: an override
# (a profile, a test's tiny params) replaces them whole instead of key by key.
FREE_FORM_KEYS = ("quota", "class_map", "class_frequency", "extra")
T = TypeVar("T")

# Values params.yaml states in several sections: it has no YAML anchors, so that `dvc exp run -S` can set
# any key alone. (condition, keys): where the condition key is true (None: always), the keys hold one value.
MUST_AGREE: tuple[tuple[str | None, tuple[str, ...]], ...] = (
    (None, ("unet.image_size", "classifier.image_size", "judge.image_size", "upsampler.low_res")),
    (None, ("dataset.image_size", "upsampler.image_size")),
    (None, ("patch_unet.image_size", "patch_classifier.image_size", "patch_judge.image_size")),
    (None, ("patch_unet.crops.px", "patch_classifier.crops.px", "patch_judge.crops.px")),
    (None, ("patch_unet.crops.small_px", "patch_classifier.crops.small_px", "patch_judge.crops.small_px")),
    ("classifier.init_from_unet", ("unet.model", "classifier.model")),
    ("patch_unet.init_from_unet", ("unet.model", "patch_unet.model")),
    ("patch_unet.init_from_unet", ("unet.image_size", "patch_unet.image_size")),
    ("patch_classifier.init_from_unet", ("patch_unet.model", "patch_classifier.model")),
)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in key by key (free-form mappings replaced whole); a new dict."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in FREE_FORM_KEYS:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(text: str) -> Any:
    """YAML as DVC reads and writes params.yaml (1.2, ruamel): `no`, `on` are words, `1e-3` a number.
    (`dvc exp run -S` writes a string `"no"` unquoted, which YAML 1.1 readers take for false.)"""
    return YAML(typ="safe", pure=True).load(text)


def read_params(path: Path | str = PARAMS_FILE, what: str = "params file") -> dict[str, Any]:
    """A params file (or a profile of one, `what` names it in errors): a YAML mapping of sections."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: {what} not found")
    try:
        params = load_yaml(path.read_text())
    except YAMLError as err:
        raise StageError(f"{path}: malformed YAML: {err}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise StageError(f"{path}: expected a mapping of sections at the top level")
    return params


MISSING = object()


def dotted(params: dict[str, Any], key: str) -> Any:
    """params["a"]["b"] for "a.b", or MISSING."""
    value: Any = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def check_agreement(params: dict[str, Any], section_name: str | None = None) -> None:
    """Every MUST_AGREE group (those naming `section_name`, when given) holds one value; the first
    that does not is one line naming its keys. A missing key is left to the section that reads it."""
    for condition, keys in MUST_AGREE:
        if section_name is not None and not any(k.split(".")[0] == section_name for k in (condition or "", *keys)):
            continue
        if condition is not None and dotted(params, condition) is not True:
            continue
        first, *others = keys
        for key in others:
            difference = first_difference(params, key, first)
            if difference is not None:
                why = f" ({condition} is true)" if condition else ""
                key, value, first_key, expected = difference
                raise StageError(f"params.yaml: {key}: {value!r} must equal {first_key}, {expected!r}{why}")


def first_difference(params: dict[str, Any], key: str, other: str) -> tuple[str, Any, str, Any] | None:
    """The first (key, value, other key, its value) where two settings differ, down into mappings."""
    value, expected = dotted(params, key), dotted(params, other)
    if MISSING in (value, expected) or value == expected:
        return None
    if isinstance(value, dict) and isinstance(expected, dict):
        for sub in list(expected) + [k for k in value if k not in expected]:
            if value.get(sub, MISSING) != expected.get(sub, MISSING):
                return f"{key}.{sub}", value.get(sub), f"{other}.{sub}", expected.get(sub)
    return key, value, other, expected


def section(cls: type[T], name: str, params: dict[str, Any] | None = None) -> T:
    """Build dataclass `cls` from `params[name]` (a dotted name reads a mapping inside a section, e.g.
    "patch_unet.crops"); unknown, missing or mistyped keys fail with one line."""
    params = read_params() if params is None else params
    values = dotted(params, name)
    if values is MISSING:
        raise StageError(f"params.yaml: section '{name}' is missing")
    settings = from_dict(cls, values or {}, where=f"params.yaml: {name}")
    check_agreement(params, name.split(".")[0])  # after the section's own checks, so a wrong type is named as such
    if os.environ.get(TRACE_ENV):
        trace_reads(settings, name)
    return settings


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """`cls(**values)` with every key checked; `where` prefixes each error ("params.yaml: unet")."""
    if not isinstance(values, dict):
        raise StageError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise StageError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in values and not has_default(f)]
    if missing:
        raise StageError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = from_dict(hints[key], value, where=f"{where}.{key}")
        else:
            kwargs[key] = checked_value(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        key, _, reason = str(err).partition(": ")
        raise StageError(f"{where}.{key}: {reason}" if key in fields and reason else f"{where}: {err}") from None


def has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def checked_value(hint: Any, value: Any, where: str) -> Any:
    """value checked against its field's type: a list for `tuple[X, ...]` (each item an X), a
    mapping for `dict`, a scalar for the rest (`checked_scalar`); YAML lists become tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise StageError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        checked = [checked_scalar(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        # numbers keep the form they were written in: DVC names foreach stages after it (sweep@0, not 0.0)
        return tuple(v if item is float and isinstance(v, int) else c for v, c in zip(value, checked))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise StageError(f"{where}: expected a mapping, got {value!r}")
        return value
    return checked_scalar(hint, value, where)


def checked_scalar(hint: Any, value: Any, where: str) -> Any:
    """value checked against a bool/int/float/str/Path field (optionally `| None`); other fields pass.

    A float field takes any string that parses as a number (YAML 1.1 readers give `1e-3` as one).
    """
    options = set(typing.get_args(hint)) if typing.get_args(hint) else {hint}
    if value is None and type(None) in options:
        return None
    kinds = options & {bool, int, float, str, Path}
    if not kinds or len(options - {type(None)}) != 1:
        return value
    (kind,) = kinds
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    ok = {bool: isinstance(value, bool), str: isinstance(value, str), Path: isinstance(value, str) and value,
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)}[kind]
    if not ok:
        expected = {float: "a number", Path: "a path"}.get(kind, kind.__name__)
        hint = " (YAML reads unquoted no / yes / off / on as booleans: quote the word)" if \
            kind is str and isinstance(value, bool) else ""
        raise StageError(f"{where}: expected {expected}, got {value!r}{hint}")
    return {float: float, Path: Path}.get(kind, lambda v: v)(value)


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# Checks for `__post_init__`: each raises ValueError naming the key; `from_dict` adds the section.

def check_choice(settings: Any, name: str, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if getattr(settings, name) not in choices:
        raise ValueError(f"{name}: {getattr(settings, name)!r} is not one of {', '.join(map(str, choices))}")


def check_at_least(settings: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name}: must be >= {minimum}, got {value!r}")


def check_positive(settings: Any, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name}: must be > 0, got {value!r}")
