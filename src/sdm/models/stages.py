"""A trunk as an ordered list of named stages, and the point where SDM's perturbation enters.

Every trunk of ``build_trunk`` is ``StagedTrunk``: running its stages in order is the trunk
(images -> (B, C) pooled features), and the output of each stage is a *point* where the
feature dropout can sit (``perturb_at``). The first point, ``stem``, is the paper's place (the
first convolution's output, before its normalization); the last, ``pooled``, is the pooled
feature vector before the embedder. ``prefix`` runs the stages up to the point, ``suffix`` the
feature dropout and the stages after it, so that SDM's T passes can run the prefix once
(``EmbeddingModel.perturbed_passes``). A trunk whose stem cannot be told apart (a timm model
of a family without its own stages) may start with another point; ``pooled`` is always last.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

STEM = "stem"
POOLED = "pooled"


class Stage(NamedTuple):
    """One stage of a trunk: ``run`` maps the previous stage's output to this one's."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]


class FeatureDropout(nn.Module):
    """SDM's trunk perturbation at rate ``p``: channel dropout (``F.dropout2d``, whole maps
    zeroed) on (B, C, H, W) inputs, token dropout on (B, N, C) token sequences (``F.dropout1d``
    over the token axis: each of an image's N tokens is zeroed whole, all C features together,
    with probability p — the analogue of channel dropout for transformers), plain dropout on
    (B, C) vectors; survivors are scaled by 1 / (1 - p). The identity in eval mode or at p = 0.
    No parameters, no buffers."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        check_rate(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.dim() == 4:
            return F.dropout2d(x, self.p, True)
        if x.dim() == 3:
            return F.dropout1d(x, self.p, True)
        return F.dropout(x, self.p, True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class StagedTrunk:
    """Mixin for an ``nn.Module`` trunk made of ``stages()``, with a ``feature_dropout``
    (a ``FeatureDropout``) after the stage named ``perturb_at``.

    Contract: ``forward(images) == suffix(prefix(images))`` for every point, and the stages
    hold all of the trunk's computation from the images to the pooled features.
    """

    feature_dropout: FeatureDropout
    perturb_at: str

    def stages(self) -> list[Stage]:
        """The trunk's stages in order; names are unique, the first is ``stem`` (the paper's
        place) when the trunk has one and the last is ``pooled``."""
        raise NotImplementedError

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """The perturbation at ``perturb_at``: ``feature_dropout(x)``; a trunk may keep part
        of ``x`` out of it (a ViT's class token)."""
        return self.feature_dropout(x)

    def points(self) -> list[str]:
        """Where the feature dropout can sit: the name of every stage, in order."""
        return [stage.name for stage in self.stages()]

    def _split(self) -> int:
        names = self.points()
        if self.perturb_at not in names:
            raise ValueError(f"{type(self).__name__} has no point {self.perturb_at!r}; "
                             f"its points are {', '.join(names)}")
        return names.index(self.perturb_at) + 1

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The stages up to and including ``perturb_at``: everything before the perturbation."""
        x = images
        for stage in self.stages()[:self._split()]:
            x = stage.run(x)
        return x

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        """The feature dropout (``perturb``), then the stages after ``perturb_at``."""
        x = self.perturb(x)
        for stage in self.stages()[self._split():]:
            x = stage.run(x)
        return x


def check_rate(rate: float) -> None:
    """ValueError unless ``rate`` is a dropout rate in [0, 1)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"feature dropout rate must be in [0, 1), got {rate}")


def is_staged(trunk: nn.Module) -> bool:
    """Whether ``trunk`` splits at its perturbation point (``prefix`` / ``suffix``)."""
    return isinstance(trunk, StagedTrunk)


def point_shapes(trunk: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, tuple]]:
    """``[(point, output shape of one image there), ...]`` for an input of ``input_shape``
    (C, H, W), computed on the meta device (no memory, no weights needed)."""
    meta = copy.deepcopy(trunk).to("meta").eval()
    x = torch.empty(1, *input_shape, device="meta")
    shapes = []
    with torch.no_grad():
        for stage in meta.stages():
            x = stage.run(x)
            shapes.append((stage.name, tuple(x.shape[1:])))
    return shapes
