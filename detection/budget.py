"""The detector's training budget: found where the baseline's val mAP50 stops improving, then
given to every seed and variant as a number of batches.

Below the plateau a comparison of variants measures training length, not images (the demo's curve:
bench/RESULTS.md, "The detector's plateau"). So the baseline finds
the budget (`yolo.budget`, epochs null): the seeds it trains at once (`yolo.parallel` of them,
the first seeds of `yolo.seeds`) validate on `val` every `val_every` epochs and stop together at
the first validation where the best mean val mAP50 so far has gained less than `min_gain` over the
best of `window` epochs earlier (`plateau_epoch`; not before `min_epochs`, at most `max_epochs`).
The seeds decide on the mean of their curves (`PeerCurves`), so they stop at the same epoch and
one budget holds for all of them; a seed not trained at once with them then trains exactly that
many epochs. The test split plays no part.

Every training follows the same learning-rate schedule per batch: ultralytics' linear decay over
`max_epochs` baseline epochs (a variant with more images: the same number of batches), stopped at
the budget's batches (`Plan`). With a fixed budget (`epochs: <n>`) nothing is searched and every
training runs ultralytics' own schedule over its own epochs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import StageError
from core.params import check_at_least

BUDGET_FILE = "budget.json"      # in <paths.yolo>/baseline/: what every other training reads
ABORT_FILE = "abort"             # written by the stage when a training failed: its peers stop waiting


@dataclass(frozen=True)
class BudgetSettings:
    """params.yaml `yolo.budget`: how long every detector trains."""

    epochs: int | None           # null: found by the baseline on val (the rule below); n: the baseline's epochs
    val_every: int               # epochs between validations on `val` while the budget is searched
    window: int                  # epochs: stop when the best val mAP50 gained < min_gain over the last window
    min_gain: float
    min_epochs: int              # never stop before this many epochs
    max_epochs: int              # the cap, and the length of the learning-rate schedule while searching

    def __post_init__(self) -> None:
        check_at_least(self, 1, "val_every", "window", "min_epochs", "max_epochs")
        check_at_least(self, 0, "min_gain")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs: must be null (found on val) or >= 1, got {self.epochs}")
        if self.window % self.val_every or self.min_epochs % self.val_every:
            raise ValueError(f"window: window ({self.window}) and min_epochs ({self.min_epochs}) must be multiples "
                             f"of val_every ({self.val_every})")
        if self.max_epochs < self.min_epochs or self.min_epochs <= self.window:
            raise ValueError(f"max_epochs: need window < min_epochs <= max_epochs, got {self.window}, "
                             f"{self.min_epochs}, {self.max_epochs}")

    @property
    def searched(self) -> bool:
        return self.epochs is None


def best_so_far(curve: dict[int, float], epoch: int) -> float:
    """The best value of `curve` (epoch -> val mAP50) at epochs <= `epoch` (-inf when none)."""
    return max((v for e, v in curve.items() if e <= epoch), default=-math.inf)


def window_gain(curve: dict[int, float], epoch: int, window: int) -> float:
    """How much the best val mAP50 grew over the `window` epochs before `epoch`."""
    return best_so_far(curve, epoch) - best_so_far(curve, epoch - window)


def plateau_epoch(curve: dict[int, float], rule: BudgetSettings) -> int | None:
    """The epoch to stop at, given the val curve so far (validations at multiples of `val_every`),
    or None to go on: the first validated epoch >= `min_epochs` whose `window_gain` is below
    `min_gain`, else `max_epochs` once reached."""
    for epoch in sorted(curve):
        if epoch >= rule.min_epochs and window_gain(curve, epoch, rule.window) < rule.min_gain:
            return epoch
        if epoch >= rule.max_epochs:
            return epoch
    return None


def mean_curve(curves: dict[int, dict[int, float]]) -> dict[int, float]:
    """Per epoch, the mean over seeds of the epochs every seed has validated."""
    common = set.intersection(*(set(c) for c in curves.values())) if curves else set()
    return {e: sum(c[e] for c in curves.values()) / len(curves) for e in sorted(common)}


class PeerCurves:
    """The val curves of the seeds that search the budget together, one JSON file per seed in a
    shared folder: each training publishes its value at a validation, then waits until every peer
    has published the same epoch, so all of them read the same mean curve and take the same stop.
    The stage writes ABORT_FILE there when a training failed, so no peer waits forever."""

    def __init__(self, folder: Path | str, seed: int, peers: tuple[int, ...], poll_s: float = 0.2):
        self.folder, self.seed, self.peers, self.poll_s = Path(folder), seed, peers, poll_s

    def path(self, seed: int) -> Path:
        return self.folder / f"seed_{seed}.json"

    def read(self, seed: int) -> dict[int, float]:
        path = self.path(seed)
        return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}

    def publish(self, epoch: int, value: float) -> None:
        curve = {**self.read(self.seed), epoch: value}
        tmp = self.path(self.seed).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({str(e): v for e, v in sorted(curve.items())}))
        tmp.replace(self.path(self.seed))   # a reader sees the old file or the new one, never half

    def curves(self) -> dict[int, dict[int, float]]:
        """Every peer's curve as published so far."""
        return {s: self.read(s) for s in self.peers}

    def wait(self, epoch: int) -> dict[int, dict[int, float]]:
        """Every peer's curve once all of them have reached `epoch`."""
        while True:
            if (self.folder / ABORT_FILE).exists():
                raise StageError(f"train_yolo: seed {self.seed}: a peer training failed; stopping")
            curves = self.curves()
            if all(epoch in c for c in curves.values()):
                return curves
            time.sleep(self.poll_s)


@dataclass(frozen=True)
class Plan:
    """How long one training runs: ultralytics' `epochs` (the learning-rate schedule's length) and the
    epoch it stops after; while searching, also how often it validates and whom it decides with."""

    schedule_epochs: int
    stop_epoch: int
    search: BudgetSettings | None = None   # set: validate every val_every epochs, stop by plateau_epoch
    peers_dir: str | None = None
    peers: tuple[int, ...] = ()
    snapshots: tuple[int, ...] = ()        # epochs after which the weights are kept (bench/bench_plateau.py)


def batches_per_epoch(n_images: int, batch: int) -> int:
    return math.ceil(n_images / batch)


def scaled_plan(budget: dict[str, Any], n_train: int, batch: int, equal_steps: bool) -> Plan:
    """A training on `n_train` images under the baseline's `budget` record: with `equal_steps` the
    epochs whose batches come nearest to the budget's (a variant with more images sees each fewer
    times), else the baseline's epochs; the schedule scaled the same way, so the learning rate at a
    given batch is the baseline's."""
    ratio = budget["batches_per_epoch"] / batches_per_epoch(n_train, batch) if equal_steps else 1.0
    return Plan(max(1, round(budget["schedule_epochs"] * ratio)), max(1, round(budget["epochs"] * ratio)))


def budget_record(rule: BudgetSettings, n_train: int, batch: int, epochs: int,
                  curves: dict[int, dict[int, float]]) -> dict[str, Any]:
    """What <paths.yolo>/baseline/budget.json holds: the budget in epochs and batches, the rule, the
    curves it was read from and the last window's gain (null when nothing was searched)."""
    mean = mean_curve(curves)
    gain = window_gain(mean, epochs, rule.window) if mean else None
    capped = rule.searched and epochs >= rule.max_epochs and gain is not None and gain >= rule.min_gain
    return {"epochs": epochs, "batches_per_epoch": batches_per_epoch(n_train, batch),
            "batches": epochs * batches_per_epoch(n_train, batch),
            "schedule_epochs": rule.max_epochs if rule.searched else epochs, "searched": rule.searched,
            "capped": bool(capped), "window_gain": gain,
            "rule": dataclasses.asdict(rule), "val_map50": {str(e): v for e, v in mean.items()},
            "val_map50_per_seed": {str(s): {str(e): v for e, v in c.items()} for s, c in curves.items()}}


def read_budget(baseline_dir: Path | str) -> dict[str, Any]:
    """The budget train_yolo@baseline recorded; one line when it is missing or damaged."""
    path = Path(baseline_dir) / BUDGET_FILE
    if not path.is_file():
        raise StageError(f"{path}: not found; run train_yolo@baseline first (it finds the detector budget)")
    try:
        record = json.loads(path.read_text())
        for key in ("epochs", "batches_per_epoch", "schedule_epochs"):
            if not isinstance(record[key], int) or record[key] < 1:
                raise ValueError(f"{key} must be an integer >= 1")
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(f"{path}: not a budget record ({err}); rerun train_yolo@baseline") from None
    return record


def budget_line(budget: dict | None) -> str:
    """The detector budget in words (`detection.budget` record of train_yolo@baseline), '' when absent."""
    if not budget:
        return ""
    how = (f"the baseline's plateau on val: its mean val mAP50 gained {budget['window_gain']:+.3f} over the last "
           f"{budget['rule']['window']} epochs" + (", capped at max_epochs before a plateau" if budget["capped"] else "")
           if budget["searched"] else "fixed in params.yaml (yolo.budget.epochs)")
    return (f"every detector trained {budget['batches']} batches (the baseline's {budget['epochs']} epochs of "
            f"{budget['batches_per_epoch']} batches): {how}")
