"""Data-parallel training equals one process: run under torchrun by test_distributed.py (CPU,
gloo) and by benchmarks/gpu.sh (CUDA).

    torchrun --standalone --nproc_per_node=2 tests/distributed_steps.py CONFIG.yaml \
        [--steps 3] [--device cpu|cuda] [--backend gloo|nccl]

Every rank trains the same freshly seeded model for ``--steps`` steps on fixed global batches,
each rank on its slice of every batch, through the engine's own ``train_step`` and
``distributed`` pieces. Then the main rank leaves the group, trains the same model in one
process on the whole batches, and prints the largest differences as one JSON line: of the
losses of all steps (relative), and of the synchronized gradients and the parameters after
the first step and the parameters after the last (trunk, embedder and loss, each relative to
its tensor's largest entry), and whether all ranks hold the very same parameters at the end.
Exit status 1 when the losses or the first gradients differ by more than ``--tolerance`` or
the ranks' parameters differ at all. Parameters are reported, not checked against the single
process: RMSprop divides each gradient entry by its running RMS, so entries whose gradient is
at float-rounding level (near its eps, 1e-8) move by up to 10 x the learning rate in a
direction set by rounding, and a few steps on, runs that agree to 1e-7 in their losses differ
visibly in such parameters (1e-5 to 1e-3 of the tensor's largest entry on the tiny fixture).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from sdm.config import load_config
from sdm.engine import distributed
from sdm.engine.build import (
    batched_passes,
    build_fold_loss,
    build_model,
    build_optimizers,
    sdm_passes,
    seed_everything,
)
from sdm.engine.step import train_step
from sdm.models.batchnorm import train_with_frozen_batchnorm

CLASSES_PER_BATCH = 4


def global_batches(config, steps: int, channels: int, side: int):
    """``steps`` (images, labels) global batches drawn from their own generator."""
    generator = torch.Generator().manual_seed(1234)
    size = config.training.batch_size
    per_class = size // CLASSES_PER_BATCH
    for _ in range(steps):
        images = torch.randn(size, channels, side, side, generator=generator)
        classes = torch.randperm(2 * CLASSES_PER_BATCH, generator=generator)[:CLASSES_PER_BATCH]
        yield images, classes.repeat_interleave(per_class)


def train(config, steps: int, device: torch.device, context=None) -> dict:
    """Loss values of ``steps`` steps; the gradients (synchronized, under torchrun) and the
    parameters after the first step; the parameters after the last (trunk, embedder, loss)."""
    seed_everything(config.training.seed)
    model = build_model(config).to(device)
    train_with_frozen_batchnorm(model)
    loss_fn = build_fold_loss(config, 2 * CLASSES_PER_BATCH).to(device)
    optimizers = build_optimizers(config, model, loss_fn)
    train_model = model
    if context is not None:
        train_model = distributed.data_parallel(model, config.training.batch_size, context,
                                                device)
    channels = 1 if config.model.trunk == "small_cnn" else 3
    named = [*(("model." + k, v) for k, v in model.named_parameters()),
             *(("loss." + k, v) for k, v in loss_fn.named_parameters())]
    found: dict = {"losses": []}
    for images, labels in global_batches(config, steps, channels, config.transform.crop or 32):
        if context is not None:
            images, labels = context.local_share(images), context.local_share(labels)
        found["losses"].append(train_step(
            train_model, loss_fn, optimizers, images.to(device), labels.to(device),
            passes=sdm_passes(config), batched_passes=batched_passes(config, device),
            shared_stem=config.sdm.shared_stem, context=context))
        if len(found["losses"]) == 1:
            found["first_gradients"] = {k: v.grad.detach().cpu().clone() for k, v in named}
            found["first_parameters"] = {k: v.detach().cpu().clone() for k, v in named}
    found["last_parameters"] = {k: v.detach().cpu().clone() for k, v in named}
    return found


def largest_gap(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                ) -> tuple[float, str]:
    """The largest entry difference relative to the tensor's largest entry, and its tensor."""
    gaps = {name: float((other[name] - value).abs().max()
                        / value.abs().max().clamp_min(1e-30)) for name, value in reference.items()}
    worst = max(gaps, key=gaps.get)
    return gaps[worst], worst


def differences(alone: dict, together: dict) -> dict:
    """How far the data-parallel run is from the single process."""
    loss_gap = max(abs(a - b) / max(abs(a), 1e-12)
                   for a, b in zip(alone["losses"], together["losses"], strict=True))
    found = {"loss": loss_gap}
    for key in ("first_gradients", "first_parameters", "last_parameters"):
        found[key], found[f"{key}_worst"] = largest_gap(alone[key], together[key])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", help="default: nccl on CUDA, gloo otherwise")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    config = load_config([args.config])
    context, device = distributed.start(args.device, backend=args.backend)
    together = train(config, args.steps, device, context)
    flat = torch.cat([v.flatten() for v in together["last_parameters"].values()])
    every_rank = [torch.empty_like(flat) for _ in range(context.world_size)]
    torch.distributed.all_gather(every_rank, flat)
    ranks_identical = all(torch.equal(flat, other) for other in every_rank)
    distributed.stop()
    if not context.is_main:
        return 0
    alone = train(config, args.steps, device)
    found = differences(alone, together)
    found.update({"ranks_identical": ranks_identical, "world_size": context.world_size,
                  "device": str(device),
                  "losses": together["losses"], "passes": sdm_passes(config)})
    print(json.dumps(found), flush=True)
    return int(max(found["loss"], found["first_gradients"]) > args.tolerance
               or not ranks_identical)

if __name__ == "__main__":
    sys.exit(main())
