"""One optimization step of a metric-learning model, with SDM's perturbed passes."""

from __future__ import annotations

from typing import Any

import torch

from sdm.models.embedding_model import EmbeddingModel


def train_step(
    model: EmbeddingModel, loss_fn: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
    images: torch.Tensor, labels: torch.Tensor, *, passes: int | None = None,
    batched_passes: bool = True, miner: Any = None, scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One step on a batch; returns the loss.

    ``passes`` None: one plain forward pass, the loss gets (B, D) embeddings. ``passes`` T:
    T perturbed passes (feature dropout active; as one T*B batch when ``batched_passes``) and
    the loss gets (T, B, D). A miner sees the first pass. Mixed precision when ``scaler`` is
    enabled (CUDA).
    """
    amp = scaler is not None and scaler.is_enabled()
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        if passes is not None:
            embeddings = model.perturbed_passes(images, passes, batched_passes)
        else:
            embeddings = model(images)
    embeddings = embeddings.float()
    indices = None
    if miner is not None:
        indices = miner(embeddings if embeddings.dim() == 2 else embeddings[0], labels)
    loss = loss_fn(embeddings, labels, indices)
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    if amp:
        scaler.scale(loss).backward()
        for optimizer in optimizers.values():
            scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
    return float(loss.detach())
