"""Deterministic, tag-stratified assignment of images to train / tagged / val / test.

Stratum of an image = its rarest tag (by frequency over the whole dataset), or "clean". Images
are ordered by stratum, shuffled inside each stratum with `seed`, and dealt to the splits by
largest deficit: each next image goes to the split furthest behind its fraction. That keeps the
global counts within one image of the fractions and every stratum (every class, the clean
roads too) spread across the splits in the same proportions.

Two purposes (`mode`): `benchmark` deals a `tagged` share whose boxes are withheld, to measure the
low-label regime against known answers (the demo); `use_all_boxes` gives that share to `train`, so
the detector learns from every boxed training image, and the pool of unboxed images is only the
unlabelled folder's (`detection.pool`).

Source splits (`use_source_splits`): an image the source puts in `val` or `test` stays there;
images in the source's `train` (or with no split) are dealt to the remaining splits, whose
fractions are renormalised; `val`/`test` are dealt from them only where the source has none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from core.errors import StageError
from core.params import check_choice

SPLIT_NAMES = ("train", "tagged", "val", "test")
SPLIT_MODES = ("benchmark", "use_all_boxes")


@dataclass(frozen=True)
class SplitParams:
    """params.yaml `split`: fractions of the images per split (they sum to 1)."""

    mode: str                  # benchmark | use_all_boxes (module docstring)
    seed: int
    train: float
    tagged: float
    val: float
    test: float
    use_source_splits: bool

    def __post_init__(self) -> None:
        check_choice(self, "mode", SPLIT_MODES)
        fractions = {name: float(getattr(self, name)) for name in SPLIT_NAMES}
        if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")

    def fractions(self) -> dict[str, float]:
        """The share of the boxed images each split receives; `use_all_boxes` adds `tagged`'s to `train`."""
        fractions = {name: float(getattr(self, name)) for name in SPLIT_NAMES}
        if self.mode == "use_all_boxes":
            fractions["train"] += fractions["tagged"]
            fractions["tagged"] = 0.0
        return fractions


def stratum_keys(tags: list[tuple[str, ...]]) -> list[str]:
    frequency = Counter(tag for image_tags in tags for tag in set(image_tags))
    return [min(t, key=lambda tag: (frequency[tag], tag)) if t else "clean" for t in tags]


def deal(order: list[int], fractions: dict[str, float]) -> dict[int, str]:
    """Give each index in `order` to the split with the largest deficit against its fraction."""
    names = [name for name, fraction in fractions.items() if fraction > 0]
    if not names:
        raise StageError("params.yaml: split: no split left to receive images")
    assigned = {name: 0 for name in names}
    result = {}
    for position, index in enumerate(order, start=1):
        # ties go to the earlier split in SPLIT_NAMES order, so the result is fully deterministic
        best = max(names, key=lambda n: fractions[n] * position - assigned[n])
        assigned[best] += 1
        result[index] = best
    return result


def assign_splits(
    tags: list[tuple[str, ...]], source_splits: list[str | None], params: SplitParams
) -> list[str]:
    """One split name per image (same order as `tags`), stratified by rarest tag."""
    strata = stratum_keys(tags)
    fractions = params.fractions()
    fixed: dict[int, str] = {}
    if params.use_source_splits:
        fixed = {i: s for i, s in enumerate(source_splits) if s in ("val", "test")}
        for name in set(fixed.values()):
            fractions[name] = 0.0
        total = sum(fractions.values())
        if fixed and total == 0:
            fractions = {"train": 1.0}
        elif fixed:
            fractions = {name: f / total for name, f in fractions.items()}
    rng = np.random.default_rng(params.seed)
    order: list[int] = []
    for stratum in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == stratum and i not in fixed]
        order.extend(members[j] for j in rng.permutation(len(members)))
    dealt = deal(order, fractions)
    return [fixed.get(i) or dealt[i] for i in range(len(tags))]
