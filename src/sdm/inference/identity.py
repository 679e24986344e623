"""A model's identity: what decides the embeddings it gives, recorded beside them.

Embeddings, the faiss index built from them and the queries searched against it are only
comparable when one model made them all. The identity names the experiment, the fold(s),
the SHA-256 of every checkpoint file used, the eval transform and the input shape; two
identities name the same model when everything but the experiment's location and name is
equal (a moved or renamed experiment keeps its model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm.config import ExperimentConfig
from sdm.engine.experiment import ExperimentFolder
from sdm.models.trunks import input_convention

# Fields that say where the model came from without changing it.
LOCATION_FIELDS = ("experiment", "name")
HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(
    experiment: ExperimentFolder, config: ExperimentConfig, folds: Sequence[int],
    concatenated: bool, input_shape: Sequence[int], embedding_dim: int,
) -> dict[str, Any]:
    """The JSON-ready identity of the model made of the best checkpoints of ``folds``.

    ``input_shape`` is (channels, height, width) of one image after the eval transform;
    ``embedding_dim`` the length of an embedding (the sum over folds when concatenated).
    """
    return {
        "experiment": str(experiment.path.resolve()),
        "name": str(config.name),
        "folds": [int(f) for f in folds],
        "concatenated": bool(concatenated),
        "checkpoints": {str(f): sha256_file(experiment.checkpoint(f, C.BEST_CHECKPOINT))
                        for f in folds},
        "trunk": str(config.model.trunk),
        "transform": {"input_convention": input_convention(config.model.trunk),
                      "resize": config.transform.resize, "crop": config.transform.crop},
        "input_shape": [int(n) for n in input_shape],
        "embedding_dim": int(embedding_dim),
    }


def identity_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"field: recorded -> current"`` for every field (but the location) that differs;
    empty when both identities name the same model."""
    fields = sorted((set(recorded) | set(current)) - set(LOCATION_FIELDS))
    return [f"{field}: {recorded.get(field)!r} -> {current.get(field)!r}"
            for field in fields if recorded.get(field) != current.get(field)]
