"""Test evaluation: the numbers of separated (per fold model) and concatenated (all folds).

- separated: each fold model on the test classes; mean and standard deviation of each metric
  over the models (128-d in the paper).
- concatenated: each fold model's embeddings L2-normalized, concatenated, normalized again,
  evaluated once (512-d in the paper).
- pretrained: the same two with each fold's epoch-0 model (trunk + untrained embedder).

Query set = reference set (the query itself excluded), except for datasets with an official
query/gallery partition (In-Shop), where the query images are ranked against the gallery.
Nothing is written here: ``sdm.scores`` makes tables and files of what this returns.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from sdm import constants as C
from sdm.config import ExperimentConfig
from sdm.data.datasets import ImageDataset
from sdm.data.splits import Splits
from sdm.engine import build
from sdm.engine.embeddings import concatenated_embeddings, evaluation_embeddings
from sdm.metrics import retrieval_metrics
from sdm.models.embedding_model import EmbeddingModel
from sdm.scores import ModelSetScores, SeparatedScores, TestResults


def score(embeddings: torch.Tensor, labels: torch.Tensor, dataset: ImageDataset) -> dict:
    """``retrieval_metrics`` of items aligned with ``dataset``: all items against each other,
    or its query images against its gallery images when it has that partition."""
    if dataset.partition is None:
        return retrieval_metrics(embeddings, labels)
    queries = torch.as_tensor(dataset.partition == C.INSHOP_QUERY)
    gallery = torch.as_tensor(dataset.partition == C.INSHOP_GALLERY)
    return retrieval_metrics(embeddings[queries], labels[queries],
                             embeddings[gallery], labels[gallery])


def evaluate_models(
    models: list[EmbeddingModel], test_set: ImageDataset, config: ExperimentConfig,
    modes: tuple[str, ...] = C.EVAL_MODES,
) -> ModelSetScores:
    """Separated and/or concatenated scores of ``models`` on ``test_set`` (eval transform set).

    Embeddings are computed in batches of ``training.eval_batch_size``. CPU and GPU kernels
    may round differently for other batch sizes, so embeddings computed in other batches can
    differ in their last bits, and on data with near-tied neighbours give other metrics.
    """
    device = build.resolve_device(config.training.device)
    per_model = []
    labels = torch.empty(0)
    for model in models:
        embeddings, labels = evaluation_embeddings(
            model.to(device), test_set, device=device,
            batch_size=config.training.eval_batch_size, num_workers=config.training.num_workers)
        per_model.append(embeddings)
    result = ModelSetScores(
        dims={C.SEPARATED: per_model[0].shape[1],
              C.CONCATENATED: sum(e.shape[1] for e in per_model)},
        num_models=len(models))
    if C.SEPARATED in modes:
        scores = [score(e, labels, test_set) for e in per_model]
        result.separated = SeparatedScores(
            per_model=scores,
            mean={m: statistics.fmean(s[m] for s in scores) for m in C.METRIC_NAMES},
            std={m: statistics.pstdev(s[m] for s in scores) for m in C.METRIC_NAMES})
    if C.CONCATENATED in modes:
        result.concatenated = score(concatenated_embeddings(per_model), labels, test_set)
    return result


def evaluate_released_models(
    config: ExperimentConfig, folder: str | Path, dataset: ImageDataset, splits: Splits,
    modes: tuple[str, ...] = C.EVAL_MODES,
) -> TestResults:
    """The paper's released ``trunk_best<E>.pth`` / ``embedder_best<E>.pth`` models found below
    ``folder`` (one per fold) on the test classes."""
    models = [build.load_released_model(config, trunk, embedder)
              for trunk, embedder in build.find_released_models(folder)]
    test_set = build.test_dataset(config, dataset, splits)
    return TestResults(experiment=config.name,
                       trained=evaluate_models(models, test_set, config, modes))
