"""A retrieval picture: some test queries, each with its top-k neighbours, hits framed green
and misses red."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from sdm import constants as C
from sdm import records
from sdm.data.datasets import ImageDataset
from sdm.data.splits import Splits


def nearest_neighbours(embeddings: torch.Tensor, queries: list[int], k: int) -> torch.Tensor:
    """Indices (len(queries), k) of each query's k nearest other items by Euclidean distance."""
    distances = torch.cdist(embeddings[queries].double(), embeddings.double())
    distances[torch.arange(len(queries)), torch.as_tensor(queries)] = float("inf")
    return distances.topk(k, largest=False).indices


def draw_retrieval_picture(
    dataset: ImageDataset, embeddings: torch.Tensor, path: str | Path,
    num_queries: int = 6, k: int = 5, seed: int = 0,
) -> Path:
    """Draws ``num_queries`` random queries of ``dataset`` (one row each, the query first) and
    their ``k`` nearest neighbours under ``embeddings`` (aligned with the dataset's items)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(len(dataset), generator=generator)[:num_queries].tolist()
    neighbours = nearest_neighbours(embeddings, queries, k)
    labels = dataset.labels
    figure, axes = plt.subplots(len(queries), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(queries)),
                                squeeze=False)
    for row, query in enumerate(queries):
        items = [query, *neighbours[row].tolist()]
        for column, item in enumerate(items):
            axis = axes[row][column]
            image = dataset.load_image(item)
            axis.imshow(image, cmap="gray" if image.mode == "L" else None)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                colour, title = "blue", f"query {labels[item]}"
            else:
                hit = labels[item] == labels[query]
                colour, title = ("green" if hit else "red"), str(labels[item])
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            axis.set_title(title, fontsize=8, color=colour)
    figure.tight_layout()
    return records.save_figure(figure, path, dpi=100)


def experiment_retrieval_picture(
    config: DictConfig, experiment_dir: str | Path, dataset: ImageDataset, splits: Splits,
    path: str | Path, num_queries: int = 6, k: int = 5,
) -> Path:
    """The picture for the best model of the experiment's first trained fold, on test classes."""
    from sdm.engine import build
    from sdm.engine.embeddings import compute_embeddings
    from sdm.engine.experiment import ExperimentFolder

    experiment = ExperimentFolder(experiment_dir)
    fold = experiment.trained_folds(config.training.folds)[0]
    model = build.load_checkpoint_model(config, experiment.checkpoint(fold, C.BEST_CHECKPOINT))
    test_set = build.test_dataset(config, dataset, splits)
    device = build.resolve_device(config.training.device)
    embeddings, _ = compute_embeddings(model.to(device), test_set, device=device,
                                       batch_size=config.training.eval_batch_size)
    return draw_retrieval_picture(test_set, embeddings, path, num_queries, k, config.training.seed)
