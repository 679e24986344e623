"""Trained models ready for inference: a fold's best checkpoint, or the concatenation of the
trained folds, with the experiment's own eval transform and input size.

``load_model(experiment_dir, fold=...)`` gives an ``InferenceModel``: one module from images
to L2-normalized embeddings — exactly what ``sdm evaluate`` scores (its separated numbers for a
fold, its concatenated numbers for ``concatenated=True``) — and the transform that turns a PIL
image into its input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sdm import constants as C
from sdm.config import ExperimentConfig
from sdm.data.images import DatasetError
from sdm.engine import build
from sdm.engine.embeddings import concatenated_embeddings
from sdm.engine.experiment import ExperimentFolder
from sdm.inference.errors import InferenceError
from sdm.inference.identity import model_identity
from sdm.models.embedding_model import EmbeddingModel
from sdm.storage import CheckpointError

Transform = Callable[[Image.Image], torch.Tensor]


class InferenceModel(nn.Module):
    """Images -> L2-normalized embeddings, in eval mode.

    ``forward(images)`` takes float32 images (B, *input_shape), as ``transform`` makes them,
    and returns float32 (B, D): with one fold model its normalized embeddings, with several
    the concatenation of each one's normalized embeddings, normalized again
    (``concatenated_embeddings``, as the concatenated evaluation does).

    Attributes: ``transform`` (PIL image -> input tensor), ``input_shape`` (channels, height,
    width), ``embedding_dim`` (D), ``config`` (the experiment's config) and ``identity`` (see
    ``sdm.inference.identity``; empty for a model that ``load_model`` did not make).
    """

    def __init__(self, models: Sequence[EmbeddingModel], transform: Transform,
                 input_shape: Sequence[int], config: ExperimentConfig,
                 identity: dict[str, Any] | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.transform = transform
        self.input_shape = tuple(int(n) for n in input_shape)
        self.embedding_dim = sum(int(model.embedder.output_dim) for model in models)
        self.config = config
        self.identity = identity or {}
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = [F.normalize(model(images), dim=1) for model in self.models]
        return outputs[0] if len(outputs) == 1 else concatenated_embeddings(outputs)

    @property
    def device(self) -> torch.device:
        """Where the parameters are (inputs must go there too)."""
        return next(self.parameters()).device


def load_model(
    experiment_dir: str | Path, fold: int | None = None, *, concatenated: bool = False,
    device: str | torch.device | None = None,
) -> tuple[InferenceModel, Transform]:
    """(the eval-mode model, its transform) of a trained experiment.

    ``fold``: that fold's best checkpoint; None takes the lowest trained fold.
    ``concatenated``: every trained fold's best checkpoint, concatenated (not with ``fold``).
    ``device``: where the model runs; None takes the experiment's ``training.device``.
    Raises FileNotFoundError for a folder that is no experiment or has no trained fold,
    InferenceError for a fold that is not trained or whose best checkpoint cannot be read, and
    UserInputError for a device this machine does not have.
    """
    experiment = ExperimentFolder(experiment_dir)
    config = experiment.config
    folds = chosen_folds(experiment, fold, concatenated)
    run_on = (build.resolve_device(config.training.device,
                                   "the experiment's training.device (choose one with --device)")
              if device is None else build.resolve_device(str(device), "--device"))
    models = [_best_model(experiment, config, f) for f in folds]
    transform = build.image_transform(config, train=False)
    shape = experiment_input_shape(config, transform)
    model = InferenceModel(models, transform, shape, config)
    model.identity = model_identity(experiment, config, folds, concatenated, shape,
                                    model.embedding_dim)
    model.to(run_on)
    return model, transform


def _best_model(experiment: ExperimentFolder, config: ExperimentConfig,
                fold: int) -> EmbeddingModel:
    """The model of ``fold``'s best checkpoint; InferenceError saying what to do when that
    file cannot be read."""
    path = experiment.checkpoint(fold, C.BEST_CHECKPOINT)
    try:
        return build.load_checkpoint_model(config, path)
    except CheckpointError as error:
        raise InferenceError(
            f"{error}; choose another trained fold with --fold, or train fold {fold} again "
            f"(delete {experiment.fold(fold)} and run sdm train with the experiment's "
            "config)") from error


def chosen_folds(experiment: ExperimentFolder, fold: int | None, concatenated: bool) -> list[int]:
    """The folds whose best checkpoints make the model (see ``load_model``)."""
    trained = experiment.trained_folds(list(range(C.NUM_FOLDS)))
    if concatenated:
        if fold is not None:
            raise InferenceError("give a fold or ask for the concatenation, not both")
        return trained
    if fold is None:
        return trained[:1]
    if fold not in trained:
        raise InferenceError(
            f"fold {fold} of {experiment.path} has no {C.BEST_CHECKPOINT}; trained folds: "
            f"{', '.join(map(str, trained))} (train it first, or choose one of these)")
    return [fold]


def experiment_input_shape(config: ExperimentConfig, transform: Transform) -> tuple[int, int, int]:
    """(channels, height, width) of an image after the experiment's eval transform.

    With a configured ``transform.crop`` every image comes out at that square size, read off
    the transform itself. Without one (the small CNN keeps the images' own size) it is the size
    of the first image of the experiment's dataset, which then has to be loadable.
    """
    if config.transform.crop is not None:
        crop = int(config.transform.crop)
        return tuple(transform(Image.new("RGB", (crop, crop))).shape)  # type: ignore[return-value]
    try:
        dataset, _ = build.load_experiment_dataset(config)
        return tuple(transform(dataset.load_image(0)).shape)  # type: ignore[return-value]
    except (DatasetError, OSError) as error:
        raise InferenceError(
            f"experiment {config.name!r} takes images at their own size (transform.crop is "
            f"unset), which is read from its dataset {config.dataset.name!r}; that failed: "
            f"{error}") from error
