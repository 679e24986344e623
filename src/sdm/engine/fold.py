"""One cross-validation fold of the MLRC protocol, with SDM built in.

Epoch -1 (trunk alone) and epoch 0 (trunk + untrained embedder) are evaluated first; then
each epoch runs ``iterations_per_epoch`` batches from an m-per-class sampler, validation
MAP@R is measured every ``save_interval`` epochs, the best and latest checkpoints are kept,
and training stops once ``epoch - best_epoch > patience``. A fold resumes from its latest
checkpoint with the same optimizer, sampler and RNG state, so an interrupted fold ends with
the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from sdm import constants as C
from sdm import storage
from sdm.config import ExperimentConfig
from sdm.data.datasets import ImageDataset
from sdm.data.splits import Splits
from sdm.engine import build, distributed
from sdm.engine.distributed import DistributedContext
from sdm.engine.embeddings import evaluation_embeddings
from sdm.engine.precision import prepare_model
from sdm.engine.step import train_step
from sdm.engine.tracking import ExperimentTracking, FoldTracking
from sdm.errors import cause
from sdm.metrics import retrieval_metrics
from sdm.models.batchnorm import train_with_frozen_batchnorm


@dataclass
class FoldState:
    """What survives between epochs: saved in every checkpoint."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -1.0
    history: list[dict[str, Any]] | None = None


class FoldTrainer:
    """Trains one fold of an experiment in its folder ``fold_dir`` (``<experiment>/fold_<k>/``,
    see ``ExperimentFolder.fold``).

    ``on_validation(epoch, val MAP@R)``, when given, is called after each validation from
    epoch 0 on, once the epoch's records are written; an exception it raises stops the fold
    (a tuner prunes a trial this way).

    Under torchrun (``context``) every rank trains its slice of each global batch (see
    ``distributed``); the main rank alone validates, writes checkpoints and records, and the
    others take its validation score, so all stop at the same epoch.

    The main process records each validation, epoch loss and the fold's end with the
    experiment's trackers (``tracking``, see ``sdm.engine.tracking``; without it, those of
    ``training.loggers`` for the experiment folder above ``fold_dir``).
    """

    def __init__(self, config: ExperimentConfig, fold: int, fold_dir: str | Path,
                 dataset: ImageDataset, splits: Splits,
                 on_validation: Callable[[int, float], None] | None = None,
                 context: DistributedContext | None = None,
                 tracking: ExperimentTracking | None = None):
        self.config = config
        self.tracking = tracking
        self.tracker = FoldTracking()  # the fold's trackers while it runs (``run``)
        self.on_validation = on_validation
        self.context = context
        self.is_main = context is None or context.is_main
        self.fold = fold
        self.folder = Path(fold_dir)
        self.device = build.resolve_device(config.training.device)
        build.seed_everything(config.training.seed + fold)
        self.model = build.build_model(config).to(self.device)
        self.train_set, self.val_set = build.fold_datasets(config, dataset, splits, fold)
        train_classes = self.train_set.classes
        self.label_lookup = torch.full((max(train_classes) + 1,), -1, dtype=torch.long)
        self.label_lookup[train_classes] = torch.arange(len(train_classes))
        self.loss = build.build_fold_loss(config, len(train_classes)).to(self.device)
        self.miner = build.build_fold_miner(config)
        self.optimizers = build.build_optimizers(config, self.model, self.loss)
        self.sampler = build.build_sampler(
            config, self.label_lookup[torch.as_tensor(self.train_set.labels)].numpy())
        self.precision = build.build_precision(config, self.device)
        prepare_model(self.model, self.precision)
        self.scaler = self.precision.grad_scaler()
        self.train_model = self.model if context is None else distributed.data_parallel(
            self.model, config.training.batch_size, context, self.device)
        self.state = FoldState(history=[])

    # ----- checkpoints -------------------------------------------------------------------

    def _models_state(self) -> dict[str, Any]:
        return {"trunk": self.model.trunk.state_dict(),
                "embedder": self.model.embedder.state_dict(),
                "loss": self.loss.state_dict(), "epoch": self.state.epoch}

    def _save_latest(self) -> None:
        if not self.is_main:
            return
        state = self._models_state()
        state.update({
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "fold_state": vars(self.state),
            "sampler_labels": list(self.sampler.labels),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        })
        storage.save_checkpoint(self.folder / C.LATEST_CHECKPOINT, state)

    def _resume(self) -> bool:
        """Restores the fold from its latest checkpoint; False when there is none.
        CheckpointError saying what to do when it cannot be read or does not fit the fold."""
        path = self.folder / C.LATEST_CHECKPOINT
        if not path.is_file():
            return False
        try:
            self._restore(storage.load_checkpoint(path))
        except (storage.CheckpointError, KeyError, TypeError, ValueError, RuntimeError) as error:
            raise storage.CheckpointError(self._unusable_latest(path, error)) from error
        return True

    def _unusable_latest(self, path: Path, error: Exception) -> str:
        """Why the latest checkpoint ``path`` cannot resume the fold, whether the best
        checkpoint is intact, and how to restart the fold (nothing is deleted here)."""
        if isinstance(error, storage.CheckpointError):
            reason = str(error)
        else:
            reason = (f"checkpoint {path} does not fit this fold's model and training state "
                      f"({cause(error)})")
        best = self.folder / C.BEST_CHECKPOINT
        keep = ""
        try:
            best_note = (f"Its best checkpoint {best} is intact (epoch "
                         f"{storage.load_checkpoint(best).get('epoch', '?')})")
            keep = f"; the restart replaces {best}, so copy it elsewhere first to keep it"
        except FileNotFoundError:
            best_note = f"It has no best checkpoint ({best})"
        except storage.CheckpointError:
            best_note = f"Its best checkpoint {best} cannot be read either"
        return (f"fold {self.fold} cannot resume: {reason}. {best_note}. To restart fold "
                f"{self.fold} from epoch 0, delete {path} and run the same command again{keep}")

    def _restore(self, state: dict[str, Any]) -> None:
        """Model, loss, optimizers, scaler, fold state, sampler and RNGs from ``state``."""
        self.model.trunk.load_state_dict(state["trunk"])
        self.model.embedder.load_state_dict(state["embedder"])
        self.loss.load_state_dict(state["loss"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.scaler.load_state_dict(state["scaler"])
        self.state = FoldState(**state["fold_state"])
        self.sampler.labels = list(state["sampler_labels"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ----- validation --------------------------------------------------------------------

    def _validate(self, epoch: int, trunk_only: bool = False) -> float:
        """Validation MAP@R; under torchrun measured by the main rank and sent to the others,
        whose random state then follows the main rank's (validation draws from it)."""
        score = self._measure_validation(epoch, trunk_only) if self.is_main else 0.0
        if self.context is not None:
            score = distributed.broadcast_from_main(score)
            distributed.share_random_state()
        return score

    def _measure_validation(self, epoch: int, trunk_only: bool) -> float:
        embeddings, labels = evaluation_embeddings(
            self.model, self.val_set, device=self.device,
            batch_size=self.config.training.eval_batch_size,
            num_workers=self.config.training.num_workers, trunk_only=trunk_only,
        )
        metrics = retrieval_metrics(embeddings, labels)
        row = {"epoch": epoch, **{name: metrics[name] for name in C.METRIC_NAMES}}
        assert self.state.history is not None
        self.state.history.append(row)
        storage.write_csv(self.folder / C.METRICS_CSV, self.state.history)
        self.tracker.validation(epoch, {name: metrics[name] for name in C.METRIC_NAMES})
        return metrics[C.MAP_AT_R]

    def _record_if_best(self, epoch: int, score: float) -> None:
        if score > self.state.best_score:
            self.state.best_score, self.state.best_epoch = score, epoch
            if self.is_main:
                storage.save_checkpoint(self.folder / C.BEST_CHECKPOINT, self._models_state())

    def _validated(self, epoch: int, score: float) -> None:
        """Keeps the best checkpoint and the latest state, then tells ``on_validation``."""
        self._record_if_best(epoch, score)
        self._save_latest()
        if self.on_validation is not None:
            self.on_validation(epoch, score)

    # ----- training ----------------------------------------------------------------------

    def train_one_epoch(self, epoch: int) -> float:
        """One epoch of ``iterations_per_epoch`` batches; returns the mean loss."""
        training = self.config.training
        train_with_frozen_batchnorm(self.model)
        # Under torchrun every rank loads the whole global batch, so that its random
        # augmentations are those of one process, and keeps its share.
        loader = DataLoader(self.train_set, batch_size=training.batch_size, sampler=self.sampler,
                            num_workers=training.num_workers, drop_last=True)
        total, steps = 0.0, 0
        bar = tqdm(loader, desc=f"fold {self.fold} epoch {epoch}", leave=False,
                   disable=None if self.is_main else True, total=len(loader),
                   dynamic_ncols=True)
        for images, labels in bar:
            if self.context is not None:
                images, labels = self.context.local_share(images), self.context.local_share(labels)
            images = images.to(self.device, non_blocking=True)
            labels = self.label_lookup[labels].to(self.device)
            value = train_step(self.train_model, self.loss, self.optimizers, images, labels,
                               passes=build.sdm_passes(self.config),
                               batched_passes=build.batched_passes(self.config, self.device),
                               shared_stem=self.config.sdm.shared_stem,
                               miner=self.miner, precision=self.precision,
                               scaler=self.scaler, context=self.context)
            total, steps = total + value, steps + 1
            self.tracker.train_loss((epoch - 1) * training.iterations_per_epoch + steps, value)
            bar.set_postfix(loss=f"{value:.4f}")
        return total / max(steps, 1)

    def run(self) -> dict[str, Any]:
        """Trains (or resumes, or skips when finished) and returns the fold's summary."""
        done = self.folder / C.FOLD_DONE_FILE
        if done.is_file():
            return storage.read_json(done)
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            storage.remove_partial_writes(self.folder)
            tracking = self.tracking or ExperimentTracking(self.folder.parent, self.config)
            self.tracker = tracking.fold(self.fold, self.folder)
        start = time.time()
        with self.tracker:  # closed FINISHED once done.json is written, else KILLED / FAILED
            if not self._resume():
                self._validate(-1, trunk_only=True)
                score = self._validate(0)
                if self.is_main:
                    storage.save_checkpoint(self.folder / C.PRETRAINED_CHECKPOINT,
                                            self._models_state())
                self._validated(0, score)
            self._train_epochs()
            summary = {"fold": self.fold, "best_epoch": self.state.best_epoch,
                       "best_val_map_at_r": self.state.best_score,
                       "last_epoch": self.state.epoch,
                       "seconds_this_session": round(time.time() - start, 1)}
            if self.is_main:
                storage.write_json(done, summary)
        if self.context is not None:
            distributed.barrier()
        return summary

    def _train_epochs(self) -> None:
        training = self.config.training
        while self.state.epoch < training.max_epochs:
            epoch = self.state.epoch + 1
            mean_loss = self.train_one_epoch(epoch)
            self.state.epoch = epoch
            self.tracker.epoch_loss(epoch, mean_loss)
            is_last = epoch == training.max_epochs
            if epoch % training.save_interval == 0 or is_last:
                self._validated(epoch, self._validate(epoch))
                if epoch - self.state.best_epoch > training.patience:
                    break
