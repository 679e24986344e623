"""Sensitivity-aware Distance Measurement (SDM) as a wrapper around a pair-based loss.

A learned distance is only trustworthy if it stays put when the features are slightly
perturbed. SDM measures every pairwise distance on K perturbed copies of the batch embeddings
(T perturbed forward passes times M inverted-dropout masks; the unperturbed embedding is not
among them), each copy measured by the loss's own distance: D_1..D_K (B x B). It trains on a
softened worst case per pair: positive pairs take sum_k softmax_k(alpha*D_k)*D_k (soft max),
negative pairs the soft min (softmax of -alpha*D_k); for a similarity the two swap. This S
replaces the base loss's own matrix; reducer, miner indices and parameters stay the loss's own.
With K = 1 and no dropout, S is the base loss's matrix and SDM is exactly the base loss.
"""

import warnings

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import BaseDistance

# Losses whose compute_loss reads the batch only through `self.distance(embeddings[, ref_emb])`
# (plus the distance's is_inverted, margin, smallest_dist and power), checked against the
# pytorch-metric-learning 2.9 source. Exact types: a subclass may compute differently.
SUPPORTED_LOSSES = (
    losses.ContrastiveLoss,
    losses.SignalToNoiseRatioContrastiveLoss,
    losses.TripletMarginLoss,
    losses.MarginLoss,
    losses.MultiSimilarityLoss,
    losses.NTXentLoss,
    losses.SupConLoss,
    losses.CircleLoss,
    losses.LiftedStructureLoss,
    losses.GeneralizedLiftedStructureLoss,
    losses.FastAPLoss,
    losses.NCALoss,
    losses.HistogramLoss,
    losses.IntraPairVarianceLoss,
    losses.TupletMarginLoss,
    losses.RankedListLoss,
    losses.InstanceLoss,
    losses.PNPLoss,
    losses.DynamicSoftMarginLoss,
)


def _check_masks_and_rate(masks: int, p: float, name: str = "p") -> None:
    if isinstance(masks, bool) or not isinstance(masks, int) or masks < 1:
        raise ValueError(f"masks must be an integer >= 1 (copies per pass), got {masks!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate {name} must be in [0, 1), got {p!r}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < float("inf"):
        raise ValueError(
            f"alpha (inverse temperature of the soft worst case) must be a finite number >= 0, "
            f"got {alpha!r}"
        )


def _as_passes(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) or (T, B, D) embeddings as (T, B, D)."""
    if not torch.is_tensor(embeddings) or not embeddings.is_floating_point():
        raise ValueError("embeddings must be a floating-point tensor of shape (B, D) or (T, B, D)")
    if embeddings.ndim == 2:
        return embeddings.unsqueeze(0)
    if embeddings.ndim == 3:
        return embeddings
    raise ValueError(
        f"embeddings must have shape (B, D) or (T, B, D), got {tuple(embeddings.shape)}"
    )


def perturbed_copies(embeddings: torch.Tensor, masks: int, p: float) -> torch.Tensor:
    """K = T*masks inverted-dropout copies of (B, D) or (T, B, D) embeddings, shape (K, B, D).

    Copy k = t*masks + m is pass t under its m-th mask: each entry is zeroed with probability p
    and survivors are scaled by 1/(1-p). Masks come from torch's global RNG. With p == 0 no
    random numbers are drawn and every copy equals its pass.
    """
    _check_masks_and_rate(masks, p)
    passes = _as_passes(embeddings)
    num_passes, batch_size, dim = passes.shape
    repeated = passes.unsqueeze(1).expand(num_passes, masks, batch_size, dim)
    if p > 0.0:
        repeated = torch.nn.functional.dropout(repeated, p=p, training=True)
    return repeated.reshape(num_passes * masks, batch_size, dim)


def _pairwise_per_copy(copies: torch.Tensor, distance: BaseDistance) -> torch.Tensor:
    """D_k = distance(E_k) for each copy (the distance normalizes each copy itself): (K, B, B)."""
    if distance.collect_stats or copies.dtype == torch.float16:
        # Stats call .item() and LpDistance's float16 path writes in place: neither can be vmapped.
        return torch.stack([distance(copy) for copy in copies])
    return torch.vmap(distance)(copies)


def sensitivity_matrix(
    copies: torch.Tensor,
    labels: torch.Tensor,
    distance: BaseDistance,
    alpha: float = 32.0,
) -> torch.Tensor:
    """The sensitivity-aware matrix S (B x B) of K perturbed copies (K, B, D).

    For a distance, same-label pairs (diagonal included) get the soft maximum over copies,
    S_ij = sum_k softmax_k(alpha * D_k,ij) * D_k,ij, and different-label pairs the soft minimum
    (softmax of -alpha * D_k,ij); for a similarity (distance.is_inverted) the two are swapped.
    alpha is an inverse temperature: the larger, the closer S is to the hard max/min over
    copies; alpha = 0 gives the plain mean over copies for every pair (computed as the mean).
    S is in the distance's own units and differentiable in the copies.
    """
    if not isinstance(distance, BaseDistance):
        raise TypeError(
            "distance must be a pytorch_metric_learning BaseDistance, "
            f"got {type(distance).__name__}"
        )
    _check_alpha(alpha)
    if copies.ndim != 3 or copies.shape[0] < 1:
        raise ValueError(f"copies must have shape (K, B, D) with K >= 1, got {tuple(copies.shape)}")
    if labels.ndim != 1 or labels.shape[0] != copies.shape[1]:
        raise ValueError(
            f"labels must have shape (B,) = ({copies.shape[1]},), got {tuple(labels.shape)}"
        )
    per_copy = _pairwise_per_copy(copies, distance)
    if alpha == 0.0:
        return per_copy.mean(dim=0)
    labels = labels.to(copies.device)
    same_label = labels.unsqueeze(0) == labels.unsqueeze(1)
    take_largest = same_label != distance.is_inverted
    signs = torch.where(take_largest, 1.0, -1.0).to(per_copy.dtype)
    weights = torch.softmax(alpha * signs * per_copy, dim=0)
    return (weights * per_copy).sum(dim=0)


class _PrecomputedMatrix(BaseDistance):
    """Stands in for a loss's distance during one call: returns S for the batch it was made for.

    It keeps the replaced distance's sense (is_inverted), p and power, and asks it for margins,
    so the loss treats S exactly as it would have treated its own matrix.
    """

    def __init__(self, matrix: torch.Tensor, embeddings: torch.Tensor, replaced: BaseDistance):
        super().__init__(
            normalize_embeddings=replaced.normalize_embeddings,
            p=replaced.p,
            power=replaced.power,
            is_inverted=replaced.is_inverted,
        )
        self.matrix = matrix
        self.embeddings = embeddings
        self.replaced = replaced

    def forward(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None = None) -> torch.Tensor:
        if query_emb is not self.embeddings or (
            ref_emb is not None and ref_emb is not self.embeddings
        ):
            raise RuntimeError(
                "the wrapped loss asked its distance about other inputs than the batch; "
                "SDM can only replace the batch's own pairwise matrix"
            )
        # A fresh tensor per call, as a real distance gives: some losses edit it in place.
        return self.matrix.clone()

    def margin(self, x, y):
        return self.replaced.margin(x, y)

    def smallest_dist(self, *args, **kwargs):
        return self.replaced.smallest_dist(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        return self.replaced.largest_dist(*args, **kwargs)


class SDMLoss(torch.nn.Module):
    """SDM around an unchanged pytorch-metric-learning pair-based loss.

    forward(embeddings, labels, indices_tuple=None): embeddings (B, D) or (T, B, D) from T
    perturbed forward passes, before normalization; labels (B,). The base loss receives the mean
    of the T passes as its embeddings (used for shapes, dtype and any embedding regularizer) and
    S (see sensitivity_matrix) wherever it reads its pairwise matrix; its reducer, parameters
    and the given miner indices are used as they are. masks: dropout masks per pass;
    embedding_dropout: their rate; alpha: inverse temperature of the soft worst case (0: the
    mean over copies). The names are those of the config's ``sdm`` group. ``p``, the rate's
    earlier name, is still accepted with a FutureWarning.
    """

    def __init__(
        self,
        base_loss: torch.nn.Module,
        masks: int = 8,
        embedding_dropout: float = 0.05,
        alpha: float = 32.0,
        *,
        p: float | None = None,
    ):
        super().__init__()
        if p is not None:
            warnings.warn("SDMLoss(p=...) is now SDMLoss(embedding_dropout=...); p will be "
                          "removed", FutureWarning, stacklevel=2)
            embedding_dropout = p
        if type(base_loss) not in SUPPORTED_LOSSES:
            names = ", ".join(loss.__name__ for loss in SUPPORTED_LOSSES)
            raise TypeError(
                f"SDMLoss cannot wrap {type(base_loss).__name__}: SDM needs a loss built on a "
                f"pairwise matrix of the batch embeddings (proxy, classifier and wrapper losses "
                f"are not). Supported: {names}."
            )
        _check_masks_and_rate(masks, embedding_dropout, "embedding_dropout")
        _check_alpha(alpha)
        self.base_loss = base_loss
        self.masks = masks
        self.embedding_dropout = embedding_dropout
        self.alpha = alpha

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple | None = None,
    ) -> torch.Tensor:
        passes = _as_passes(embeddings)
        if not torch.is_tensor(labels) or labels.ndim != 1:
            raise ValueError("labels must be a 1D tensor of shape (B,)")
        if labels.shape[0] != passes.shape[1]:
            raise ValueError(
                f"embeddings hold {passes.shape[1]} samples but labels hold {labels.shape[0]}; "
                "give one label per sample"
            )
        if not torch.isfinite(passes).all():
            raise ValueError("embeddings contain NaN or inf; check the model and learning rate")
        labels = labels.to(passes.device)
        copies = perturbed_copies(passes, self.masks, self.embedding_dropout)
        replaced = self.base_loss.distance
        matrix = sensitivity_matrix(copies, labels, replaced, self.alpha)
        mean_embeddings = passes.mean(dim=0)
        self.base_loss.distance = _PrecomputedMatrix(matrix, mean_embeddings, replaced)
        try:
            return self.base_loss(mean_embeddings, labels, indices_tuple)
        finally:
            self.base_loss.distance = replaced

    def extra_repr(self) -> str:
        return (f"masks={self.masks}, embedding_dropout={self.embedding_dropout}, "
                f"alpha={self.alpha}")
