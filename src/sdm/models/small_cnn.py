"""A small CNN trunk for 32x32 grayscale glyphs, quick enough to train on a CPU."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sdm.models.stages import POOLED, STEM, FeatureDropout, Stage, StagedTrunk

GROUPS = 8


class SmallCNN(StagedTrunk, nn.Module):
    """Blocks of 3x3 conv -> GroupNorm -> ReLU -> 2x2 max pool, then global average pooling.

    GroupNorm normalizes each image on its own, so a network trained from scratch is
    normalized in training although the protocol keeps BatchNorm layers frozen, and SDM's
    T passes batched as one forward equal T sequential passes exactly.

    Input (B, in_channels, H, W), H and W at least 2**len(widths) (32 for the default five
    blocks, which pool a 32x32 glyph down to 1x1); output (B, widths[-1]), 256 by default.
    Stages (the points of ``perturb_at``): ``stem`` (the first convolution, before its
    normalization: the paper's place, the default), ``block1`` .. ``block<n>`` (each block's
    pooled output; ``block1`` is the first convolution's normalization and pooling) and
    ``pooled``. ``feature_dropout`` is the rate of the ``FeatureDropout`` at that point (SDM's
    trunk perturbation); its rate can be changed later through ``self.feature_dropout.p``.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (8, 16, 32, 64, 256),
                 feature_dropout: float = 0.0, perturb_at: str = STEM):
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        channels = [in_channels, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(min(GROUPS, c), c) for c in widths)
        self.feature_dropout = FeatureDropout(feature_dropout)
        self.perturb_at = perturb_at
        self.output_dim = widths[-1]

    def stages(self) -> list[Stage]:
        blocks = [Stage(f"block{index + 1}", partial(self._block, index))
                  for index in range(len(self.convs))]
        return [Stage(STEM, self._stem), *blocks, Stage(POOLED, _pool)]

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        smallest = 2 ** len(self.convs)
        if min(images.shape[-2:]) < smallest:
            raise ValueError(
                f"the small CNN needs images of at least {smallest}x{smallest} pixels, got "
                f"{images.shape[-2]}x{images.shape[-1]}; set transform.resize and "
                f"transform.crop to {smallest} or more")
        return self.convs[0](images)

    def _block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index > 0:
            x = self.convs[index](x)
        return F.max_pool2d(F.relu(self.norms[index](x), inplace=True), 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(images))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
