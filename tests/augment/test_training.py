"""augment.training: the optional wall-clock budget of the training loops."""

from __future__ import annotations

from augment.training import over_budget


def test_the_budget_is_off_when_null_and_hit_at_its_minute():
    assert not over_budget(None, 1e9)
    assert not over_budget(2.0, 119.9) and over_budget(2.0, 120.0)
