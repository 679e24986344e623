"""One fold trained by several processes (torchrun): data parallel over the global batch.

Every rank loads the same global batch (same seed, same sampler, and the same random
augmentations, as every rank decodes the whole batch) and embeds its contiguous share of it;
the embeddings of all ranks, all T passes, are gathered with the gradient of the rank's own
share, so the loss (and SDM's copies and pairwise matrix) spans the whole global batch exactly
as in one process. Every rank computes that same loss; each one's backward reaches only its
own share, and DistributedDataParallel's gradient average is turned into the sum over shares
by scaling the backward by the world size. Random numbers stay in step across ranks: each
rank draws the feature-dropout masks of the whole global batch and keeps its share, and the
random state of the main rank (the only one that validates, checkpoints and writes records)
is sent to the others after each validation.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sdm.errors import UserInputError
from sdm.models.stages import FeatureDropout

MAIN_RANK = 0
ONE_GPU = re.compile(r"cuda:\d+")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == MAIN_RANK

    def local_batch_size(self, global_batch_size: int) -> int:
        """The rank's share of a global batch; UserInputError unless it divides evenly."""
        if global_batch_size % self.world_size:
            raise UserInputError(
                f"training.batch_size={global_batch_size} does not split evenly over "
                f"{self.world_size} processes; use a multiple of {self.world_size}")
        return global_batch_size // self.world_size

    def local_share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (along dim 0)."""
        size = self.local_batch_size(batch.shape[0])
        return batch[self.rank * size:(self.rank + 1) * size]


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str, backend: str | None = None,
          ) -> tuple[DistributedContext, torch.device]:
    """Joins the process group torchrun describes in the environment: ``backend``, by default
    NCCL on CUDA and gloo otherwise. ``device_name`` is ``training.device``: "auto" or "cuda"
    become this rank's GPU (``cuda:LOCAL_RANK``, wrapping around when there are fewer GPUs
    than processes, which NCCL refuses but gloo allows) when CUDA is there; one named GPU
    (``cuda:N``) is a UserInputError, as every process would share it."""
    context = DistributedContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                                 int(os.environ.get("LOCAL_RANK", "0")))
    if ONE_GPU.fullmatch(device_name):
        raise UserInputError(
            f"training.device={device_name} would put all {context.world_size} processes of "
            "this torchrun job on one GPU; use training.device=cuda (process k takes "
            "cuda:k) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", context.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu" if device_name == "auto" else device_name)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"),
                                timeout=timedelta(minutes=30))
    return context, device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_batch(local: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """All ranks' ``local`` tensors joined along the batch dimension (dim -2 of (T, b, D)
    embeddings, dim 0 of (b,) labels), in rank order: the global batch. The rank's own slice
    is ``local`` itself, so gradients flow back to it; the other slices are constants."""
    dim = 0 if local.dim() == 1 else local.dim() - 2
    slices = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(slices, local.detach().contiguous())
    slices[context.rank] = local
    return torch.cat(slices, dim=dim)


def broadcast_from_main(value: Any) -> Any:
    """The main rank's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=MAIN_RANK)
    return box[0]


def share_random_state() -> None:
    """Every rank takes the main rank's Python, NumPy and torch (CPU) random states."""
    box = [(random.getstate(), np.random.get_state(), torch.get_rng_state())]
    dist.broadcast_object_list(box, src=MAIN_RANK)
    python_state, numpy_state, torch_state = box[0]
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


class GlobalBatchFeatureDropout(FeatureDropout):
    """``FeatureDropout`` that draws the masks of the whole global batch and applies this
    rank's slice, so that ranks together use the masks one process would draw (channel masks
    on (N, C, H, W) maps, element masks on (N, C) vectors, drawn alike).

    The input is k blocks of ``local_batch`` images (k = T passes batched, or 1); the masks
    are drawn as for k blocks of ``local_batch * world_size`` images, rank-major in a block.
    """

    def __init__(self, p: float, local_batch: int, context: DistributedContext):
        super().__init__(p)
        self.local_batch = local_batch
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        images, channels = x.shape[:2]
        if images % self.local_batch:
            raise ValueError(f"feature dropout got {images} images, not a multiple of the "
                             f"per-rank batch {self.local_batch}")
        blocks = images // self.local_batch
        masks = x.new_empty(blocks, self.context.world_size, self.local_batch, channels)
        masks.bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        mine = masks[:, self.context.rank].reshape(images, channels, *([1] * (x.dim() - 2)))
        return x * mine


def use_global_batch_dropout(trunk: nn.Module, local_batch: int,
                             context: DistributedContext) -> None:
    """Replaces the trunk's ``feature_dropout`` (a ``FeatureDropout``) by a
    ``GlobalBatchFeatureDropout`` of the same rate; a trunk without one is left as it is."""
    dropout = getattr(trunk, "feature_dropout", None)
    if isinstance(dropout, FeatureDropout) and not isinstance(dropout, GlobalBatchFeatureDropout):
        trunk.feature_dropout = GlobalBatchFeatureDropout(dropout.p, local_batch, context)


def data_parallel(model: nn.Module, global_batch_size: int, context: DistributedContext,
                  device: torch.device) -> nn.Module:
    """``model`` (an ``EmbeddingModel``) for this rank: its trunk's feature dropout drawing
    global-batch masks, wrapped in DistributedDataParallel. BatchNorm is frozen, so its
    buffers never change and are not broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    use_global_batch_dropout(model.trunk, context.local_batch_size(global_batch_size), context)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
