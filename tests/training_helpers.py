"""Helpers shared by the tests that train or differentiate real models, or stop a real
training process at a chosen moment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sdm.engine.fold import FoldTrainer
from sdm.models.batchnorm import train_with_frozen_batchnorm
from sdm.models.embedding_model import EmbeddingModel
from sdm.models.trunks import build_trunk

KILLABLE = Path(__file__).parent / "killable_train.py"
TIMEOUT = 300  # seconds a held child may take before the test gives up on it
# In a held command's environment: the STOP of the worker processes it spawns (killable_train.py)
WORKERS_STOP = "SDM_TEST_WORKERS_STOP"


def random_batchnorm_model(trunk_name: str, point: str = "stem", rate: float = 0.2,
                           image_size: int | None = None) -> EmbeddingModel:
    """A float64 trunk + 8-d linear embedder with the feature dropout at ``point`` and frozen
    BatchNorm whose statistics and affine weights are random (the initial ones make
    near-constant outputs); seeded, so equal arguments give equal models."""
    torch.manual_seed(0)
    trunk = build_trunk(trunk_name, pretrained=False, feature_dropout=rate, perturb_at=point,
                        image_size=image_size)
    model = EmbeddingModel(trunk.module, torch.nn.Linear(trunk.output_dim, 8)).double()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    train_with_frozen_batchnorm(model)
    return model


def passes_and_gradients(model: EmbeddingModel, images: torch.Tensor, passes: int,
                         batched: bool, shared: bool,
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The T perturbed passes' embeddings (the dropout masks drawn from seed 1) and the
    gradients of a fixed function of them, by parameter name (those that get one)."""
    torch.manual_seed(1)
    model.zero_grad()
    embeddings = model.perturbed_passes(images, passes, batched, shared)
    (embeddings / embeddings.detach().abs().max()).square().sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()
                 if p.grad is not None}
    return embeddings.detach(), gradients


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (absolute where b is all zeros)."""
    return float((a - b).abs().max()) / (float(b.abs().max()) or 1.0)


def assert_prefix_once_equals_whole_trunk(model: EmbeddingModel, images: torch.Tensor,
                                          passes: int) -> None:
    """The trunk's layers before its feature dropout run once for the ``passes`` perturbed
    passes give the embeddings of running the whole trunk each pass with the same masks
    (equal one pass after another, within 1e-12 batched) and gradients within 1e-10; every
    pass is perturbed differently."""
    for batched in (False, True):
        shared, shared_gradients = passes_and_gradients(model, images, passes, batched, True)
        whole, whole_gradients = passes_and_gradients(model, images, passes, batched, False)
        assert shared.shape == (passes, images.shape[0], 8)
        assert not torch.equal(shared[0], shared[1]), "feature dropout must perturb each pass"
        if batched:
            assert largest_difference(shared, whole) <= 1e-12
        else:
            assert torch.equal(shared, whole)
        assert shared_gradients.keys() == whole_gradients.keys()
        for name, expected in whole_gradients.items():
            assert largest_difference(shared_gradients[name], expected) <= 1e-10, name


@contextlib.contextmanager
def interrupted_at_epoch(epoch: int) -> Iterator[None]:
    """Within the block, ``FoldTrainer`` raises KeyboardInterrupt when it starts training
    ``epoch``, as a Ctrl-C there would; restored on leaving it."""
    original = FoldTrainer.train_one_epoch

    def stop(self, current: int):
        if current == epoch:
            raise KeyboardInterrupt
        return original(self, current)

    FoldTrainer.train_one_epoch = stop
    try:
        yield
    finally:
        FoldTrainer.train_one_epoch = original


def held_environment() -> dict[str, str]:
    """The environment of a held or rerun child: one thread, no warnings."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@contextlib.contextmanager
def held(command: list[str], stop: str, stderr: Any) -> Iterator[subprocess.Popen]:
    """``sdm COMMAND`` started in its own process group (``own_process_group``) and held at
    ``stop`` (see ``killable_train.py``; it has announced it and is still running).
    ``stderr``: where the child's stderr goes (a file, ``subprocess.PIPE``)."""
    with own_process_group([sys.executable, str(KILLABLE), stop, *command],
                           held_environment(), stderr) as job:
        assert job.stdout is not None
        announced = any(line.strip() == f"STOPPED {stop}" for line in job.stdout)
        assert announced and job.poll() is None, (
            f"the run did not stop at {stop}: exit {job.poll()}"
            + (f"\n{Path(stderr.name).read_text()[-4000:]}" if hasattr(stderr, "name") else ""))
        yield job


@contextlib.contextmanager
def own_process_group(command: list[str], environment: dict[str, str],
                      stderr: Any) -> Iterator[subprocess.Popen]:
    """``command`` started in a process group of its own, its stdout a pipe and its stderr to
    ``stderr`` (an open file, ``subprocess.PIPE``, ``subprocess.DEVNULL``). The whole group (the
    command, the workers it spawned, their resource tracker, which keeps the stdout pipe open)
    is SIGKILLed by a watchdog after ``TIMEOUT``, which ends any wait on it, and when the block
    ends if anything of it still runs."""
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                           env=environment, start_new_session=True)
    watchdog = threading.Timer(TIMEOUT, _kill_group, (job.pid,))
    watchdog.start()
    try:
        yield job
    finally:
        watchdog.cancel()
        _kill_group(job.pid)
        job.wait()
        for stream in (job.stdout, job.stderr):
            if stream is not None:
                stream.close()


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
