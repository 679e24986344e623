"""Config -> objects: the one place where an experiment's parts are built.

Datasets with their transforms, the model, the (SDM-wrapped) loss, the miner, the
optimizers and the sampler of a fold, and models read back from checkpoints. The fold loop,
evaluation and the commands take their objects from here and build nothing themselves.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler

from sdm import storage
from sdm.config import ExperimentConfig, without_pretrained_weights
from sdm.constants import RESIZE
from sdm.data.datasets import ImageDataset, load_dataset
from sdm.data.splits import Splits, dataset_splits
from sdm.data.transforms import build_transform
from sdm.engine.precision import TrainingPrecision, training_precision
from sdm.errors import UserInputError
from sdm.loss_registry import build_loss, build_miner
from sdm.models.embedder import Embedder
from sdm.models.embedding_model import EmbeddingModel
from sdm.models.trunks import build_trunk, input_convention

DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")


def resolve_device(name: str, source: str = "training.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; else the device ``name`` when this machine
    has it (see ``check_device``; ``source`` names the setting in its message)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name, source)
    return torch.device(name)


def check_device(device: str, source: str) -> None:
    """UserInputError, prefixed with ``source`` (e.g. ``--devices``), unless ``device`` is
    ``cpu``, ``mps`` when available, or ``cuda`` / ``cuda:N`` with N below
    ``torch.cuda.device_count()``; for a missing CUDA device it names the available ones."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise UserInputError(f"{source}: unknown device {device!r}; "
                             "expected cpu, cuda, cuda:N or mps")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"{source}: mps is not available on this machine")
    if device.startswith("cuda"):
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            available = (", ".join(f"cuda:{i}" for i in range(count)) if count
                         else "none (no CUDA device is visible)")
            raise UserInputError(f"{source}: {device} does not exist; available CUDA "
                                 f"devices: {available}")


def build_precision(config: ExperimentConfig, device: torch.device) -> TrainingPrecision:
    """The training precision plan of ``config.training`` on ``device`` (see ``precision``)."""
    training = config.training
    return training_precision(device, mixed_precision=training.mixed_precision,
                              amp_dtype=training.amp_dtype,
                              channels_last=training.channels_last, compile=training.compile)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy (also PML's sampler, which draws from NumPy) and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----- data ------------------------------------------------------------------------------


def load_experiment_dataset(config: ExperimentConfig) -> tuple[ImageDataset, Splits]:
    """The configured dataset (no transform) and its class splits; a resized cache is used
    only when it was built at the configured ``transform.resize``."""
    dataset = load_dataset(
        config.dataset.name, dataset_root=config.dataset.root, path=config.dataset.path,
        allow_partial=config.dataset.allow_partial, use_cache=config.dataset.use_cache,
        cache_size=config.transform.resize or RESIZE)
    return dataset, dataset_splits(dataset)


def image_transform(config: ExperimentConfig, train: bool) -> Callable[[Any], torch.Tensor]:
    """The trunk's train or eval pipeline at the configured ``transform`` sizes."""
    return build_transform(input_convention(config.model.trunk), train,
                           config.transform.resize, config.transform.crop)


def fold_datasets(config: ExperimentConfig, dataset: ImageDataset, splits: Splits,
                  fold: int) -> tuple[ImageDataset, ImageDataset]:
    """(train classes with the train transform, validation classes with the eval transform)."""
    train = dataset.subset(splits.folds[fold].train).with_transform(image_transform(config, True))
    val = dataset.subset(splits.folds[fold].val).with_transform(image_transform(config, False))
    return train, val


def test_dataset(config: ExperimentConfig, dataset: ImageDataset, splits: Splits) -> ImageDataset:
    """The test classes with the eval transform."""
    return dataset.subset(splits.test).with_transform(image_transform(config, False))


def build_sampler(config: ExperimentConfig, labels: np.ndarray) -> MPerClassSampler:
    """The m-per-class sampler of one epoch (``iterations_per_epoch`` batches) over ``labels``."""
    training = config.training
    return MPerClassSampler(
        labels, m=training.m_per_class, batch_size=training.batch_size,
        length_before_new_iter=training.batch_size * training.iterations_per_epoch)


# ----- model, loss, optimizers -------------------------------------------------------------


def build_model(config: ExperimentConfig) -> EmbeddingModel:
    """Trunk + embedder; the trunk's feature dropout (at ``sdm.perturb_at``) is on only
    with SDM. The trunk is built for the configured crop (a timm ViT's input size)."""
    feature_dropout = config.sdm.feature_dropout if config.sdm.enabled else 0.0
    trunk = build_trunk(config.model.trunk, pretrained=config.model.pretrained,
                        weights_path=config.model.weights_path, feature_dropout=feature_dropout,
                        perturb_at=config.sdm.perturb_at,
                        allow_download=config.model.allow_download,
                        image_size=config.transform.crop)
    embedder = Embedder(trunk.output_dim, list(config.model.embedding_sizes))
    return EmbeddingModel(trunk.module, embedder)


def build_eval_model(config: ExperimentConfig) -> EmbeddingModel:
    """The config's model with SDM's feature dropout off and no pretrained weights loaded
    (its weights come from a checkpoint)."""
    plain = without_pretrained_weights(config)
    plain.sdm.enabled = False
    return build_model(plain)


def sdm_passes(config: ExperimentConfig) -> int | None:
    """Perturbed forward passes per step: ``sdm.passes`` with SDM on, None (one plain pass)
    without."""
    return config.sdm.passes if config.sdm.enabled else None


def batched_passes(config: ExperimentConfig, device: torch.device) -> bool:
    """``sdm.batched_passes``, or when unset: batched on CUDA, one after another elsewhere."""
    configured = config.sdm.batched_passes
    return device.type == "cuda" if configured is None else bool(configured)


def build_fold_loss(config: ExperimentConfig, num_classes: int) -> torch.nn.Module:
    """The configured loss for ``num_classes`` training classes, SDM-wrapped when enabled."""
    return build_loss(config.loss.name, config.loss.params, num_classes=num_classes,
                      embedding_size=config.model.embedding_sizes[-1],
                      sdm=config.sdm if config.sdm.enabled else None)


def build_fold_miner(config: ExperimentConfig) -> Any:
    """The configured miner, or None."""
    return build_miner(config.loss.miner, config.loss.miner_params)


def build_optimizers(
    config: ExperimentConfig, model: EmbeddingModel, loss: torch.nn.Module
) -> dict[str, torch.optim.Optimizer]:
    """RMSprop for trunk and embedder, and for the loss's own parameters when it has any."""
    opt = config.optimizer
    optimizers = {
        "trunk": torch.optim.RMSprop(model.trunk.parameters(), lr=opt.trunk_lr,
                                     weight_decay=opt.weight_decay, momentum=opt.momentum),
        "embedder": torch.optim.RMSprop(model.embedder.parameters(), lr=opt.embedder_lr,
                                        weight_decay=opt.weight_decay, momentum=opt.momentum),
    }
    loss_parameters = [p for p in loss.parameters() if p.requires_grad]
    if loss_parameters:
        optimizers["loss"] = torch.optim.RMSprop(
            loss_parameters, lr=opt.loss_lr, weight_decay=opt.loss_weight_decay,
            momentum=opt.momentum)
    return optimizers


# ----- models from files -------------------------------------------------------------------


def load_checkpoint_model(config: ExperimentConfig, path: str | Path) -> EmbeddingModel:
    """The model saved in one of this project's checkpoints (``trunk`` and ``embedder``)."""
    state = storage.load_checkpoint(path)
    model = build_eval_model(config)
    model.trunk.load_state_dict(state["trunk"])
    model.embedder.load_state_dict(state["embedder"])
    return model


def find_released_models(folder: str | Path) -> list[tuple[Path, Path]]:
    """(trunk, embedder) file pairs of the paper's released models below ``folder``.

    Each subfolder holding ``trunk_best<E>.pth`` and ``embedder_best<E>.pth`` is one fold
    model (sorted by path); when a folder holds several epochs the highest E is taken.
    """
    folder = Path(folder)
    pairs = []
    for trunk_dir in sorted({p.parent for p in folder.rglob("trunk_best*.pth")}):
        epochs = sorted(int(m.group(1)) for p in trunk_dir.glob("trunk_best*.pth")
                        if (m := re.fullmatch(r"trunk_best(\d+)\.pth", p.name)))
        if not epochs:
            continue
        embedder = trunk_dir / f"embedder_best{epochs[-1]}.pth"
        if not embedder.is_file():
            raise FileNotFoundError(
                f"{trunk_dir} has trunk_best{epochs[-1]}.pth but no {embedder.name}")
        pairs.append((trunk_dir / f"trunk_best{epochs[-1]}.pth", embedder))
    if not pairs:
        raise FileNotFoundError(
            f"no released models under {folder}: expected one folder per fold holding "
            "trunk_best<E>.pth and embedder_best<E>.pth")
    return pairs


def load_released_model(config: ExperimentConfig, trunk_file: Path,
                        embedder_file: Path) -> EmbeddingModel:
    """A model from the paper's ``trunk_best<E>.pth`` and ``embedder_best<E>.pth``."""
    model = build_eval_model(config)
    trunk_state = torch.load(trunk_file, map_location="cpu", weights_only=True)
    trunk_state = {k: v for k, v in trunk_state.items() if not k.startswith("last_linear.")}
    model.trunk.load_state_dict(trunk_state)
    model.embedder.load_state_dict(torch.load(embedder_file, map_location="cpu",
                                              weights_only=True))
    return model
