"""Trunk + embedder as one module, with SDM's T perturbed forward passes."""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingModel(nn.Module):
    """``embedder(trunk(images))``: unnormalized embeddings of shape (B, D).

    Checkpoints keep ``trunk`` and ``embedder`` state dicts separately, under the names the
    paper's released ``trunk_best<E>.pth`` / ``embedder_best<E>.pth`` files use.
    """

    def __init__(self, trunk: nn.Module, embedder: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.embedder = embedder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedder(self.trunk(images))

    def perturbed_passes(self, images: torch.Tensor, passes: int, batched: bool) -> torch.Tensor:
        """Embeddings of ``passes`` forward passes of the same batch: shape (T, B, D).

        With BatchNorm frozen each image is processed independently, so one forward of the
        T*B images (``batched``) gives the same results as T sequential passes, with
        independent feature-dropout masks either way.
        """
        if batched:
            stacked = images.repeat(passes, *([1] * (images.dim() - 1)))
            return self(stacked).view(passes, images.shape[0], -1)
        return torch.stack([self(images) for _ in range(passes)])
