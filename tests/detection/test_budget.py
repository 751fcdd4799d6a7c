"""detection.budget: the plateau rule on constructed val curves, the seeds deciding together, the
budget record and how every other training reads it."""

from __future__ import annotations

import json
import threading

import pytest

from core.errors import StageError
from detection.budget import (
    ABORT_FILE,
    BudgetSettings,
    PeerCurves,
    budget_record,
    mean_curve,
    plateau_epoch,
    read_budget,
    scaled_plan,
    window_gain,
)
from detection.yolo import YoloParams
from tests.support import settings

RULE = BudgetSettings(epochs=None, val_every=10, window=40, min_gain=0.01, min_epochs=60, max_epochs=240)


def curve(values: list[float], every: int = 10) -> dict[int, float]:
    """val mAP50 at epochs every, 2 * every, ..."""
    return {every * (i + 1): v for i, v in enumerate(values)}


def test_the_rule_stops_at_the_first_validation_whose_window_gained_less_than_min_gain():
    # rises to 0.80 at epoch 80, then +0.002 a validation: the best of epochs <= 120 (0.808) minus the
    # best of epochs <= 80 (0.800) is 0.008 < 0.01, the first window that small
    values = [0.1, 0.4, 0.6, 0.7, 0.75, 0.78, 0.79, 0.80, 0.802, 0.804, 0.806, 0.808, 0.81]
    c = curve(values)
    assert window_gain(c, 120, 40) == pytest.approx(0.008)
    assert window_gain(c, 110, 40) == pytest.approx(0.806 - 0.79)
    assert plateau_epoch(c, RULE) == 120
    # before that validation has happened, the rule says go on
    assert plateau_epoch({e: v for e, v in c.items() if e <= 110}, RULE) is None


def test_a_dip_does_not_stop_training_early_and_a_noisy_peak_counts_once():
    # a drop at 70 (0.60 against 0.70 at 30) would stop a rule that read raw values; the best so far
    # (0.72 against 0.65) goes on
    c = curve([0.2, 0.5, 0.65, 0.70, 0.72, 0.72, 0.60, 0.74, 0.76, 0.78, 0.785, 0.786, 0.787, 0.788])
    assert window_gain(c, 70, 40) == pytest.approx(0.07)
    assert plateau_epoch(c, RULE) == 140  # 0.788 - 0.78 (best of <= 100) < 0.01; at 130: 0.787 - 0.76
    # a lucky spike at 60 that is never reached again: the window after it gains nothing, so it stops at 100
    spike = curve([0.2, 0.5, 0.6, 0.7, 0.72, 0.85, 0.75, 0.76, 0.77, 0.78])
    assert plateau_epoch(spike, RULE) == 100


def test_never_before_min_epochs_and_never_after_the_cap():
    flat = curve([0.5] * 24)
    assert plateau_epoch(flat, RULE) == 60  # flat from the start: stops at min_epochs, not at 40
    rising = curve([0.01 * i for i in range(1, 25)])  # +0.04 every window, up to epoch 240
    assert plateau_epoch(rising, RULE) == 240
    assert plateau_epoch({e: v for e, v in rising.items() if e < 240}, RULE) is None


def test_the_seeds_decide_on_their_mean_curve():
    curves = {0: {10: 0.2, 20: 0.4}, 1: {10: 0.4, 20: 0.6, 30: 0.7}}
    assert mean_curve(curves) == {10: pytest.approx(0.3), 20: pytest.approx(0.5)}  # epochs every seed reached
    assert mean_curve({}) == {}


@pytest.mark.parametrize("values, message", [
    ({"window": 45}, "window: window (45) and min_epochs (60) must be multiples of val_every (10)"),
    ({"min_epochs": 30}, "max_epochs: need window < min_epochs <= max_epochs, got 40, 30, 240"),
    ({"max_epochs": 50}, "max_epochs: need window < min_epochs <= max_epochs, got 40, 60, 50"),
    ({"epochs": 0}, "epochs: must be null (found on val) or >= 1, got 0"),
    ({"min_gain": -0.1}, "min_gain: must be >= 0, got -0.1"),
    ({"val_every": 0}, "val_every: must be >= 1, got 0"),
])
def test_budget_settings_reject_rules_that_cannot_work(values, message):
    with pytest.raises(StageError) as err:
        settings(YoloParams, "yolo", budget={**RULE.__dict__, **values})
    assert str(err.value) == f"params.yaml: yolo.budget.{message}"


def test_the_record_holds_the_budget_in_batches_the_curves_and_the_last_windows_gain():
    curves = {0: curve([0.1, 0.4, 0.6, 0.7, 0.75, 0.755]), 1: curve([0.1, 0.4, 0.6, 0.7, 0.75, 0.757])}
    record = budget_record(RULE, n_train=135, batch=16, epochs=60, curves=curves)
    assert (record["epochs"], record["batches_per_epoch"], record["batches"]) == (60, 9, 540)
    assert record["schedule_epochs"] == 240 and record["searched"] and not record["capped"]
    assert record["window_gain"] == pytest.approx(0.756 - 0.4)
    assert record["val_map50"]["60"] == pytest.approx(0.756) and record["val_map50_per_seed"]["1"]["60"] == 0.757
    capped = budget_record(RULE, 135, 16, 240, {0: curve([0.01 * i for i in range(1, 25)])})
    assert capped["capped"] and capped["window_gain"] == pytest.approx(0.04)
    fixed = budget_record(BudgetSettings(**{**RULE.__dict__, "epochs": 100}), 135, 16, 100, {})
    assert (fixed["searched"], fixed["schedule_epochs"], fixed["batches"], fixed["window_gain"]) == (False, 100, 900,
                                                                                                       None)


@pytest.mark.parametrize("equal_steps, n_train, schedule, stop", [
    (True, 135, 240, 150),   # the baseline: 9 batches of 16 an epoch
    (True, 188, 180, 112),   # 12 batches an epoch: 1350 / 12 = 112.5 -> 112, the schedule 2160 / 12
    (True, 203, 166, 104),   # 13 batches an epoch: 1350 / 13 = 103.8
    (True, 100_000, 1, 1),   # never below one epoch
    (False, 203, 240, 150),  # the baseline's epochs over more images
])
def test_every_other_training_reads_the_budget_in_batches_with_the_same_schedule(equal_steps, n_train, schedule, stop):
    record = {"epochs": 150, "batches_per_epoch": 9, "schedule_epochs": 240}
    plan = scaled_plan(record, n_train, batch=16, equal_steps=equal_steps)
    assert (plan.schedule_epochs, plan.stop_epoch, plan.search) == (schedule, stop, None)


def test_a_missing_or_damaged_budget_is_one_line(tmp_path):
    with pytest.raises(StageError, match=r"baseline/budget.json: not found; run train_yolo@baseline first"):
        read_budget(tmp_path / "baseline")
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "budget.json").write_text(json.dumps({"epochs": 0, "batches_per_epoch": 9,
                                                                    "schedule_epochs": 240}))
    with pytest.raises(StageError, match=r"budget.json: not a budget record \(epochs must be an integer >= 1\)"):
        read_budget(tmp_path / "baseline")
    (tmp_path / "baseline" / "budget.json").write_text("{")
    with pytest.raises(StageError, match="not a budget record"):
        read_budget(tmp_path / "baseline")


def test_peers_wait_for_each_other_and_a_failed_peer_releases_them(tmp_path):
    first, second = PeerCurves(tmp_path, 0, (0, 1), poll_s=0.01), PeerCurves(tmp_path, 1, (0, 1), poll_s=0.01)
    first.publish(10, 0.3)
    seen = {}
    waiter = threading.Thread(target=lambda: seen.update(first.wait(10)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # seed 1 has not validated epoch 10 yet
    second.publish(10, 0.5)
    waiter.join(5)
    assert seen == {0: {10: 0.3}, 1: {10: 0.5}}
    first.publish(20, 0.4)
    assert first.curves() == {0: {10: 0.3, 20: 0.4}, 1: {10: 0.5}}
    (tmp_path / ABORT_FILE).touch()
    with pytest.raises(StageError, match="train_yolo: seed 0: a peer training failed; stopping"):
        first.wait(20)
