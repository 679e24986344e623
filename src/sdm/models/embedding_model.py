"""Trunk + embedder as one module, with SDM's T perturbed forward passes."""

from __future__ import annotations

import torch
from torch import nn

from sdm.models.stages import is_staged


class EmbeddingModel(nn.Module):
    """``embedder(trunk(images))``: unnormalized embeddings of shape (B, D).

    Checkpoints keep ``trunk`` and ``embedder`` state dicts separately, under the names the
    paper's released ``trunk_best<E>.pth`` / ``embedder_best<E>.pth`` files use.
    """

    def __init__(self, trunk: nn.Module, embedder: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.embedder = embedder

    def forward(self, images: torch.Tensor, passes: int | None = None, batched: bool = True,
                shared_stem: bool = True) -> torch.Tensor:
        """(B, D) embeddings; with ``passes`` T, ``perturbed_passes``' (T, B, D) instead (one
        entry point, so that a DistributedDataParallel wrapper sees SDM's passes too)."""
        if passes is not None:
            return self.perturbed_passes(images, passes, batched, shared_stem)
        return self.embedder(self.trunk(images))

    def perturbed_passes(self, images: torch.Tensor, passes: int, batched: bool,
                         shared_stem: bool = True) -> torch.Tensor:
        """Embeddings of ``passes`` forward passes of the same batch: shape (T, B, D).

        With BatchNorm frozen each image is processed independently, so one forward of the
        T*B images (``batched``) gives the same results as T sequential passes, with
        independent feature-dropout masks either way. ``shared_stem``: when the trunk splits
        at its perturbation point (``trunk.prefix`` / ``trunk.suffix``, as every trunk of
        ``build_trunk`` does; see ``sdm.models.stages``), the prefix, identical in all passes,
        runs once, forward and backward, and its output is repeated; the masks drawn and the
        embeddings are those of the unshared path.
        """
        if shared_stem and is_staged(self.trunk):
            start, rest = self.trunk.prefix(images), self.trunk.suffix
        else:
            start, rest = images, self.trunk
        if batched:
            stacked = start.repeat(passes, *([1] * (start.dim() - 1)))
            return self.embedder(rest(stacked)).view(passes, images.shape[0], -1)
        return torch.stack([self.embedder(rest(start)) for _ in range(passes)])

