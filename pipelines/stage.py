"""What every stage script shares: params sections as frozen dataclasses, atomic outputs, errors.

A stage script reads its `params.yaml` section into a frozen dataclass (unknown keys fail),
writes every output into a temporary sibling and renames it into place only when the stage
succeeded, so a killed or failed stage leaves nothing half-written for DVC to cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Iterator, TypeVar

import yaml

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


class StageError(Exception):
    """Bad input or settings: the message is the one line the user sees (file, record, reason)."""


def read_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StageError(f"{path}: malformed YAML: {err}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise StageError(f"{path}: expected a mapping of sections at the top level")
    return params


def section(cls: type[T], name: str, params: dict[str, Any] | None = None) -> T:
    """Build dataclass `cls` from `params[name]`; unknown or missing keys fail with one line."""
    params = read_params() if params is None else params
    if name not in params:
        raise StageError(f"params.yaml: section '{name}' is missing")
    return from_dict(cls, params[name] or {}, where=f"params.yaml: {name}")


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    if not isinstance(values, dict):
        raise StageError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise StageError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            value = from_dict(hints[key], value, where=f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = checked_scalar(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise StageError(f"{where}: {err}") from None
    except ValueError as err:
        raise StageError(f"{where}: {err}") from None


def checked_scalar(hint: Any, value: Any, where: str) -> Any:
    """value checked against a bool/int/float/str field (optionally `| None`); other fields pass.

    YAML 1.1 reads `1e-3` as a string: a float field takes any string that parses as a number.
    """
    options = set(typing.get_args(hint)) if typing.get_args(hint) else {hint}
    if value is None and type(None) in options:
        return None
    kinds = options & {bool, int, float, str}
    if not kinds or len(options - {type(None)}) != 1:
        return value
    (kind,) = kinds
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    ok = {bool: isinstance(value, bool), str: isinstance(value, str),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)}[kind]
    if not ok:
        raise StageError(f"{where}: expected {'a number' if kind is float else kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


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


def write_text(path: Path | str, text: str) -> None:
    """Write a file through a temp file + rename so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_csv(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV (no index), atomically."""
    write_text(path, frame.to_csv(index=False))


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temp dir beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_dirs(*finals: Path | str) -> Iterator[list[Path]]:
    """atomic_dir for several outputs that must appear together or not at all."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_dir(final)) for final in finals]


def run_stage(main_body, argv: list[str] | None = None) -> int:
    """Run a stage body; a StageError becomes one line on stderr and exit code 2."""
    try:
        main_body(argv)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
