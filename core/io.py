"""Atomic writes: files and folders appear complete or not at all, so DVC never caches a half.

Each writer works in a temporary sibling (`.<name>.<pid>.<random>.tmp`) and renames it into place
only when writing succeeded; a failed stage removes its temp, and the temps a killed stage left
behind (their process no longer runs) are removed when the next writer of the same output
starts. Outputs get the permissions the user's umask gives new files, not the owner-only ones of
Python's temp files, so a shared DVC cache or a teammate can read them. `scratch_dir` is the same
idea for throw-away work folders in the system temp folder.
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


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove `folder/<prefix><pid>...` entries whose process no longer runs (left by a killed run)."""
    if not folder.is_dir():
        return
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].split(".")[0].split("_")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def umask_mode(directory: bool) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode(directory=False))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path | str, frame: Any) -> None:
    """A pandas DataFrame as CSV (no index)."""
    write_text(path, frame.to_csv(index=False))


def write_json(path: Path | str, data: Any, indent: int | None = 2) -> None:
    """`data` as JSON (`indent=None`: one compact line, for large machine-read files)."""
    separators = None if indent is not None else (",", ":")
    write_text(path, json.dumps(to_jsonable(data), indent=indent, separators=separators, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield an empty temp dir beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, f".{final.name}.")
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, umask_mode(directory=True))
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


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A work folder `<system temp>/<prefix><pid>_<random>`, removed on exit; the ones of this
    prefix that a killed process left behind are removed first."""
    root = Path(tempfile.gettempdir())
    remove_stale(root, prefix)
    path = Path(tempfile.mkdtemp(dir=root, prefix=f"{prefix}{os.getpid()}_"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
