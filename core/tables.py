"""Tables in and out: CSV contracts read with their required columns checked, and markdown tables."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.errors import StageError


def read_table(path: Path | str, columns: Sequence[str], made_by: str, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV another stage wrote, with `columns` present; `text_columns` stay strings ('' for empty).

    A missing file names the stage (`made_by`) that writes it.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: not found; run the {made_by} stage first")
    check_row_lengths(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a row longer than the header
            frame = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise StageError(f"{path}: malformed CSV: {err}".replace("\n", " ")) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def check_row_lengths(path: Path) -> None:
    """Every row has the header's number of fields: a file cut off mid-row (a killed writer, a bad
    copy) is an error, where pandas would fill the missing fields with blanks."""
    try:
        with path.open(newline="") as handle:
            rows = csv.reader(handle)
            header = next(rows, None)
            for line, row in enumerate(rows, start=2):
                if row and len(row) != len(header):
                    raise StageError(f"{path}: line {line}: {len(row)} fields where the header has {len(header)} "
                                     "(a cut-off or malformed file?)")
    except (csv.Error, UnicodeDecodeError) as err:
        raise StageError(f"{path}: malformed CSV: {err}") from None


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(markdown_cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    return header + body


def markdown_cell(value) -> str:
    """None and non-finite floats as n/a, floats with 3 decimals, the rest as str()."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)
