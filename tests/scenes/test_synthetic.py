"""scenes.synthetic: the generated-image manifest, read the same way by every stage after generate."""

from __future__ import annotations

import pytest

from core.errors import StageError
from scenes.synthetic import read_generated
from tests.support import TINY_CLASSES, make_synthetic


def test_read_generated_adds_the_image_files_and_keeps_ids_as_text(tmp_path):
    synthetic = make_synthetic(tmp_path, n=4)
    frame = read_generated(synthetic, TINY_CLASSES)
    assert frame["target"].tolist() == ["bottle", "can", "paper", "bottle"]
    assert frame["abspath"].tolist() == [str(synthetic / "images" / f"syn{i:03d}.png") for i in range(4)]
    assert all(isinstance(i, str) for i in frame["image_id"])


def test_unknown_targets_missing_manifests_and_columns_are_one_line_errors(tmp_path):
    with pytest.raises(StageError, match=r"data/synthetic/manifest.csv: not found; run the generate stage first$"):
        read_generated(tmp_path / "data/synthetic", TINY_CLASSES)
    synthetic = make_synthetic(tmp_path, n=3)
    with pytest.raises(StageError, match=r"manifest.csv: target\(s\) 'paper' not in classes bottle, can$"):
        read_generated(synthetic, ["bottle", "can"])
    (synthetic / "manifest.csv").write_text("image_id,path\na,images/a.png\n")
    with pytest.raises(StageError, match=r"manifest.csv: missing column\(s\) target$"):
        read_generated(synthetic, TINY_CLASSES)
