import random

import pytest

from sdm import mlrc_splits
from sdm.data.datasets import FileImageDataset
from sdm.data.splits import Fold, Splits, dataset_splits, half_split


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


def test_sop_class_count_gives_the_mlrc_sizes():
    classes = list(range(1, 22635))  # SOP's class ids 1..22634
    splits = mlrc_splits(classes)
    assert splits.test == span(11318, 22634)  # int(22634 * 0.5) = 11317 classes
    assert [(len(f.train), len(f.val)) for f in splits.folds] == [(8488, 2829)] * 4
    assert splits == reference_splits(classes)


def file_dataset(labels, partition=None, name="x"):
    """A FileImageDataset with these labels over paths that need not exist."""
    return FileImageDataset(
        [f"images/{i}.jpg" for i in range(len(labels))], labels, name, partition=partition
    )


@pytest.mark.parametrize("classes", [range(200), range(1, 197), range(1, 22635)])
def test_dataset_splits_without_a_partition_are_the_mlrc_splits(classes):
    labels = [c for c in classes for _ in range(2)]
    assert dataset_splits(file_dataset(labels)) == mlrc_splits(classes)


def test_dataset_splits_with_a_partition_keep_its_test_classes_and_rotate_the_rest():
    labels = [4, 4, 10, 11, 12, 13, 14, 15, 1, 2, 3, 3, 20]
    partition = ["query", "gallery"] + ["train"] * 10 + ["gallery"]
    splits = dataset_splits(file_dataset(labels, partition))
    # trainval 1, 2, 3, 10..15 (9 classes); val int(9 * 0.25) = 2; folds start at 0, 2, 4, 6
    assert splits.test == [4, 20]
    assert splits.folds == [
        Fold(train=[1, 2, 3, 10, 11, 12, 13], val=[14, 15]),
        Fold(train=[3, 10, 11, 12, 13, 14, 15], val=[1, 2]),
        Fold(train=[1, 2, 11, 12, 13, 14, 15], val=[3, 10]),
        Fold(train=[1, 2, 3, 10, 13, 14, 15], val=[11, 12]),
    ]


def test_dataset_splits_refuse_a_partition_that_mixes_or_lacks_classes():
    mixed = file_dataset([1, 1, 2, 3, 4, 5, 6], ["train", "query"] + ["train"] * 5)
    with pytest.raises(ValueError, match=r"both train and query/gallery images, e.g. \[1\]"):
        dataset_splits(mixed)
    with pytest.raises(ValueError, match="3 train classes and 1 query/gallery classes"):
        dataset_splits(file_dataset([1, 2, 3, 4], ["train"] * 3 + ["gallery"]))
    with pytest.raises(ValueError, match="8 train classes and 0 query/gallery classes"):
        dataset_splits(file_dataset(range(8), ["train"] * 8))


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
