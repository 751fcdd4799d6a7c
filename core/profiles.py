"""Settings profiles: params.yaml's text with overrides applied, its comments and layout kept.

A profile holds params.yaml's sections and keys, only those it changes. params.yaml has no anchors:
a value several sections state (`unet.image_size`, `classifier.image_size`) is set in each, and the
result must pass `core.params.check_agreement`. A key params.yaml does not have is an error (a typo
would otherwise be ignored), except inside the free-form mappings (`extra`, `quota`, ...), which a
profile replaces whole. Values are written as `dvc exp run -S` writes them (null as an empty value),
so the two never rewrite each other's lines. `python -m pipelines.profile` is the command line.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from core.errors import StageError
from core.params import FREE_FORM_KEYS, check_agreement, load_yaml, read_params


def round_trip() -> YAML:
    """ruamel's round-trip YAML 1.2, as DVC's override writer uses it: comments and flow style survive,
    and a word such as `no` is written bare, a string to every YAML 1.2 reader (`core.params.load_yaml`)."""
    rt = YAML()
    rt.width = 4096
    rt.preserve_quotes = True
    return rt


def as_node(value: Any, like: Any) -> Any:
    """`value` as a ruamel node; lists and mappings keep `like`'s flow style."""
    if isinstance(value, dict):
        node = CommentedMap(value)
    elif isinstance(value, list):
        node = CommentedSeq(value)
    else:
        return value
    if hasattr(like, "fa") and like.fa.flow_style():
        node.fa.set_flow_style()
    return node


def apply(target: CommentedMap, overrides: dict, where: str) -> None:
    """Set `overrides` into `target` key by key."""
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else key
        if key not in target:
            raise StageError(f"profile: {name}: params.yaml has no such key")
        current = target[key]
        if isinstance(value, dict) and isinstance(current, dict) and key not in FREE_FORM_KEYS:
            apply(current, value, name)
        else:
            target[key] = as_node(value, current)


def parse_set(item: str) -> dict:
    """`a.b.c=value` as {a: {b: {c: value}}}, the value read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise StageError(f"--set {item}: expected section.key=value")
    value: Any = load_yaml(text)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_profile(path: Path) -> dict:
    return read_params(path, what="profile")


def profiled_params(params_text: str, overrides: list[dict]) -> str:
    """params.yaml's text with each override applied in order; the sections that must agree checked."""
    rt = round_trip()
    root = rt.load(params_text)
    for override in overrides:
        apply(root, override, "")
    out = io.StringIO()
    rt.dump(root, out)
    check_agreement(load_yaml(out.getvalue()))
    return out.getvalue()
