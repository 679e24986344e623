"""A small CNN trunk for 32x32 grayscale glyphs, quick enough to train on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8


class SmallCNN(nn.Module):
    """Blocks of 3x3 conv -> GroupNorm -> ReLU -> 2x2 max pool, then global average pooling.

    GroupNorm normalizes each image on its own, so a network trained from scratch is
    normalized in training although the protocol keeps BatchNorm layers frozen, and SDM's
    T passes batched as one forward equal T sequential passes exactly.

    Input (B, in_channels, H, W), H and W at least 2**len(widths) (32 for the default five
    blocks, which pool a 32x32 glyph down to 1x1); output (B, widths[-1]), 256 by default.
    ``feature_dropout`` is the rate of an ``nn.Dropout2d`` on the first convolution's output,
    before its normalization (SDM's trunk perturbation); its rate can be changed later through
    ``self.feature_dropout.p``.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (8, 16, 32, 64, 256),
                 feature_dropout: float = 0.0):
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        channels = [in_channels, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(min(GROUPS, c), c) for c in widths)
        self.feature_dropout = nn.Dropout2d(feature_dropout)
        self.output_dim = widths[-1]

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """The first convolution: everything before the feature dropout."""
        smallest = 2 ** len(self.convs)
        if min(images.shape[-2:]) < smallest:
            raise ValueError(
                f"the small CNN needs images of at least {smallest}x{smallest} pixels, got "
                f"{images.shape[-2]}x{images.shape[-1]}; set transform.resize and "
                f"transform.crop to {smallest} or more")
        return self.convs[0](images)

    def from_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of the trunk, from the feature dropout on: ``forward = from_stem(stem(.))``."""
        x = self.feature_dropout(x)
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if index > 0:
                x = conv(x)
            x = F.max_pool2d(F.relu(norm(x), inplace=True), 2)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.from_stem(self.stem(images))
