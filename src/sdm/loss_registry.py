"""Config loss names -> pytorch-metric-learning losses and miners, optionally wrapped by SDM.

Parameter names follow MLRC's tables (``reference/mlrc-hyperparameters.csv``); the few that
PML spells differently are translated here (e.g. ArcFace ``margin_degrees`` -> ``margin``).
Learning rates of a loss's own parameters (``beta_lr``, ``proxy_lr``, ``weights_lr``) are not
constructor arguments: they belong in ``optimizer.loss_lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pytorch_metric_learning import losses, miners, regularizers

from sdm.sdm_loss import SDMLoss


class SDMSettings(Protocol):
    """What ``build_loss`` reads of SDM's settings (the config's ``sdm`` group has them)."""

    masks: int
    embedding_dropout: float
    alpha: float


@dataclass(frozen=True)
class LossSpec:
    """How to build one loss: its PML class, whether it needs the number of classes and the
    embedding size, and the MLRC parameter names it accepts."""

    factory: type
    needs_classes: bool
    params: tuple[str, ...]


LOSSES: dict[str, LossSpec] = {
    "contrastive": LossSpec(losses.ContrastiveLoss, False, ("pos_margin", "neg_margin")),
    "triplet": LossSpec(losses.TripletMarginLoss, False, ("margin",)),
    "margin": LossSpec(losses.MarginLoss, False, ("margin", "init_beta")),
    "margin_per_class": LossSpec(losses.MarginLoss, True, ("margin", "init_beta")),
    "multi_similarity": LossSpec(losses.MultiSimilarityLoss, False, ("alpha", "beta", "base")),
    "ntxent": LossSpec(losses.NTXentLoss, False, ("temperature",)),
    "snr_contrastive": LossSpec(
        losses.SignalToNoiseRatioContrastiveLoss, False,
        ("pos_margin", "neg_margin", "regularizer_weight"),
    ),
    "fastap": LossSpec(losses.FastAPLoss, False, ("num_bins",)),
    "proxy_nca": LossSpec(losses.ProxyNCALoss, True, ("softmax_scale",)),
    "normalized_softmax": LossSpec(losses.NormalizedSoftmaxLoss, True, ("temperature",)),
    "cosface": LossSpec(losses.CosFaceLoss, True, ("margin", "scale")),
    "arcface": LossSpec(losses.ArcFaceLoss, True, ("margin_degrees", "scale")),
    "soft_triple": LossSpec(
        losses.SoftTripleLoss, True, ("la", "gamma", "margin", "reg_weight", "centers_per_class")
    ),
}
LOSS_NAMES = tuple(LOSSES)
MINERS = {"multi_similarity": (miners.MultiSimilarityMiner, ("epsilon",))}
MINER_NAMES = tuple(MINERS)


def _translate(name: str, params: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """MLRC parameter names -> PML constructor keyword arguments."""
    kwargs = dict(params)
    if name == "margin_per_class":
        kwargs["num_classes"] = num_classes
    if name in ("margin", "margin_per_class"):
        kwargs["learn_beta"] = True
        if "init_beta" in kwargs:
            kwargs["beta"] = kwargs.pop("init_beta")
    if name == "arcface" and "margin_degrees" in kwargs:
        kwargs["margin"] = kwargs.pop("margin_degrees")
    if name == "snr_contrastive" and "regularizer_weight" in kwargs:
        weight = kwargs.pop("regularizer_weight")
        if weight:
            kwargs["embedding_regularizer"] = regularizers.ZeroMeanRegularizer()
            kwargs["embedding_reg_weight"] = weight
    if name == "soft_triple" and "reg_weight" in kwargs:
        weight = kwargs.pop("reg_weight")
        centers = kwargs.get("centers_per_class", 10)
        kwargs["weight_regularizer"] = regularizers.SparseCentersRegularizer(num_classes, centers)
        kwargs["weight_reg_weight"] = weight
    return kwargs


def build_loss(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    num_classes: int,
    embedding_size: int,
    sdm: SDMSettings | None = None,
) -> torch.nn.Module:
    """The loss ``name`` with ``params``; wrapped by ``SDMLoss`` with the ``masks``,
    ``embedding_dropout`` and ``alpha`` of ``sdm`` when it is given. Unknown parameter names
    raise a ValueError that lists the accepted ones.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; known losses: {', '.join(LOSS_NAMES)}")
    spec = LOSSES[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ValueError(
            f"loss '{name}' does not take {', '.join(unknown)}; it takes {', '.join(spec.params)}"
        )
    kwargs = _translate(name, params, num_classes)
    if spec.needs_classes:
        kwargs.setdefault("num_classes", num_classes)
        if spec.factory is not losses.MarginLoss:
            kwargs["embedding_size"] = embedding_size
    loss = spec.factory(**kwargs)
    if sdm is None:
        return loss
    return SDMLoss(loss, masks=sdm.masks, embedding_dropout=sdm.embedding_dropout,
                   alpha=sdm.alpha)


def build_miner(name: str | None, params: dict[str, Any] | None = None) -> Any:
    """The miner ``name`` with ``params``, or None when ``name`` is None."""
    if name is None:
        return None
    if name not in MINERS:
        raise ValueError(f"unknown miner '{name}'; known miners: {', '.join(MINER_NAMES)}")
    factory, accepted = MINERS[name]
    unknown = sorted(set(params or {}) - set(accepted))
    if unknown:
        raise ValueError(f"miner '{name}' does not take {', '.join(unknown)}; it takes {accepted}")
    return factory(**dict(params or {}))
