"""Atomic writes: files and folders appear complete or not at all, so DVC never caches a half.

Each writer works in a temporary sibling and renames it into place only when writing succeeded;
a killed or failed stage leaves its previous outputs (or none) behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from core.params import to_jsonable


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV (no index)."""
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
