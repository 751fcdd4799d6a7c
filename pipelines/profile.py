"""Apply settings profiles to params.yaml: `python -m pipelines.profile one_gpu [other.yaml ...]
[--set section.key=value ...] [--params params.yaml] [--out FILE]`.

A profile is a name of pipelines/profiles/ (`one_gpu`, `gpu_check`) or a YAML file with params.yaml's sections and keys, only those it changes; `--set`
changes one key (the value read as YAML), after the profiles, in order. The result is written
to `--out` (default: the `--params` file itself) with params.yaml's comments, layout and anchors
kept: a key inside an anchored mapping (`unet.model: &arch`) changes every section that repeats
it (classifier, judge), and an anchored value (`unet.image_size: &generative_px`) changes
wherever it is repeated. So does a key reached through an alias (`classifier.model.dropout` is
`unet.model.dropout`: the sections must agree). A key params.yaml does not have is an error (a typo would otherwise be
ignored), except inside the free-form mappings (`extra`, `quota`, ...), which a profile replaces
whole. `dvc exp run -S` cannot do this: it drops anchors and writes the change to one copy only.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from core.errors import StageError
from core.io import write_text
from core.params import FREE_FORM_KEYS, read_params
from pipelines.stage import run_stage


def round_trip() -> YAML:
    rt = YAML()  # round-trip: comments, flow style and anchors survive
    rt.width = 4096
    rt.preserve_quotes = True
    rt.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
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


PROFILES = Path(__file__).resolve().parent / "profiles"


def profile_path(name: str) -> Path:
    """A profile file, or the name of one shipped in pipelines/profiles/ (`one_gpu`)."""
    shipped = PROFILES / f"{name}.yaml"
    return shipped if "/" not in name and not name.endswith(".yaml") and shipped.is_file() else Path(name)


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


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="*", type=profile_path,
                        help="profile files or names of pipelines/profiles/*.yaml, applied in order")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (YAML)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: --params)")
    args = parser.parse_args(argv)
    if not args.params.is_file():
        raise StageError(f"{args.params}: params file not found")
    overrides = [load_profile(path) for path in args.profiles] + [parse_set(item) for item in args.sets]
    text = profiled_params(args.params.read_text(), overrides)
    write_text(args.out or args.params, text)
    print(f"profile: {len(overrides)} override(s) -> {args.out or args.params}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
