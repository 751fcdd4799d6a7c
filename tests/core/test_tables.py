"""core.tables: CSV contracts read with their columns checked; markdown tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from core.errors import StageError
from core.tables import markdown_cell, markdown_table, read_table


def test_read_table_keeps_text_columns_as_written(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("image_id,tags,n\n007,,3\nNA,a;b,4\n")
    frame = read_table(path, ("image_id", "tags"), made_by="import", text_columns=("image_id", "tags"))
    assert list(frame["image_id"]) == ["007", "NA"] and list(frame["tags"]) == ["", "a;b"]
    assert list(frame["n"]) == [3, 4]


@pytest.mark.parametrize("text, message", [
    (None, r"manifest.csv: not found; run the import stage first$"),
    ("image_id\n1\n", r"manifest.csv: missing column\(s\) tags$"),
    ("image_id,tags\n1,a,b,c\n", r"manifest.csv: line 2: 4 fields where the header has 2 "),
    ("image_id,tags\n1,a\n2", r"manifest.csv: line 3: 1 fields where the header has 2 \(a cut-off"),
    ("", r"manifest.csv: malformed CSV: "),
])
def test_read_table_refuses_missing_files_columns_and_malformed_rows(tmp_path, text, message):
    path = tmp_path / "manifest.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(StageError, match=message) as err:
        read_table(path, ("image_id", "tags"), made_by="import")
    assert "\n" not in str(err.value)


def test_markdown_table_formats_floats_none_and_non_finite_values():
    frame = pd.DataFrame([{"name": "a", "x": 0.12345, "y": None}, {"name": "b", "x": math.nan, "y": 3}])
    assert markdown_table(frame) == "| name | x | y |\n|---|---|---|\n| a | 0.123 | n/a |\n| b | n/a | 3.000 |\n"
    assert markdown_cell(float("inf")) == "n/a" and markdown_cell(2) == "2"
