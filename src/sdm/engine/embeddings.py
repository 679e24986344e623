"""Embeddings of a whole dataset for evaluation: no perturbation, L2-normalized."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from sdm.models.embedding_model import EmbeddingModel


@torch.no_grad()
def evaluation_embeddings(
    model: EmbeddingModel,
    dataset: Dataset,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    trunk_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalized float32 embeddings on the CPU, labels) for every item of ``dataset``.

    The model runs in eval mode (dropout off); ``trunk_only`` skips the embedder (the
    protocol's epoch -1). The model's previous train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs, labels = [], []
    for images, batch_labels in loader:
        images = images.to(device, non_blocking=True)
        features = model.trunk(images) if trunk_only else model(images)
        outputs.append(F.normalize(features.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch_labels))
    model.train(was_training)
    return torch.cat(outputs), torch.cat(labels)


def concatenated_embeddings(per_model: list[torch.Tensor]) -> torch.Tensor:
    """Each model's embeddings L2-normalized, concatenated along features, normalized again."""
    return F.normalize(torch.cat([F.normalize(e, dim=1) for e in per_model], dim=1), dim=1)
