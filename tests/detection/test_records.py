"""detection.records: safe file names inside the dataset root, and how bad records are collected."""

from __future__ import annotations

import os

import pytest

from core.errors import StageError
from detection.records import BadRecord, Problems, fatal, image_key, resolve_inside


def test_names_inside_the_root_resolve_and_keys_keep_their_folders(tmp_path):
    (tmp_path / "images" / "a.png").parent.mkdir()
    assert resolve_inside(tmp_path, "images/a.png") == tmp_path / "images" / "a.png"
    assert image_key(tmp_path, tmp_path / "images" / "sub" / "a.png") == "images/sub/a"


@pytest.mark.parametrize("name, reason", [
    ("", "empty or invalid file name"),
    ("a\x00b.png", "empty or invalid file name"),
    ("/etc/passwd", "is absolute"),
    ("C:\\\\data\\\\a.png", "is absolute"),
    ("images/../../secret.png", "escapes the dataset root"),
    ("..\\\\secret.png", "escapes the dataset root"),
])
def test_names_that_leave_the_root_are_bad_records(tmp_path, name, reason):
    with pytest.raises(BadRecord, match=reason):
        resolve_inside(tmp_path, name)


def test_a_symlink_leading_out_of_the_root_is_a_bad_record(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(BadRecord, match="resolves outside the dataset root"):
        resolve_inside(root, "link/a.png")


def test_fail_raises_the_first_bad_record_and_skip_collects_them():
    with pytest.raises(StageError, match=r"^ann.json: image id 3: missing file$"):
        Problems("fail", "fail").bad("ann.json", "image id 3", "missing file")
    problems = Problems("skip", "fail")
    problems.bad("ann.json", "image id 3", "missing file")
    problems.fix("ann.json", "annotation 9", "box clipped")
    assert problems.skipped == [{"file": "ann.json", "record": "image id 3", "reason": "missing file"}]
    assert problems.fixed == [{"file": "ann.json", "record": "annotation 9", "reason": "box clipped"}]
    assert str(fatal("a.xml", "file", "malformed XML")) == "a.xml: file: malformed XML"
