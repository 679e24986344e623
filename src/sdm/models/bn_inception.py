"""BN-Inception (Inception with batch normalization, Ioffe & Szegedy 2015) as a feature trunk.

Parameter and buffer names and shapes are those of the widely used ``pretrainedmodels``
``bninception`` (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``, ...,
``last_linear``; listed in ``sdm/resources/bn_inception_params.json``), so its ImageNet weights
(``bn_inception-52deb4733.pth``) and checkpoints saved from that model load unchanged.

Input: BGR images, values 0-255 minus the mean (104, 117, 128), std 1 (the "bninception"
input convention). Output: (B, 1024) globally average-pooled features, or (B, num_classes)
logits when built with a classifier. 224x224 and 227x227 inputs both end in a 7x7 map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sdm.models.stages import POOLED, STEM, FeatureDropout, Stage, StagedTrunk

FEATURE_DIM = 1024


@dataclass(frozen=True)
class _InceptionSpec:
    """Output channels of each branch of one inception block.

    ``reduction`` blocks have no 1x1 and no pool-projection branch: their 3x3 and second
    double-3x3 convolutions have stride 2 and their pool branch is a stride-2 max pool whose
    output is concatenated as it is. Other blocks pool with stride 1 (``pool``: "avg" or
    "max") and project the pooled map with a 1x1 convolution.
    """

    name: str
    one_by_one: int
    reduce: int
    three: int
    double_reduce: int
    double: int
    pool: str
    pool_proj: int
    reduction: bool = False


_BLOCKS = (
    _InceptionSpec("inception_3a", 64, 64, 64, 64, 96, "avg", 32),
    _InceptionSpec("inception_3b", 64, 64, 96, 64, 96, "avg", 64),
    _InceptionSpec("inception_3c", 0, 128, 160, 64, 96, "max", 0, reduction=True),
    _InceptionSpec("inception_4a", 224, 64, 96, 96, 128, "avg", 128),
    _InceptionSpec("inception_4b", 192, 96, 128, 96, 128, "avg", 128),
    _InceptionSpec("inception_4c", 160, 128, 160, 128, 160, "avg", 128),
    _InceptionSpec("inception_4d", 96, 128, 192, 160, 192, "avg", 128),
    _InceptionSpec("inception_4e", 0, 128, 192, 192, 256, "max", 0, reduction=True),
    _InceptionSpec("inception_5a", 352, 192, 320, 160, 224, "avg", 128),
    _InceptionSpec("inception_5b", 352, 192, 320, 192, 224, "max", 128),
)
_STEM_CHANNELS = 192


def side_fits(side: int) -> bool:
    """Whether an image side length passes through every block.

    The stride-2 blocks (3c, 4e) concatenate a strided 3x3 convolution (output floor((n-1)/2)+1)
    with a ceil-mode 3x3 max pool (output ceil((n-3)/2)+1); the two agree only for even n.
    """
    after_conv1 = (side - 1) // 2 + 1
    after_pool1 = (after_conv1 - 2) // 2 + 1
    into_3c = (after_pool1 - 2) // 2 + 1
    into_4e = (into_3c - 1) // 2 + 1
    return into_3c >= 2 and into_3c % 2 == 0 and into_4e % 2 == 0


def _nearest_fitting(side: int) -> list[int]:
    below = next((n for n in range(side - 1, 0, -1) if side_fits(n)), None)
    above = next(n for n in range(side + 1, side + 10_000) if side_fits(n))
    return [n for n in (below, above) if n is not None]


class BNInception(StagedTrunk, nn.Module):
    """BN-Inception trunk; ``num_classes=None`` leaves out the classifier ``last_linear``.

    Stages (the points of ``perturb_at``): ``stem`` (the first 7x7 convolution, before its
    BatchNorm: the paper's place, the default), ``conv2`` (that BatchNorm, pooling and the
    3x3 convolutions), one stage per inception block (``inception_3a`` .. ``inception_5b``,
    the last one's output being the final feature map) and ``pooled``. ``feature_dropout`` is
    the rate of the ``FeatureDropout`` at that point (SDM's trunk perturbation); 0 makes it
    the identity. It has no parameters, follows the module's train/eval mode, and its rate can
    be changed later through ``self.feature_dropout.p``.
    """

    def __init__(self, num_classes: int | None = None, feature_dropout: float = 0.0,
                 perturb_at: str = STEM):
        super().__init__()
        self.feature_dropout = FeatureDropout(feature_dropout)
        self.perturb_at = perturb_at
        self._conv_bn("conv1_7x7_s2", 3, 64, kernel_size=7, stride=2, padding=3)
        self._conv_bn("conv2_3x3_reduce", 64, 64, kernel_size=1)
        self._conv_bn("conv2_3x3", 64, _STEM_CHANNELS, kernel_size=3, padding=1)
        in_channels = _STEM_CHANNELS
        for spec in _BLOCKS:
            in_channels = self._add_inception(spec, in_channels)
        if in_channels != FEATURE_DIM:
            raise AssertionError(f"block table gives {in_channels} channels, not {FEATURE_DIM}")
        self.last_linear = None if num_classes is None else nn.Linear(FEATURE_DIM, num_classes)

    def _conv_bn(self, name: str, in_channels: int, out_channels: int, **conv_args) -> None:
        """Register convolution ``name`` and its BatchNorm ``name_bn``."""
        self.add_module(name, nn.Conv2d(in_channels, out_channels, **conv_args))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(out_channels))

    def _add_inception(self, spec: _InceptionSpec, in_channels: int) -> int:
        """Register the layers of one block; return its number of output channels."""
        stride = 2 if spec.reduction else 1
        name = spec.name
        if spec.one_by_one:
            self._conv_bn(f"{name}_1x1", in_channels, spec.one_by_one, kernel_size=1)
        self._conv_bn(f"{name}_3x3_reduce", in_channels, spec.reduce, kernel_size=1)
        self._conv_bn(f"{name}_3x3", spec.reduce, spec.three, kernel_size=3, stride=stride,
                      padding=1)
        self._conv_bn(f"{name}_double_3x3_reduce", in_channels, spec.double_reduce, kernel_size=1)
        self._conv_bn(f"{name}_double_3x3_1", spec.double_reduce, spec.double, kernel_size=3,
                      padding=1)
        self._conv_bn(f"{name}_double_3x3_2", spec.double, spec.double, kernel_size=3,
                      stride=stride, padding=1)
        if spec.pool_proj:
            self._conv_bn(f"{name}_pool_proj", in_channels, spec.pool_proj, kernel_size=1)
            pool_channels = spec.pool_proj
        else:
            pool_channels = in_channels
        return spec.one_by_one + spec.three + spec.double + pool_channels

    def _conv_bn_relu(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)), inplace=True)

    def _inception(self, spec: _InceptionSpec, x: torch.Tensor) -> torch.Tensor:
        name = spec.name
        branches = []
        if spec.one_by_one:
            branches.append(self._conv_bn_relu(f"{name}_1x1", x))
        three = self._conv_bn_relu(f"{name}_3x3_reduce", x)
        branches.append(self._conv_bn_relu(f"{name}_3x3", three))
        double = self._conv_bn_relu(f"{name}_double_3x3_reduce", x)
        double = self._conv_bn_relu(f"{name}_double_3x3_1", double)
        branches.append(self._conv_bn_relu(f"{name}_double_3x3_2", double))
        if spec.reduction:
            branches.append(F.max_pool2d(x, 3, stride=2, ceil_mode=True))
        else:
            if spec.pool == "avg":
                pooled = F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
            else:
                pooled = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
            branches.append(self._conv_bn_relu(f"{name}_pool_proj", pooled))
        return torch.cat(branches, dim=1)

    def stages(self) -> list[Stage]:
        blocks = [Stage(spec.name, partial(self._inception, spec)) for spec in _BLOCKS]
        return [Stage(STEM, self._stem), Stage("conv2", self._conv2), *blocks,
                Stage(POOLED, _pool)]

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        for size in images.shape[-2:]:
            if not side_fits(size):
                raise ValueError(
                    f"BN-Inception cannot take a {tuple(images.shape[-2:])} image: side {size} "
                    f"leaves odd-sized maps at a stride-2 block. Nearest sides that work: "
                    f"{_nearest_fitting(size)} (224 and 227 do).")
        return self.conv1_7x7_s2(images)

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1_7x7_s2_bn(x), inplace=True)
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = self._conv_bn_relu("conv2_3x3_reduce", x)
        x = self._conv_bn_relu("conv2_3x3", x)
        return F.max_pool2d(x, 3, stride=2, ceil_mode=True)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last inception block's (B, 1024, h, w) map, without the
        feature dropout."""
        x = images
        for stage in self.stages()[:-1]:
            x = stage.run(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.suffix(self.prefix(images))
        return pooled if self.last_linear is None else self.last_linear(pooled)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
