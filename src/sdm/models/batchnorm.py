"""Frozen BatchNorm, as in MLRC: running statistics stay fixed while everything else trains."""

from __future__ import annotations

from torch import nn

_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer inside ``module`` in eval mode.

    Frozen layers normalize with their running statistics and no longer update them; their
    affine weight and bias keep ``requires_grad`` as it was, so they still train. Other layers
    (dropout included) keep their mode. A later ``module.train()`` unfreezes them again.
    """
    for layer in module.modules():
        if isinstance(layer, _BATCHNORM_TYPES):
            layer.eval()


def train_with_frozen_batchnorm(module: nn.Module) -> None:
    """``module.train()`` then ``freeze_batchnorm(module)``; call it at the start of each epoch."""
    module.train()
    freeze_batchnorm(module)
