"""The embedder: the layers between the trunk's features and the embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn


class Embedder(nn.Module):
    """Linear layers ``in_dim -> layer_sizes[0] -> ... -> layer_sizes[-1]``, ReLU between them.

    The default is the paper's: one ``Linear(in_dim, 128)`` with no activation. The output is
    unnormalized, shape (B, layer_sizes[-1]).

    State-dict keys follow powerful-benchmarker's ``MLP`` (which the paper's released
    ``embedder_best<E>.pth`` files were saved from): the layers are ``net.0``, ``net.2``, ...,
    and the last Linear is registered a second time as ``last_linear``, so a single-layer
    embedder saves ``net.0.weight``, ``net.0.bias``, ``last_linear.weight`` and
    ``last_linear.bias`` (the same tensors). State dicts without the ``last_linear.*`` keys
    load too.
    """

    def __init__(self, in_dim: int, layer_sizes: Sequence[int] = (128,)):
        super().__init__()
        sizes = [int(in_dim), *(int(size) for size in layer_sizes)]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(
                "Embedder needs in_dim >= 1 and at least one layer size >= 1, "
                f"got in_dim={in_dim}, layer_sizes={list(layer_sizes)}")
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            if layers:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        self.net = nn.Sequential(*layers)
        self.last_linear = self.net[-1]
        self.output_dim = sizes[-1]
        self.register_load_state_dict_pre_hook(_fill_last_linear)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


def _fill_last_linear(embedder: Embedder, state_dict: dict[str, Any], prefix: str,
                      *_: Any) -> None:
    """Load-state-dict pre-hook: copy ``net.<last>.*`` to missing ``last_linear.*`` keys."""
    last = f"{prefix}net.{len(embedder.net) - 1}."
    for name in ("weight", "bias"):
        alias = f"{prefix}last_linear.{name}"
        if alias not in state_dict and last + name in state_dict:
            state_dict[alias] = state_dict[last + name]
