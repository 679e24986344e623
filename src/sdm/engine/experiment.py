"""An experiment: the chosen folds of one config, each in ``<experiments_root>/<name>/fold_<k>/``.

Everything that can be checked is checked before the folder is written (dataset, fold sizes,
loss, weights: see ``preflight``). A finished fold is skipped on rerun and an interrupted one
resumes. Rerunning with a config that differs in anything that changes training is refused
unless the caller allows it (the allowed differences are recorded in ``config_changes.json``)
— except while no fold has trained a step yet: then the experiment simply starts afresh with
the new config. ``ExperimentFolder`` is the one way to read a saved experiment back.
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sdm import constants as C
from sdm import records
from sdm.config import ConfigError, config_difference, load_config, to_yaml
from sdm.engine import distributed
from sdm.results import TestResults, read_results

# Keys that may change between a run and its resumption without changing what is trained
# (the device and how SDM's passes are run change random draws and rounding, not the method).
RESUMABLE_KEYS = ("name", "experiments_root", "dataset.root", "dataset.use_cache",
                  "dataset.check_images",
                  "training.folds", "training.device", "training.num_workers",
                  "training.eval_batch_size", "evaluation.", "sdm.shared_stem",
                  "sdm.batched_passes")


def experiment_folder(config: DictConfig) -> Path:
    """``<experiments_root>/<name>``."""
    return Path(config.experiments_root) / config.name


class ExperimentFolder:
    """A saved experiment: its config, per-fold files, validation curves and test results."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)

    @property
    def config(self) -> DictConfig:
        """The saved config, resolved as ``load_config`` resolves a file."""
        saved = self.path / C.CONFIG_FILE
        if not saved.is_file():
            raise FileNotFoundError(f"{self.path} is not an experiment folder: no {saved.name}")
        return load_config([saved])

    def fold(self, fold: int) -> Path:
        return records.fold_folder(self.path, fold)

    def checkpoint(self, fold: int, name: str) -> Path:
        """A fold's checkpoint file, e.g. ``checkpoint(0, constants.BEST_CHECKPOINT)``."""
        return self.fold(fold) / name

    def trained_folds(self, folds: list[int]) -> list[int]:
        """Those of ``folds`` that have a best checkpoint; an error when none has."""
        trained = [f for f in folds if self.checkpoint(f, C.BEST_CHECKPOINT).is_file()]
        if not trained:
            raise FileNotFoundError(
                f"no trained fold in {self.path} (looked for fold_<k>/{C.BEST_CHECKPOINT});"
                " train the experiment first")
        return trained

    def curves(self) -> dict[int, list[dict[str, str]]]:
        """``{fold: rows of metrics.csv}`` (validation per evaluated epoch) for every fold."""
        return {int(p.parent.name.split("_")[1]): records.read_csv(p)
                for p in sorted(self.path.glob(f"fold_*/{C.METRICS_CSV}"))}

    def has_trained_step(self) -> bool:
        """Whether any fold has recorded an epoch of training (epoch >= 1)."""
        return any(int(row["epoch"]) >= 1 for rows in self.curves().values() for row in rows)

    def results(self) -> TestResults:
        """What ``sdm evaluate`` wrote; FileNotFoundError when it has not run."""
        return read_results(self.path / C.RESULTS_FOLDER)


def prepare_experiment_folder(config: DictConfig, allow_config_change: bool = False) -> Path:
    """Creates or reopens the experiment folder and records config and run information."""
    folder = experiment_folder(config)
    if (folder / C.CONFIG_FILE).is_file():
        _accept_config(ExperimentFolder(folder), config, allow_config_change)
    folder.mkdir(parents=True, exist_ok=True)
    records.write_text(folder / C.CONFIG_FILE, to_yaml(config))
    records.write_json(folder / C.RUN_INFO_FILE, records.run_info(config.training.seed))
    return folder


def _accept_config(experiment: ExperimentFolder, config: DictConfig, allowed: bool) -> None:
    changes = {key: values for key, values in config_difference(experiment.config, config).items()
               if not key.startswith(RESUMABLE_KEYS)}
    if not changes:
        return
    if not experiment.has_trained_step():
        for fold_folder in sorted(experiment.path.glob("fold_*")):
            shutil.rmtree(fold_folder)
        print(f"{experiment.path} had not trained a step yet: starting it afresh with the "
              f"new config ({', '.join(changes)} changed)", file=sys.stderr)
        return
    if not allowed:
        listed = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"experiment {experiment.path} was started with a different config:\n{listed}\n"
            "Use another experiment name, or allow the change explicitly "
            "(sdm train --allow-config-change; run.py --merge_argparse_when_resuming).")
    log_path = experiment.path / C.CONFIG_CHANGES_FILE
    log = records.read_json(log_path) if log_path.is_file() else []
    log.append({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "changes": {k: list(v) for k, v in changes.items()}})
    records.write_json(log_path, log)


def prepare_experiment(config: DictConfig, allow_config_change: bool = False,
                       ) -> tuple[Path, Any, Any]:
    """Loads the dataset, checks the whole experiment (warnings are issued) and creates or
    reopens its folder; returns (folder, dataset, splits)."""
    from sdm.engine import build, preflight

    dataset, splits = build.load_experiment_dataset(config)
    for message in preflight.check_experiment(config, dataset, splits):
        warnings.warn(message, stacklevel=3)
    return prepare_experiment_folder(config, allow_config_change), dataset, splits


def run_experiment(
    config: DictConfig, allow_config_change: bool = False,
    on_validation: Callable[[int, int, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Checks the whole experiment, then trains every fold in ``config.training.folds``;
    returns their summaries. ``on_validation(fold, epoch, val MAP@R)`` is called after each
    validation (see ``FoldTrainer``). Started by torchrun, all its processes train each fold
    together (see ``distributed``)."""
    from sdm.engine.fold import FoldTrainer

    if distributed.launched_by_torchrun():
        return _run_distributed(config, allow_config_change, on_validation)
    folder, dataset, splits = prepare_experiment(config, allow_config_change)
    return [FoldTrainer(config, fold, folder, dataset, splits,
                        _for_fold(on_validation, fold)).run()
            for fold in config.training.folds]


def _run_distributed(config: DictConfig, allow_config_change: bool,
                     on_validation: Callable[[int, int, float], None] | None,
                     ) -> list[dict[str, Any]]:
    """``run_experiment`` in one process of a torchrun job: the main rank prepares the folder
    (any error there is raised on every rank), then all ranks train each fold together."""
    from sdm.engine import build
    from sdm.engine.fold import FoldTrainer

    context, device = distributed.start(config.training.device)
    try:
        context.local_batch_size(config.training.batch_size)
        error = None
        if context.is_main:
            try:
                prepare_experiment(config, allow_config_change)
            except Exception as raised:  # re-raised below, after the others have heard of it
                error = f"{type(raised).__name__}: {raised}"
        error = distributed.broadcast_from_main(error)
        if error is not None:
            raise RuntimeError(f"rank {context.rank}: the main rank could not prepare the "
                               f"experiment: {error}")
        dataset, splits = build.load_experiment_dataset(config)
        rank_config = copy.deepcopy(config)
        rank_config.training.device = str(device)
        folder = experiment_folder(config)
        return [FoldTrainer(rank_config, fold, folder, dataset, splits,
                            _for_fold(on_validation, fold), context).run()
                for fold in config.training.folds]
    finally:
        distributed.stop()


def _for_fold(callback: Callable[[int, int, float], None] | None,
              fold: int) -> Callable[[int, float], None] | None:
    if callback is None:
        return None
    return lambda epoch, score: callback(fold, epoch, score)
