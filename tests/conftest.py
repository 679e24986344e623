"""Shared fixtures: the torch thread count, the tiny CUB tree, and tiny-training configs.

Builders of on-disk datasets live in ``fixtures.py`` (plain functions for any tmp path).
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fixtures import make_cub_tree
from sdm.config import load_config

# Intra-op torch threads of the test session; no test may depend on it (rerun with 2 to check).
THREADS = int(os.environ.get("SDM_TEST_THREADS", "1"))

# A few iterations of the small CNN on the tiny fixtures: enough to exercise everything.
TINY_TRAINING = (
    "dataset.allow_partial=true", "dataset.use_cache=false", "model.trunk=small_cnn",
    "model.pretrained=false", "model.embedding_sizes=[16]",
    "optimizer.trunk_lr=0.001", "optimizer.embedder_lr=0.001",
    "training.batch_size=8", "training.m_per_class=4", "training.iterations_per_epoch=3",
    "training.max_epochs=2", "training.save_interval=1", "training.patience=5",
    "training.folds=[0,1]", "training.num_workers=0", "training.eval_batch_size=16",
    "sdm.passes=2", "sdm.masks=2",
)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """``SDM_TEST_THREADS`` intra-op threads for the session, default 1: on a shared 2-core
    machine more threads only stall each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory) -> Path:
    """A tiny CUB-200-2011 tree (16 classes x 4 images) as the dataset root."""
    return make_cub_tree(tmp_path_factory.mktemp("data"), num_classes=16, per_class=4)


@pytest.fixture(scope="session")
def tiny_overrides() -> Callable[..., list[str]]:
    """``tiny_overrides(root, experiments_root, name, *extra)``: overrides for a tiny run."""

    def overrides(root: Path, experiments: Path | str, name: str, *extra: str) -> list[str]:
        return [f"name={name}", f"experiments_root={experiments}", f"dataset.root={root}",
                *TINY_TRAINING, *extra]

    return overrides


@pytest.fixture
def tiny_config(cub_root, tmp_path, tiny_overrides):
    """``tiny_config(name, *extra)``: a loaded tiny config on ``cub_root`` writing below
    ``tmp_path``."""

    def config(name: str, *extra: str):
        return load_config(overrides=tiny_overrides(cub_root, tmp_path, name, *extra))

    return config
