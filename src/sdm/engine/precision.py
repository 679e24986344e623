"""How a training step uses its device: mixed precision, memory format and compilation.

All of it is for CUDA. On any other device training runs as configured without it: float32,
contiguous tensors, eager mode, whatever the config asks (a CPU run of a GPU config works).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdm.models.embedding_model import EmbeddingModel

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
AUTO = "auto"


@dataclass(frozen=True)
class TrainingPrecision:
    """What ``train_step`` does on ``device_type``: autocast to ``autocast_dtype`` (None: full
    float32), a gradient scaler (float16 only), channels-last images and model, and whether
    the model is compiled."""

    device_type: str
    autocast_dtype: torch.dtype | None = None
    grad_scaling: bool = False
    channels_last: bool = False
    compile: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of a forward pass (a no-op without mixed precision)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16 autocast."""
        return torch.amp.GradScaler("cuda", enabled=self.grad_scaling)


def training_precision(
    device: torch.device, *, mixed_precision: bool, amp_dtype: str = AUTO,
    channels_last: bool = True, compile: bool = False,
    bf16_supported: Callable[[], bool] | None = None,
) -> TrainingPrecision:
    """The precision plan for ``device``.

    On CUDA: ``mixed_precision`` autocasts to ``amp_dtype`` ("auto": bfloat16 where the GPU
    supports it, else float16; "bfloat16"; "float16"), float16 with a gradient scaler;
    ``channels_last`` and ``compile`` as asked. Elsewhere all of it is off. ValueError for an
    unknown ``amp_dtype`` or bfloat16 asked of a GPU without it. ``bf16_supported`` replaces
    ``torch.cuda.is_bf16_supported`` (for tests).
    """
    if amp_dtype != AUTO and amp_dtype not in AMP_DTYPES:
        raise ValueError(f"training.amp_dtype must be {AUTO!r} or one of "
                         f"{', '.join(AMP_DTYPES)}, got {amp_dtype!r}")
    if device.type != "cuda":
        return TrainingPrecision(device.type)
    dtype = None
    if mixed_precision:
        has_bf16 = (bf16_supported or torch.cuda.is_bf16_supported)()
        if amp_dtype == "bfloat16" and not has_bf16:
            raise ValueError("training.amp_dtype=bfloat16, but this GPU does not support "
                             "bfloat16; use training.amp_dtype=float16 (or auto)")
        if amp_dtype == AUTO:
            dtype = torch.bfloat16 if has_bf16 else torch.float16
        else:
            dtype = AMP_DTYPES[amp_dtype]
    return TrainingPrecision("cuda", dtype, dtype == torch.float16, channels_last, compile)


def prepare_model(model: EmbeddingModel, precision: TrainingPrecision) -> EmbeddingModel:
    """Puts ``model`` in the plan's memory format and compiles it in place: state-dict keys
    stay unchanged, so checkpoints are the same either way. Returns ``model``."""
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    if precision.compile:
        trunk = model.trunk
        for name in ("prefix", "suffix"):
            method = getattr(trunk, name, None)
            if callable(method):
                setattr(trunk, name, torch.compile(method))
        trunk.compile()
        model.embedder.compile()
    return model


def prepare_images(images: torch.Tensor, precision: TrainingPrecision) -> torch.Tensor:
    """``images`` in the plan's memory format."""
    if precision.channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
