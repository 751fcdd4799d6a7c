from collections import Counter

import pytest

from core.errors import StageError
from core.params import from_dict
from detection.splits import SplitParams, assign_splits, deal, stratum_keys
from tests.support import repo_params, settings


FRACTIONS = {"train": 0.15, "tagged": 0.55, "val": 0.15, "test": 0.15}  # the demo's before its test split grew


def split(**overrides) -> SplitParams:
    """The demo's split settings with the fractions above and `overrides`."""
    return settings(SplitParams, "split", **{**repo_params()["split"], **FRACTIONS, **overrides})


def _tags(n_bottle=60, n_can=30, n_butt=10, n_clean=20):
    return [("bottle",)] * n_bottle + [("bottle", "can")] * n_can + [("cigarette_butt",)] * n_butt + [()] * n_clean


def test_stratum_is_rarest_tag_or_clean():
    tags = [("bottle", "can"), ("bottle",), ("bottle",), ()]
    assert stratum_keys(tags) == ["can", "bottle", "bottle", "clean"]


def test_deal_matches_fractions_within_one():
    fractions = {"train": 0.15, "tagged": 0.55, "val": 0.15, "test": 0.15}
    dealt = deal(list(range(200)), fractions)
    counts = Counter(dealt.values())
    for name, fraction in fractions.items():
        assert abs(counts[name] - fraction * 200) <= 1


def test_splits_are_deterministic_and_seed_dependent():
    tags = _tags()
    params = split(seed=3)
    first = assign_splits(tags, [None] * len(tags), params)
    assert first == assign_splits(tags, [None] * len(tags), params)
    assert first != assign_splits(tags, [None] * len(tags), split(seed=4))


def test_every_stratum_is_spread_in_proportion():
    tags = _tags(n_bottle=100, n_can=40, n_butt=40, n_clean=40)
    splits = assign_splits(tags, [None] * len(tags), split(train=0.25, tagged=0.25, val=0.25, test=0.25))
    for stratum in ("bottle", "can", "cigarette_butt", "clean"):
        members = [s for s, k in zip(splits, stratum_keys(tags)) if k == stratum]
        counts = Counter(members)
        for name in ("train", "tagged", "val", "test"):
            assert abs(counts[name] - len(members) / 4) <= 1, (stratum, counts)


def test_source_val_and_test_are_honoured_and_train_is_divided():
    tags = _tags()
    source = ["val" if i % 10 == 0 else "test" if i % 10 == 1 else "train" for i in range(len(tags))]
    splits = assign_splits(tags, source, split())
    for s, src in zip(splits, source):
        if src in ("val", "test"):
            assert s == src
        else:
            assert s in ("train", "tagged")
    trainish = Counter(s for s, src in zip(splits, source) if src == "train")
    # train : tagged keeps the 0.15 : 0.55 ratio of the params
    assert abs(trainish["train"] / (trainish["train"] + trainish["tagged"]) - 0.15 / 0.70) < 0.02


def test_source_splits_ignored_when_disabled():
    tags = _tags()
    source = ["test"] * len(tags)
    splits = assign_splits(tags, source, split(use_source_splits=False))
    assert set(splits) == {"train", "tagged", "val", "test"}


def test_fractions_must_sum_to_one():
    with pytest.raises(StageError, match="split: split fractions must be >= 0 and sum to 1"):
        from_dict(SplitParams, {**repo_params()["split"], "train": 0.5, "tagged": 0.5, "val": 0.5, "test": 0.0},
                  where="params.yaml: split")


def test_use_all_boxes_gives_the_tagged_share_to_train_and_keeps_val_and_test():
    tags = _tags()
    benchmark = assign_splits(tags, [None] * len(tags), split())
    all_boxes = assign_splits(tags, [None] * len(tags), split(mode="use_all_boxes"))
    counts = Counter(all_boxes)
    assert "tagged" not in counts and abs(counts["train"] - 0.70 * len(tags)) <= 1
    assert counts["val"] == Counter(benchmark)["val"] and counts["test"] == Counter(benchmark)["test"]
    assert split(mode="use_all_boxes").fractions() == pytest.approx({"train": 0.7, "tagged": 0.0, "val": 0.15,
                                                                      "test": 0.15})
    # with the source's val and test honoured, the source's train images all keep their boxes
    source = ["val"] * 20 + ["test"] * 20 + ["train"] * (len(tags) - 40)
    assert Counter(assign_splits(tags, source, split(mode="use_all_boxes"))) == {"train": len(tags) - 40, "val": 20,
                                                                                 "test": 20}


def test_an_unknown_split_mode_names_the_choices():
    with pytest.raises(StageError, match="split.mode: 'all' is not one of benchmark, use_all_boxes"):
        from_dict(SplitParams, {**repo_params()["split"], "mode": "all"}, where="params.yaml: split")
