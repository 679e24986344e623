"""Data-parallel training equals one process: run under torchrun by test_distributed.py (CPU,
gloo) and by benchmarks/gpu.sh (CUDA).

    torchrun --standalone --nproc_per_node=2 tests/distributed_steps.py CONFIG.yaml \
        [--steps 3] [--optimizer rmsprop|sgd] [--device cpu|cuda] [--backend gloo|nccl]

Every rank trains the same freshly seeded model for ``--steps`` steps on fixed global batches,
each rank on its slice of every batch, through the engine's own ``train_step`` and
``distributed`` pieces. Then the main rank leaves the group, trains the same model in one
process on the whole batches, and prints the largest differences as one JSON line: of the
losses of all steps, of the synchronized gradients and the parameters after the first step
and of the parameters after the last (trunk, embedder and loss, each relative to its tensor's
largest entry), the last parameters' difference relative to their change in training
(``last_vs_moved``), and whether all ranks hold the very same parameters at the end. Exit
status 1 when the losses or the first gradients differ by more than ``--tolerance`` or the
ranks' parameters differ at all.

``--optimizer rmsprop`` (default) is the protocol's (``build_optimizers``); ``sgd`` is plain
SGD with the config's learning rates, momentum and weight decay. Only SGD's parameters can be
compared with one process's after many steps: RMSprop divides each gradient entry by its
running RMS, so an entry whose gradient is at float-rounding level moves by up to 10 x the
learning rate in a direction set by rounding, and a few steps on, runs whose losses agree to
1e-7 differ visibly in their parameters (1e-3 of a tensor's largest entry after 3 steps on the
tiny fixture, tens of percent after 36). SGD moves each entry by its gradient times the
learning rate, so rounding differences stay at rounding level.
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
OPTIMIZERS = ("rmsprop", "sgd")


def global_batches(config, steps: int, channels: int, side: int):
    """``steps`` (images, labels) global batches drawn from their own generator."""
    generator = torch.Generator().manual_seed(1234)
    size = config.training.batch_size
    per_class = size // CLASSES_PER_BATCH
    for _ in range(steps):
        images = torch.randn(size, channels, side, side, generator=generator)
        classes = torch.randperm(2 * CLASSES_PER_BATCH, generator=generator)[:CLASSES_PER_BATCH]
        yield images, classes.repeat_interleave(per_class)


def sgd_optimizers(config, model, loss_fn) -> dict[str, torch.optim.Optimizer]:
    """SGD for the parts ``build_optimizers`` gives RMSprop, with the same learning rates,
    momentum and weight decays."""
    opt = config.optimizer
    optimizers = {
        part: torch.optim.SGD(module.parameters(), lr=lr, momentum=opt.momentum,
                              weight_decay=opt.weight_decay)
        for part, module, lr in (("trunk", model.trunk, opt.trunk_lr),
                                 ("embedder", model.embedder, opt.embedder_lr))}
    loss_parameters = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_parameters:
        optimizers["loss"] = torch.optim.SGD(loss_parameters, lr=opt.loss_lr,
                                             momentum=opt.momentum,
                                             weight_decay=opt.loss_weight_decay)
    return optimizers


def train(config, steps: int, device: torch.device, context=None,
          optimizer: str = "rmsprop") -> dict:
    """Loss values of ``steps`` steps; the parameters before the first step; the gradients
    (synchronized, under torchrun) and the parameters after the first step; the parameters
    after the last (trunk, embedder, loss)."""
    seed_everything(config.training.seed)
    model = build_model(config).to(device)
    train_with_frozen_batchnorm(model)
    loss_fn = build_fold_loss(config, 2 * CLASSES_PER_BATCH).to(device)
    build = build_optimizers if optimizer == "rmsprop" else sgd_optimizers
    optimizers = build(config, model, loss_fn)
    train_model = model
    if context is not None:
        train_model = distributed.data_parallel(model, config.training.batch_size, context,
                                                device)
    channels = 1 if config.model.trunk == "small_cnn" else 3
    named = [*(("model." + k, v) for k, v in model.named_parameters()),
             *(("loss." + k, v) for k, v in loss_fn.named_parameters())]
    found: dict = {"losses": [],
                   "initial_parameters": {k: v.detach().cpu().clone() for k, v in named}}
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
    """The largest entry difference relative to the largest entry of either tensor (so that
    a bias that starts at zero is measured on its trained scale), and its tensor."""
    gaps = {name: float((other[name] - value).abs().max()
                        / torch.maximum(value.abs().max(), other[name].abs().max())
                        .clamp_min(1e-30)) for name, value in reference.items()}
    worst = max(gaps, key=gaps.get)
    return gaps[worst], worst


def differences(alone: dict, together: dict) -> dict:
    """How far the data-parallel run is from the single process (losses relative to the
    larger of the loss and 1, as their rounding error is absolute below 1), and how far the
    parameters differ at the end compared with how far training moved them
    (``last_vs_moved``: the largest, over tensors, of the largest entry difference from one
    process over the largest entry change from the start)."""
    loss_gap = max(abs(a - b) / max(abs(a), 1.0)
                   for a, b in zip(alone["losses"], together["losses"], strict=True))
    found = {"loss": loss_gap}
    for key in ("first_gradients", "first_parameters", "last_parameters"):
        found[key], found[f"{key}_worst"] = largest_gap(alone[key], together[key])
    start, end, other = (alone["initial_parameters"], alone["last_parameters"],
                         together["last_parameters"])
    ratios = {name: float((other[name] - end[name]).abs().max()
                          / (end[name] - value).abs().max().clamp_min(1e-30))
              for name, value in start.items()}
    found["last_vs_moved"] = max(ratios.values())
    found["last_vs_moved_worst"] = max(ratios, key=ratios.get)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="rmsprop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", help="default: nccl on CUDA, gloo otherwise")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    config = load_config([args.config])
    context, device = distributed.start(args.device, backend=args.backend)
    together = train(config, args.steps, device, context, args.optimizer)
    flat = torch.cat([v.flatten() for v in together["last_parameters"].values()])
    every_rank = [torch.empty_like(flat) for _ in range(context.world_size)]
    torch.distributed.all_gather(every_rank, flat)
    ranks_identical = all(torch.equal(flat, other) for other in every_rank)
    distributed.stop()
    if not context.is_main:
        return 0
    alone = train(config, args.steps, device, optimizer=args.optimizer)
    found = differences(alone, together)
    found.update({"ranks_identical": ranks_identical, "world_size": context.world_size,
                  "device": str(device), "optimizer": args.optimizer,
                  "losses": together["losses"], "passes": sdm_passes(config)})
    print(json.dumps(found), flush=True)
    return int(max(found["loss"], found["first_gradients"]) > args.tolerance
               or not ranks_identical)

if __name__ == "__main__":
    sys.exit(main())
