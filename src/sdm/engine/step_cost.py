"""How many baseline training steps one step of another config costs, measured here.

Both configs' models, losses and optimizers are built as the engine builds them and stepped
on the same random batch (of the configs' batch size and crop), interleaved round by round so
that a change in machine load affects both alike; the ratio of the medians is returned. Used
to give a baseline the compute of an SDM run (``sdm demo``); ``benchmarks/sdm_cost.py`` is the
fuller benchmark.
"""

from __future__ import annotations

import statistics
import time

import torch

from sdm.config import ExperimentConfig, without_pretrained_weights
from sdm.constants import GLYPH_INPUT
from sdm.engine import build
from sdm.engine.step import train_step
from sdm.models.batchnorm import train_with_frozen_batchnorm
from sdm.models.trunks import input_convention


def step_cost_ratio(baseline: ExperimentConfig, other: ExperimentConfig, *, rounds: int = 5,
                    warmup: int = 1) -> float:
    """Median seconds of a training step of ``other`` over that of ``baseline`` (on
    ``baseline``'s device), measured over ``rounds`` interleaved rounds after ``warmup``."""
    device = build.resolve_device(baseline.training.device)
    steppers = [_stepper(config, device) for config in (baseline, other)]
    seconds: list[list[float]] = [[], []]
    for round_index in range(warmup + rounds):
        for index, step in enumerate(steppers):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index >= warmup:
                seconds[index].append(time.perf_counter() - start)
    return statistics.median(seconds[1]) / statistics.median(seconds[0])


def _stepper(config: ExperimentConfig, device: torch.device):
    """A closure running one engine training step of ``config`` on a fixed random batch."""
    config = without_pretrained_weights(config)
    training = config.training
    channels = 1 if input_convention(config.model.trunk) == GLYPH_INPUT else 3
    crop = config.transform.crop or 32
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(training.batch_size, channels, crop, crop, generator=generator)
    classes = training.batch_size // training.m_per_class
    labels = torch.arange(classes).repeat_interleave(training.m_per_class)
    model = build.build_model(config).to(device)
    train_with_frozen_batchnorm(model)
    loss = build.build_fold_loss(config, classes).to(device)
    optimizers = build.build_optimizers(config, model, loss)
    precision = build.build_precision(config, device)
    images, labels = images.to(device), labels.to(device)

    def step() -> None:
        train_step(model, loss, optimizers, images, labels, passes=build.sdm_passes(config),
                   batched_passes=build.batched_passes(config, device),
                   shared_stem=config.sdm.shared_stem, precision=precision)
    return step
