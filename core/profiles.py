"""Settings profiles: params.yaml's text with overrides applied, its comments, layout and anchors kept.

A profile holds params.yaml's sections and keys, only those it changes. A key inside an anchored
mapping (`unet.model: &arch`) changes every section that repeats it (classifier, judge), and an
anchored value (`unet.image_size: &generative_px`) changes wherever it is repeated; so does a key
reached through an alias (`classifier.model.dropout` is `unet.model.dropout`: the sections must
agree). A key params.yaml does not have is an error (a typo would otherwise be ignored), except
inside the free-form mappings (`extra`, `quota`, ...), which a profile replaces whole.
`python -m pipelines.profile` is the command line.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from core.errors import StageError
from core.params import FREE_FORM_KEYS, read_params


# Words YAML 1.1 (PyYAML, which reads params.yaml) takes for booleans; ruamel writes YAML 1.2, where
# they are strings, so a string such as `mixed_precision: "no"` must be written quoted.
YAML11_BOOLEANS = {form for word in ("y", "yes", "n", "no", "true", "false", "on", "off")
                   for form in (word, word.capitalize(), word.upper())}


def round_trip() -> YAML:
    rt = YAML()  # round-trip: comments, flow style and anchors survive
    rt.width = 4096
    rt.preserve_quotes = True
    rt.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    rt.representer.add_representer(str, lambda rep, text: rep.represent_scalar(
        "tag:yaml.org,2002:str", text, style='"' if text in YAML11_BOOLEANS else None))
    return rt


# ruamel writes the end-of-line comment of an anchored or aliased node on a line of its own.
ORPHANED_COMMENT = re.compile(r"^(?P<line>[^#\n]*[&*][\w-]+)\n(?P<pad>[ ]+)(?P<comment>#[^\n]*)$", re.MULTILINE)


def rejoin_comments(text: str) -> str:
    def join(match: re.Match) -> str:
        line, column = match["line"], len(match["pad"])
        return (line.ljust(column) if len(line) < column else line + "  ") + match["comment"]
    return ORPHANED_COMMENT.sub(join, text)


def as_node(value: Any, like: Any) -> Any:
    """`value` as a ruamel node; lists and mappings keep `like`'s flow style, scalars its anchor."""
    if isinstance(value, dict):
        node = CommentedMap(value)
    elif isinstance(value, list):
        node = CommentedSeq(value)
    else:
        node = value
    if isinstance(node, (CommentedMap, CommentedSeq)) and hasattr(like, "fa"):
        if like.fa.flow_style():
            node.fa.set_flow_style()
    anchor = getattr(like, "anchor", None)
    if anchor is not None and anchor.value is not None and not isinstance(node, (CommentedMap, CommentedSeq)):
        node = round_trip().load(f"&{anchor.value} {yaml.safe_dump(value, default_flow_style=True).strip()}")
    return node


def replace_everywhere(tree: Any, old: Any, new: Any) -> None:
    """Every place in `tree` that holds the very object `old` (an anchor and its aliases) gets `new`."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in list(items):
        if value is old:
            tree[key] = new
        elif isinstance(value, (dict, list)):
            replace_everywhere(value, old, new)


def apply(root: CommentedMap, target: CommentedMap, overrides: dict, where: str) -> None:
    """Set `overrides` into `target` (a mapping inside `root`), key by key."""
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else key
        if key not in target:
            raise StageError(f"profile: {name}: params.yaml has no such key")
        current = target[key]
        if isinstance(value, dict) and isinstance(current, dict) and key not in FREE_FORM_KEYS:
            apply(root, current, value, name)
        elif getattr(getattr(current, "anchor", None), "value", None) is not None:
            replace_everywhere(root, current, as_node(value, current))
        else:
            target[key] = as_node(value, current)


def parse_set(item: str) -> dict:
    """`a.b.c=value` as {a: {b: {c: value}}}, the value read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise StageError(f"--set {item}: expected section.key=value")
    value: Any = yaml.safe_load(text)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_profile(path: Path) -> dict:
    return read_params(path, what="profile")


def profiled_params(params_text: str, overrides: list[dict]) -> str:
    """params.yaml's text with each override applied in order."""
    rt = round_trip()
    root = rt.load(params_text)
    for override in overrides:
        apply(root, root, override, "")
    out = io.StringIO()
    rt.dump(root, out)
    return rejoin_comments(out.getvalue())
