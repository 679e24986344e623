"""Class-disjoint splits: MLRC (test half + cross-validation folds) and a plain half split.

Splits are over class ids only; which images belong to a class is the dataset's business.
`dataset_splits` picks the split of a dataset: MLRC's, or for a dataset with an official
partition (In-Shop) its test items plus MLRC-style folds of its train items.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdm.constants import INSHOP_TRAIN, NUM_FOLDS, TEST_FRACTION, VAL_FRACTION
from sdm.errors import UserInputError

if TYPE_CHECKING:
    from sdm.data.base import ImageDataset


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: sorted train and validation class ids."""

    train: list[int]
    val: list[int]

    def __getitem__(self, key: str) -> list[int]:
        """``fold["train"]`` / ``fold["val"]``, as in the dicts of earlier versions."""
        return getattr(self, _field(self, key))


@dataclass(frozen=True)
class Splits:
    """Class-disjoint splits: sorted test class ids and the train/val folds."""

    test: list[int]
    folds: list[Fold]

    def __getitem__(self, key: str) -> Any:
        """``splits["test"]`` / ``splits["folds"]``, as in the dicts of earlier versions."""
        return getattr(self, _field(self, key))


def _field(instance: Any, key: str) -> str:
    if key not in instance.__dataclass_fields__:
        raise KeyError(key)
    return key

MIN_MLRC_CLASSES = 8  # the smallest n with at least one validation class at val_fraction 0.125


def mlrc_splits(
    classes: Iterable[int],
    num_folds: int = NUM_FOLDS,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> Splits:
    """Split class ids into MLRC test classes and `num_folds` train/val folds.

    With the n classes sorted: test = the last int(n * test_fraction) classes, trainval = the
    others. Each fold has val = int(n * val_fraction) and train = n - val - test classes.
    Fold p starts at index floor(p * |trainval| / num_folds) of trainval, takes `train`
    classes then `val` classes, wrapping around. All lists are sorted; ``splits.test``,
    ``splits.folds[p].train`` and ``.val`` (also readable as ``splits["folds"][p]["train"]``).
    """
    ordered = _sorted_classes(classes)
    num_classes = len(ordered)
    if num_classes < MIN_MLRC_CLASSES:
        raise UserInputError(
            f"the MLRC split needs at least {MIN_MLRC_CLASSES} classes, got {num_classes}; "
            "use half_split for a plain train/test split of fewer classes"
        )
    num_val = int(num_classes * val_fraction)
    num_test = int(num_classes * test_fraction)
    num_train = num_classes - num_val - num_test
    if min(num_val, num_test, num_train) < 1:
        raise UserInputError(
            f"{num_classes} classes with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} give {num_train} train, {num_val} val and "
            f"{num_test} test classes; each must be at least 1"
        )

    trainval = ordered[: num_classes - num_test]
    test = ordered[num_classes - num_test :]
    return Splits(test=test, folds=rotating_folds(trainval, num_val, num_folds, test))


def dataset_splits(dataset: ImageDataset, num_folds: int = NUM_FOLDS) -> Splits:
    """The splits a dataset is trained and tested with.

    Without a `partition`: `mlrc_splits(dataset.classes, num_folds)`. With one (In-Shop):
    test = the classes of the query and gallery images; the train images' classes
    (trainval, sorted) are rotated into `num_folds` folds by the MLRC rule, with
    val = int(|trainval| * VAL_FRACTION / (1 - TEST_FRACTION)) classes (the share MLRC's
    val has of its trainval) and train = the others.
    """
    if dataset.partition is None:
        return mlrc_splits(dataset.classes, num_folds)
    is_train = dataset.partition == INSHOP_TRAIN
    trainval = sorted(set(dataset.labels[is_train].tolist()))
    test = sorted(set(dataset.labels[~is_train].tolist()))
    val_share = VAL_FRACTION / (1 - TEST_FRACTION)
    num_val = int(len(trainval) * val_share)
    if not test or num_val < 1:
        raise UserInputError(
            f"dataset {dataset.name!r} has {len(trainval)} train classes and {len(test)} "
            f"query/gallery classes; the folds need int(train classes * {val_share:g}) >= 1 "
            "val classes and the test at least one class"
        )
    shared = sorted(set(trainval) & set(test))
    if shared:
        raise UserInputError(
            f"dataset {dataset.name!r} has classes with both train and query/gallery images, "
            f"e.g. {shared[:5]}; its partition must keep the classes apart"
        )
    return Splits(test=test, folds=rotating_folds(trainval, num_val, num_folds, test))


def rotating_folds(
    trainval: list[int], num_val: int, num_folds: int, test: list[int]
) -> list[Fold]:
    """MLRC's folds of the sorted class ids `trainval` (disjoint from the sorted `test`).

    Fold p starts at index floor(p * |trainval| / num_folds), takes |trainval| - num_val
    train classes then num_val val classes, wrapping around.
    """
    if num_folds < 1:
        raise ValueError(f"num_folds must be at least 1, got {num_folds}")
    num_train = len(trainval) - num_val
    folds = []
    for fold in range(num_folds):
        start = fold * len(trainval) // num_folds
        rotated = trainval[start:] + trainval[:start]
        train = sorted(rotated[:num_train])
        val = sorted(rotated[num_train:])
        _assert_disjoint(train=train, val=val, test=test)
        folds.append(Fold(train=train, val=val))
    return folds


def half_split(classes: Iterable[int]) -> dict[str, list[int]]:
    """Split sorted class ids into {"train": first half, "test": second half}.

    The test half has int(n / 2) classes, as in `mlrc_splits`; train has the rest.
    """
    ordered = _sorted_classes(classes)
    if len(ordered) < 2:
        raise ValueError(f"a train/test split needs at least 2 classes, got {len(ordered)}")
    num_test = len(ordered) // 2
    train = ordered[: len(ordered) - num_test]
    test = ordered[len(ordered) - num_test :]
    _assert_disjoint(train=train, test=test)
    return {"train": train, "test": test}


def _sorted_classes(classes: Iterable[int]) -> list[int]:
    values = [int(c) for c in classes]
    unique = sorted(set(values))
    if len(unique) != len(values):
        raise ValueError("class ids must be unique; pass each class once (e.g. dataset.classes)")
    return unique


def _assert_disjoint(**parts: list[int]) -> None:
    seen: set[int] = set()
    for name, part in parts.items():
        overlap = seen.intersection(part)
        assert not overlap, f"split part {name!r} shares classes {sorted(overlap)} with another"
        seen.update(part)
