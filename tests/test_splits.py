import random

import pytest

from sdm import mlrc_splits
from sdm.data.splits import Fold, Splits, half_split


def span(first: int, last: int) -> list[int]:
    """Classes first..last, both included, as written in DESIGN's table."""
    return list(range(first, last + 1))


def test_cub_table_of_the_design_exactly():
    splits = mlrc_splits(range(200))
    assert splits["test"] == span(100, 199)
    assert splits["folds"] == [
        Fold(train=span(0, 74), val=span(75, 99)),
        Fold(train=span(25, 99), val=span(0, 24)),
        Fold(train=span(0, 24) + span(50, 99), val=span(25, 49)),
        Fold(train=span(0, 49) + span(75, 99), val=span(50, 74)),
    ]


def test_cars_table_of_the_design_exactly():
    splits = mlrc_splits(range(1, 197))
    assert splits["test"] == span(99, 196)
    assert splits["folds"] == [
        Fold(train=span(1, 74), val=span(75, 98)),
        Fold(train=span(25, 98), val=span(1, 24)),
        Fold(train=span(1, 25) + span(50, 98), val=span(26, 49)),
        Fold(train=span(1, 49) + span(74, 98), val=span(50, 73)),
    ]


def reference_splits(classes: list[int]) -> Splits:
    """Index-by-index restatement of DESIGN section 3, written independently."""
    ordered = sorted(classes)
    n = len(ordered)
    num_val, num_test = int(n * 0.125), int(n * 0.5)
    num_train = n - num_val - num_test
    trainval = ordered[: n - num_test]
    folds = []
    for p in range(4):
        start = int(p / 4 * len(trainval))
        picked = [trainval[(start + j) % len(trainval)] for j in range(num_train + num_val)]
        folds.append(Fold(train=sorted(picked[:num_train]), val=sorted(picked[num_train:])))
    return Splits(test=ordered[n - num_test :], folds=folds)


@pytest.mark.parametrize("num_classes", [8, 9, 13, 17, 31, 64, 101])
def test_other_sizes_match_the_reference_and_partition_the_classes(num_classes):
    classes = [3 * c + 5 for c in range(num_classes)]
    random.Random(num_classes).shuffle(classes)
    splits = mlrc_splits(classes)
    assert splits == reference_splits(classes)
    assert len(splits["test"]) == num_classes // 2
    for fold in splits["folds"]:
        parts = [set(fold["train"]), set(fold["val"]), set(splits["test"])]
        assert sum(len(part) for part in parts) == num_classes
        assert set.union(*parts) == set(classes)
        assert len(fold["val"]) == int(num_classes * 0.125) >= 1


def test_splits_read_as_attributes_or_as_the_dicts_of_earlier_versions():
    splits = mlrc_splits(range(16))
    assert splits["test"] is splits.test and splits["folds"][1]["val"] is splits.folds[1].val
    with pytest.raises(KeyError):
        splits["train"]


def test_each_trainval_class_is_validation_in_at_most_one_fold():
    folds = mlrc_splits(range(200))["folds"]
    val_classes = [c for fold in folds for c in fold["val"]]
    assert sorted(val_classes) == list(range(100))


def test_too_few_or_repeated_classes_are_refused_clearly():
    with pytest.raises(ValueError, match="at least 8 classes, got 7"):
        mlrc_splits(range(7))
    with pytest.raises(ValueError, match="unique"):
        mlrc_splits([0, 0, 1, 2, 3, 4, 5, 6, 7])
    with pytest.raises(ValueError, match="each must be at least 1"):
        mlrc_splits(range(10), test_fraction=0.9)


def test_half_split_takes_the_first_and_second_half():
    assert half_split([4, 0, 3, 1, 2, 5]) == {"train": [0, 1, 2], "test": [3, 4, 5]}
    assert half_split(range(7)) == {"train": [0, 1, 2, 3], "test": [4, 5, 6]}
    with pytest.raises(ValueError, match="at least 2 classes"):
        half_split([1])
