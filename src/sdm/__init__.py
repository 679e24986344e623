"""Sensitivity-aware Distance Measurement (SDM) for deep metric learning.

The public face is small and stable::

    from sdm import SDMLoss, retrieval_metrics, mlrc_splits, load_model, embed

Names are imported lazily so that ``import sdm`` stays cheap.
"""

from importlib import import_module
from typing import Any

__all__ = ["SDMLoss", "retrieval_metrics", "mlrc_splits", "sensitivity_matrix", "load_model",
           "embed"]
__version__ = "0.1.0"

_PUBLIC = {
    "SDMLoss": "sdm.sdm_loss",
    "sensitivity_matrix": "sdm.sdm_loss",
    "retrieval_metrics": "sdm.metrics",
    "mlrc_splits": "sdm.data.splits",
    "load_model": "sdm.inference.loading",
    "embed": "sdm.inference.embedding",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'sdm' has no attribute {name!r}")
