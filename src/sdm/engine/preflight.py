"""Checks made before an experiment folder is written: what would otherwise fail mid-run.

The dataset has been found and split by then (``build.load_experiment_dataset`` raises on a
missing or too small dataset). Here: every configured fold can fill its batches, validation
and test classes have something to retrieve, the loss can be built, the trunk's weights
file is present, and every image file of the splits opens (``dataset.check_images``).
Problems raise ``ConfigError`` (or FileNotFoundError for weights) saying what to change; what
merely deserves attention comes back as warnings.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from sdm.config import ConfigError, ExperimentConfig
from sdm.constants import TEST_FRACTION, VAL_FRACTION
from sdm.data.datasets import ImageDataset
from sdm.data.image_check import describe_unreadable, image_files, unreadable_images
from sdm.data.splits import Splits
from sdm.engine import build
from sdm.models.trunks import find_pretrained_weights


def check_experiment(config: ExperimentConfig, dataset: ImageDataset, splits: Splits) -> list[str]:
    """Raises on anything that would stop the configured folds; returns warnings."""
    warnings = []
    for fold in config.training.folds:
        warnings += check_fold_sampling(config, dataset, splits, fold)
        _check_retrievable(dataset, splits.folds[fold].val, f"fold {fold}'s validation")
    _check_retrievable(dataset, splits.test, "the test")
    _check_loss(config, len(splits.folds[config.training.folds[0]].train))
    find_pretrained_weights(config.model.trunk, config.model.pretrained,
                            config.model.weights_path, config.model.allow_download)
    _check_precision(config)
    check_image_files(config, dataset, splits)
    return warnings


def check_fold_sampling(config: ExperimentConfig, dataset: ImageDataset, splits: Splits,
                        fold: int) -> list[str]:
    """ConfigError when the m-per-class sampler cannot fill ``training.batch_size`` from the
    fold's training classes; a warning when some have fewer than ``m_per_class`` images."""
    batch_size, per_class = config.training.batch_size, config.training.m_per_class
    train, val = splits.folds[fold].train, splits.folds[fold].val
    counts = _images_per_class(dataset)
    if per_class * len(train) < batch_size:
        largest = per_class * len(train)
        needed = -(-batch_size // per_class)
        raise ConfigError(
            f"fold {fold} has {len(train)} training classes "
            f"({sum(counts[c] for c in train)} images) and {len(val)} validation classes "
            f"({sum(counts[c] for c in val)} images) out of {len(dataset.classes)} classes; "
            f"the m-per-class sampler fills a batch of training.batch_size={batch_size} with "
            f"training.m_per_class={per_class} images of each of {needed} classes, so it needs "
            f"at least {needed} training classes. Lower training.batch_size to at most "
            f"{largest} (a multiple of training.m_per_class, e.g. training.batch_size="
            f"{largest}), or lower training.m_per_class, or use a dataset with at least "
            f"{classes_for_training_classes(needed)} classes (the MLRC split trains on "
            f"{len(train)} of {len(dataset.classes)} here)")
    few = sorted(counts[c] for c in train if counts[c] < per_class)
    if not few:
        return []
    return [f"fold {fold}: {len(few)} of {len(train)} training classes have fewer than "
            f"training.m_per_class={per_class} images (the fewest: {few[0]}); the m-per-class "
            "sampler draws the images of such a class with replacement, so a batch may hold "
            "the same image more than once"]


def classes_for_training_classes(needed: int) -> int:
    """The fewest classes whose MLRC split leaves ``needed`` training classes per fold."""
    total = needed
    while total - int(total * VAL_FRACTION) - int(total * TEST_FRACTION) < needed:
        total += 1
    return total


def check_image_files(config: ExperimentConfig, dataset: ImageDataset, splits: Splits) -> None:
    """ConfigError naming the image files that cannot be opened among those of the classes any
    configured split uses (train and validation of ``training.folds``, and the test); prints
    how many were checked and how long it took. Skipped with ``dataset.check_images=false``."""
    if not config.dataset.check_images:
        return
    classes = set(splits.test)
    for fold in config.training.folds:
        classes |= set(splits.folds[fold].train) | set(splits.folds[fold].val)
    paths = image_files(dataset.subset(classes))
    if not paths:
        return
    start = time.perf_counter()
    bad = unreadable_images(paths)
    print(f"checked the headers of {len(paths)} image files in "
          f"{time.perf_counter() - start:.1f} s (dataset.check_images=false skips this)",
          file=sys.stderr)
    if bad:
        raise ConfigError(describe_unreadable(bad, len(paths), "dataset.check_images=false"))


def _images_per_class(dataset: ImageDataset) -> dict[int, int]:
    classes, counts = np.unique(dataset.labels, return_counts=True)
    return dict(zip(classes.tolist(), counts.tolist(), strict=True))


def _check_retrievable(dataset: ImageDataset, classes: list[int], what: str) -> None:
    counts = _images_per_class(dataset)
    if dataset.partition is None and all(counts[c] < 2 for c in classes):
        raise ConfigError(
            f"{what} classes ({len(classes)}) hold one image each: no query has another item "
            "of its class to retrieve, so MAP@R is undefined; every class needs at least two "
            "images")


def _check_loss(config: ExperimentConfig, num_classes: int) -> None:
    try:
        build.build_fold_loss(config, num_classes)
    except (TypeError, ValueError, AssertionError) as error:
        raise ConfigError(f"loss '{config.loss.name}' cannot be built from this config: "
                          f"{error}") from None


def _check_precision(config: ExperimentConfig) -> None:
    try:
        build.build_precision(config, build.resolve_device(config.training.device))
    except ValueError as error:
        raise ConfigError(str(error)) from None
