"""``sdm export``: an inference model as one file — ONNX (run with onnxruntime) or TorchScript
(run with ``torch.jit.load``) — from images to L2-normalized embeddings.

The graph takes float32 ``images`` (batch, *input_shape), as the experiment's eval transform
makes them, and returns float32 ``embeddings`` (batch, D); the batch axis is dynamic, the image
size is the experiment's. ``<file>.json`` beside the file records the model's identity, the
input and output and the preprocessing. ONNX export needs the ``export`` extra
(``pip install 'sdm-metric-learning[export]'``: onnx, onnxscript, onnxruntime); TorchScript
needs nothing more than torch, but PyTorch has deprecated it for torch.export: prefer ONNX for
a file meant to last.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdm import storage
from sdm.inference.errors import InferenceError
from sdm.inference.loading import InferenceModel
from sdm.inference.options import EXPORT_FORMATS, ONNX, TORCHSCRIPT

INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
PARITY_TOLERANCE = 1e-4  # max abs difference of an exported file's embeddings from PyTorch's
PARITY_BATCH_SIZES = (1, 3)  # random batches the exported file is checked on
EXAMPLE_BATCH_SIZE = 2  # traced / exported with; other sizes run through the dynamic axis
# torch 2.14 deprecates torch.jit (trace, save, load) for torch.export; TorchScript is still
# what was asked for, so its warnings are not repeated on every export (ONNX is the lasting
# format).
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"
EXTRA_HINT = "pip install 'sdm-metric-learning[export]' (onnx, onnxscript, onnxruntime)"


def export_model(model: InferenceModel, path: str | Path, fmt: str) -> dict[str, Any]:
    """Writes ``model`` (on the CPU) to ``path`` in format ``fmt`` and ``<path>.json`` beside
    it, after checking the file against the model on random batches of ``PARITY_BATCH_SIZES``
    images (InferenceError, and no file, when they differ by more than ``PARITY_TOLERANCE``).
    Returns what the JSON file records."""
    if fmt not in EXPORT_FORMATS:
        raise InferenceError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    if model.device.type != "cpu":
        raise InferenceError("export a model loaded on the CPU: load_model(..., device='cpu')")
    path = Path(path)
    example = torch.zeros(EXAMPLE_BATCH_SIZE, *model.input_shape)
    data = _onnx_bytes(model, example) if fmt == ONNX else _torchscript_bytes(model, example)
    storage.atomic_write(path, lambda stream: stream.write(data))
    generator = torch.Generator().manual_seed(0)
    checks = [torch.randn(n, *model.input_shape, generator=generator) for n in PARITY_BATCH_SIZES]
    try:
        difference = max(parity_difference(model, path, fmt, images) for images in checks)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not difference <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise InferenceError(
            f"the exported {fmt} graph differs from the PyTorch model by {difference:.3g} "
            f"(more than {PARITY_TOLERANCE}); nothing was written")
    description = {
        "format": fmt, "file": path.name, "model": model.identity,
        "input": {"name": INPUT_NAME, "shape": ["batch", *model.input_shape],
                  "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.embedding_dim],
                   "dtype": "float32", "l2_normalized": True},
        "preprocessing": repr(model.transform),
        "parity_max_abs_difference": difference,
        "torch": torch.__version__,
    }
    storage.write_json(description_path(path), description)
    return description


def description_path(path: str | Path) -> Path:
    """``<path>.json``: what ``export_model`` records beside the exported file."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def run_exported(path: str | Path, images: torch.Tensor, fmt: str) -> np.ndarray:
    """The embeddings (float32 (B, D)) that the exported file at ``path`` gives for
    ``images``, run by onnxruntime (ONNX) or ``torch.jit.load`` (TorchScript) on the CPU."""
    if fmt == ONNX:
        try:
            import onnxruntime
        except ImportError as error:
            raise InferenceError(f"running an ONNX file needs onnxruntime: {EXTRA_HINT}") from error
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    if fmt == TORCHSCRIPT:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", JIT_DEPRECATION, FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(images).numpy()
    raise InferenceError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")


def parity_difference(model: InferenceModel, path: str | Path, fmt: str,
                      images: torch.Tensor) -> float:
    """Max abs difference between the exported file's and ``model``'s embeddings of
    ``images`` (float32 (B, *model.input_shape), on the CPU)."""
    with torch.no_grad():
        expected = model(images).numpy()
    return float(np.abs(run_exported(path, images, fmt) - expected).max())


def _onnx_bytes(model: InferenceModel, example: torch.Tensor) -> bytes:
    try:
        import onnx  # noqa: F401  (torch.onnx's exporter needs it and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise InferenceError(f"ONNX export needs onnx and onnxscript: {EXTRA_HINT}") from error
    program = torch.onnx.export(
        model, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},))
    return program.model_proto.SerializeToString()


def _torchscript_bytes(model: InferenceModel, example: torch.Tensor) -> bytes:
    with torch.no_grad(), warnings.catch_warnings():
        # Shapes read while tracing (EfficientNet's "same" padding) are baked in as
        # constants: right, since every input has the experiment's fixed image size.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", JIT_DEPRECATION, FutureWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
