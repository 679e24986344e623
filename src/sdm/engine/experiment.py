"""An experiment: the chosen folds of one config, each in ``<experiments_root>/<name>/fold_<k>/``.

A finished fold is skipped on rerun and an interrupted one resumes. Rerunning with a config
that differs in anything that changes training is refused unless the caller allows it; the
allowed differences are recorded in ``config_changes.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdm import records
from sdm.config import ConfigError, ExperimentConfig, config_difference, to_yaml
from sdm.data.datasets import ImageDataset, load_dataset
from sdm.data.splits import mlrc_splits

# Keys that may change between a run and its resumption without changing what is trained.
RESUMABLE_KEYS = ("name", "experiments_root", "dataset.root", "dataset.use_cache",
                  "training.folds", "training.device", "training.num_workers",
                  "training.eval_batch_size", "evaluation.")


def experiment_folder(config: DictConfig) -> Path:
    return Path(config.experiments_root) / config.name


def load_experiment_dataset(config: DictConfig) -> tuple[ImageDataset, dict[str, Any]]:
    """The configured dataset and its MLRC splits."""
    dataset = load_dataset(config.dataset.name, dataset_root=config.dataset.root,
                           path=config.dataset.path, allow_partial=config.dataset.allow_partial,
                           use_cache=config.dataset.use_cache)
    return dataset, mlrc_splits(dataset.classes)


def prepare_experiment_folder(config: DictConfig, allow_config_change: bool = False) -> Path:
    """Creates or reopens the experiment folder and records config and run information."""
    folder = experiment_folder(config)
    saved = folder / records.CONFIG_FILE
    if saved.is_file():
        old = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(saved))
        changes = {key: values for key, values in config_difference(old, config).items()
                   if not key.startswith(RESUMABLE_KEYS)}
        if changes and not allow_config_change:
            listed = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            raise ConfigError(
                f"experiment {folder} was started with a different config:\n{listed}\n"
                "Use another experiment name, or allow the change explicitly "
                "(sdm train --allow-config-change; run.py --merge_argparse_when_resuming)."
            )
        if changes:
            log_path = folder / records.CONFIG_CHANGES_FILE
            log = records.read_json(log_path) if log_path.is_file() else []
            log.append({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "changes": {k: list(v) for k, v in changes.items()}})
            records.write_json(log_path, log)
    folder.mkdir(parents=True, exist_ok=True)
    records.write_text(saved, to_yaml(config))
    records.write_json(folder / records.RUN_INFO_FILE, records.run_info(config.training.seed))
    return folder


def run_experiment(config: DictConfig, allow_config_change: bool = False) -> list[dict[str, Any]]:
    """Trains every fold in ``config.training.folds``; returns their summaries."""
    from sdm.engine.fold import FoldTrainer

    folder = prepare_experiment_folder(config, allow_config_change)
    dataset, splits = load_experiment_dataset(config)
    return [FoldTrainer(config, fold, folder, dataset, splits).run()
            for fold in config.training.folds]
