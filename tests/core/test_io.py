"""core.io: outputs appear whole or not at all, and no temp file or folder is left behind."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.io import atomic_dir, atomic_dirs, atomic_file, scratch_dir, write_csv, write_json, write_text


def test_atomic_file_replaces_the_target_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "figure.png"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["figure.png"]


def test_writers_write_text_csv_and_json(tmp_path):
    @dataclass(frozen=True)
    class Settings:
        folder: Path
        sizes: tuple[int, ...]

    write_text(tmp_path / "a.txt", "hello\n")
    write_csv(tmp_path / "b.csv", pd.DataFrame({"x": [1, 2]}))
    write_json(tmp_path / "c.json", {"settings": Settings(Path("data/x"), (1, 2))})
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "b.csv").read_text() == "x\n1\n2\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"settings": {"folder": "data/x", "sizes": [1, 2]}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.csv", "c.json"]
    write_json(tmp_path / "d.json", {"a": [1, 2], "b": "x"}, indent=None)
    assert (tmp_path / "d.json").read_text() == '{"a":[1,2],"b":"x"}\n'


def test_atomic_dir_swaps_in_a_complete_folder_or_keeps_the_old_one(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(KeyError), atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        raise KeyError("failed stage")
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dirs_publish_together_or_not_at_all(tmp_path):
    with pytest.raises(ValueError), atomic_dirs(tmp_path / "a", tmp_path / "b") as (a, b):
        (a / "x").write_text("1")
        raise ValueError("second output failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dirs(tmp_path / "a", tmp_path / "b") as (a, b):
        (a / "x").write_text("1")
        (b / "y").write_text("2")
    assert (tmp_path / "a" / "x").read_text() == "1" and (tmp_path / "b" / "y").read_text() == "2"


def dead_pid() -> int:
    """A process id that no process has now."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_temps_a_killed_writer_left_are_removed_by_the_next_writer_only(tmp_path):
    stale = tmp_path / f".images.{dead_pid()}.abc123.tmp"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"half")
    running = tmp_path / f".images.{os.getppid()}.def456.tmp"  # a live process: maybe still writing
    running.mkdir()
    other = tmp_path / f".control.{dead_pid()}.ghi789.tmp"
    other.mkdir()
    with atomic_dir(tmp_path / "images") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["images", running.name, other.name])


def test_outputs_get_the_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_bytes(b"w")
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


def test_scratch_dirs_are_removed_on_exit_and_after_a_kill(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = tmp_path / f"yolo_run_{dead_pid()}_abc"
    left.mkdir()
    with pytest.raises(RuntimeError), scratch_dir("yolo_run_") as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(f"yolo_run_{os.getpid()}_")
        assert not left.exists()
        raise RuntimeError("training failed")
    assert list(tmp_path.iterdir()) == []
