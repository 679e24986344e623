"""One optimization step of a metric-learning model, with SDM's perturbed passes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdm.engine.distributed import DistributedContext, gather_batch
from sdm.engine.precision import TrainingPrecision, prepare_images


def train_step(
    model: nn.Module, loss_fn: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
    images: torch.Tensor, labels: torch.Tensor, *, passes: int | None = None,
    batched_passes: bool = True, shared_stem: bool = True, miner: Any = None,
    precision: TrainingPrecision | None = None, scaler: torch.amp.GradScaler | None = None,
    context: DistributedContext | None = None,
) -> float:
    """One step on a batch; returns the loss.

    ``passes`` None: one plain forward pass, the loss gets (B, D) embeddings. ``passes`` T:
    T perturbed passes (feature dropout active; as one T*B batch when ``batched_passes``) and
    the loss gets (T, B, D); ``shared_stem`` runs the trunk's stem once for all T passes (see
    ``EmbeddingModel.perturbed_passes``). A miner sees the first pass. ``precision``
    (default: plain float32) sets autocast and memory format; ``scaler``, when enabled,
    scales float16 gradients.

    ``model`` is an ``EmbeddingModel`` or a DistributedDataParallel wrapper of one. Under
    torchrun (``context``), ``images`` and ``labels`` are this rank's slice of the global
    batch; the loss is that of the whole global batch (see ``distributed``).
    """
    precision = precision or TrainingPrecision(images.device.type)
    images = prepare_images(images, precision)
    with precision.autocast():
        if passes is not None:
            embeddings = model(images, passes, batched_passes, shared_stem)
        else:
            embeddings = model(images)
    embeddings = embeddings.float()
    backward_scale = 1
    if context is not None:
        embeddings, labels = gather_batch(embeddings, context), gather_batch(labels, context)
        backward_scale = context.world_size
    indices = None
    if miner is not None:
        indices = miner(embeddings if embeddings.dim() == 2 else embeddings[0], labels)
    loss = loss_fn(embeddings, labels, indices)
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    scaling = scaler is not None and scaler.is_enabled()
    to_backward = loss * backward_scale
    (scaler.scale(to_backward) if scaling else to_backward).backward()
    if backward_scale != 1:
        # Every rank computed the loss's own parameters' full gradient, times the scale.
        for parameter in loss_fn.parameters():
            if parameter.grad is not None:
                parameter.grad.div_(backward_scale)
    for optimizer in optimizers.values():
        if scaling:
            scaler.step(optimizer)
        else:
            optimizer.step()
    if scaling:
        scaler.update()
    return float(loss.detach())
