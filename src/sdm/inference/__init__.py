"""Inference with trained experiments: load a model, embed images, index and search a gallery,
export the model.

From Python::

    from sdm.inference import load_model, embed

    model, transform = load_model("experiments/my_photos", fold=0)
    vectors = embed(model, "new_photos/")      # float32 (N, D), unit rows

The commands (``sdm embed``, ``sdm index``, ``sdm search``, ``sdm export``) are in
``sdm.inference.commands``; the embeddings folder is described in ``sdm.inference.gallery``.
Names are imported lazily, so that building the command line stays cheap.
"""

from importlib import import_module
from typing import Any

__all__ = ["InferenceError", "InferenceModel", "embed", "load_model"]

_PUBLIC = {
    "InferenceError": "sdm.inference.errors",
    "InferenceModel": "sdm.inference.loading",
    "load_model": "sdm.inference.loading",
    "embed": "sdm.inference.embedding",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'sdm.inference' has no attribute {name!r}")
