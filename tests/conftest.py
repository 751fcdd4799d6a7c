"""Shared fixtures; the helpers behind them are in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import write_tiny_prepared


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    """A 16x16 prepared dataset (28 images, 3 classes) under tmp_path/data/prepared."""
    return write_tiny_prepared(tmp_path)
