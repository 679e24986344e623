"""An experiment: the chosen folds of one config, each in ``<experiments_root>/<name>/fold_<k>/``.

Everything that can be checked is checked before the folder is written (dataset, fold sizes,
loss, weights: see ``preflight``). A finished fold is skipped on rerun and an interrupted one
resumes. Rerunning with a config that differs in anything that changes training is refused
unless the caller allows it (the allowed differences are recorded in ``config_changes.json``)
— except while no fold has trained a step yet: then the experiment simply starts afresh with
the new config. ``ExperimentFolder`` owns an experiment's life: it trains, evaluates and reads a
saved experiment back; nothing else builds paths inside an experiment folder.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage
from sdm.config import ConfigError, ExperimentConfig, config_difference, load_config, to_yaml
from sdm.data.datasets import ImageDataset
from sdm.data.splits import Splits
from sdm.engine import distributed
from sdm.engine.mlflow_runs import FINISHED, exit_status, require_trackers
from sdm.engine.tracking import ExperimentTracking
from sdm.engine.training_lock import TrainingLock
from sdm.errors import USER_INPUT_ERRORS, UserInputError
from sdm.scores import ModelSetScores, TestResults, read_results, results_file, write_results

# Keys that may change between a run and its resumption without changing what is trained
# (the device and how SDM's passes are run change random draws and rounding, not the method).
RESUMABLE_KEYS = ("name", "experiments_root", "dataset.root", "dataset.use_cache",
                  "dataset.check_images",
                  "training.folds", "training.device", "training.num_workers",
                  "training.eval_batch_size", "evaluation.", "sdm.shared_stem",
                  "sdm.batched_passes", "training.loggers", "training.mlflow_uri",
                  "training.mlflow_experiment")


def experiment_folder(config: ExperimentConfig) -> Path:
    """``<experiments_root>/<name>``."""
    return Path(config.experiments_root) / config.name


class ExperimentFolder:
    """One experiment on disk and its life: train its folds (``run``), test them
    (``evaluate``), and read back its config, checkpoints, validation curves and results.

    Made from a config (``ExperimentFolder.of``), it trains and evaluates with that config;
    opened from a folder (``ExperimentFolder.open``), it reads the saved one. The dataset and
    splits are loaded once per instance, so ``run`` then ``evaluate`` load them once.
    """

    def __init__(self, folder: str | Path, config: ExperimentConfig | None = None):
        self.path = Path(folder)
        self._config = config
        self._data: tuple[ImageDataset, Splits] | None = None
        self.label: str | None = None
        self.tracking: ExperimentTracking | None = None  # opened by ``prepare``
        self.training_lock = TrainingLock(self.path)  # taken by ``prepare``

    @classmethod
    def of(cls, config: ExperimentConfig) -> ExperimentFolder:
        """The experiment ``config`` describes, in ``<experiments_root>/<name>``."""
        return cls(experiment_folder(config), config)

    @classmethod
    def open(cls, folder: str | Path) -> ExperimentFolder:
        """The experiment saved in ``folder``; a tuning study's folder (``sdm tune``) opens its
        best trial, labelled with the study's name and trial count."""
        path = Path(folder)
        study = path / C.STUDY_FILE
        if not study.is_file():
            return cls(path)
        summary = storage.read_json(study)
        if "best_folder" not in summary:
            raise FileNotFoundError(f"study {path} has no completed trial yet")
        best = cls(path / summary["best_folder"])
        best.label = (f"{summary['study']} (tuned: best of {summary['finished_trials']} "
                      f"trials, {summary['best_folder']})")
        return best

    @property
    def config(self) -> ExperimentConfig:
        """The config given, else the saved one, resolved as ``load_config`` resolves a file."""
        if self._config is None:
            saved = self.path / C.CONFIG_FILE
            if not saved.is_file():
                raise FileNotFoundError(
                    f"{self.path} is not an experiment folder: no {saved.name}")
            self._config = load_config([saved])
        return self._config

    @property
    def name(self) -> str:
        """What reports call it: the config's name, or a tuning study's label."""
        return self.label or str(self.config.name)

    def fold(self, fold: int) -> Path:
        """``<folder>/fold_<k>``: one fold's checkpoints and records."""
        return self.path / C.FOLD_FOLDER.format(fold=fold)

    def checkpoint(self, fold: int, name: str) -> Path:
        """A fold's checkpoint file, e.g. ``checkpoint(0, constants.BEST_CHECKPOINT)``."""
        return self.fold(fold) / name

    def trained_folds(self, folds: Sequence[int]) -> list[int]:
        """Those of ``folds`` that have a best checkpoint; an error when none has."""
        trained = [f for f in folds if self.checkpoint(f, C.BEST_CHECKPOINT).is_file()]
        if not trained:
            raise FileNotFoundError(
                f"no trained fold in {self.path} (looked for fold_<k>/{C.BEST_CHECKPOINT});"
                " train the experiment first")
        return trained

    def curves(self) -> dict[int, list[dict[str, str]]]:
        """``{fold: rows of metrics.csv}`` (validation per evaluated epoch) for every fold."""
        return {int(p.parent.name.split("_")[1]): storage.read_csv(p)
                for p in sorted(self.path.glob(f"fold_*/{C.METRICS_CSV}"))}

    def has_trained_step(self) -> bool:
        """Whether any fold has recorded an epoch of training (epoch >= 1)."""
        return any(int(row["epoch"]) >= 1 for rows in self.curves().values() for row in rows)

    def fold_summary(self, fold: int) -> dict[str, Any]:
        """A finished fold's summary (``FoldTrainer.run``'s return value, kept in its
        ``done.json``); FileNotFoundError while the fold has not finished."""
        return storage.read_json(self.fold(fold) / C.FOLD_DONE_FILE)

    def has_results(self) -> bool:
        """Whether ``evaluate`` has written its results."""
        return results_file(self.path / C.RESULTS_FOLDER, ".json").is_file()

    def results(self) -> TestResults:
        """What ``evaluate`` wrote; FileNotFoundError when it has not run."""
        return read_results(self.path / C.RESULTS_FOLDER)

    def data(self) -> tuple[ImageDataset, Splits]:
        """The config's dataset and its class-disjoint splits, loaded on first use."""
        if self._data is None:
            from sdm.engine import build

            self._data = build.load_experiment_dataset(self.config)
        return self._data

    def prepare(self, allow_config_change: bool = False, parent_run: str | None = None) -> None:
        """Checks the whole experiment (warnings are issued), takes its training lock
        (``self.training_lock``: ``FolderInUseError`` while another process trains it; held
        until released or the process ends), creates or reopens its folder (see
        ``prepare_experiment_folder``) and starts its tracking (``self.tracking``: the
        experiment's MLflow run, nested in ``parent_run`` when given, is opened and gets what
        the folder holds and it lacks; see ``sdm.engine.tracking``). The lock is released
        when this raises."""
        from sdm.engine import build, preflight

        require_trackers(self.config)
        build.resolve_device(self.config.training.device)  # before the dataset is read
        dataset, splits = self.data()
        for message in preflight.check_experiment(self.config, dataset, splits):
            warnings.warn(message, stacklevel=3)
        self.training_lock.acquire()
        try:
            prepare_experiment_folder(self.config, allow_config_change)
            self.tracking = ExperimentTracking(self.path, self.config, parent_run)
            self.tracking.start()
        except BaseException:
            self.training_lock.release()
            raise

    def run(self, allow_config_change: bool = False,
            on_validation: Callable[[int, int, float], None] | None = None,
            parent_run: str | None = None) -> list[dict[str, Any]]:
        """Checks the whole experiment, then trains every fold in ``training.folds``; returns
        their summaries. ``on_validation(fold, epoch, val MAP@R)`` is called after each
        validation (see ``FoldTrainer``). Started by torchrun, all its processes train each
        fold together (see ``distributed``). ``parent_run``: the MLflow run (a tuning
        study's) that this experiment's run is nested in."""
        from sdm.engine.fold import FoldTrainer

        if distributed.launched_by_torchrun():
            return self._run_distributed(allow_config_change, on_validation, parent_run)
        self.prepare(allow_config_change, parent_run)
        dataset, splits = self.data()
        try:
            with self._tracked():
                return [FoldTrainer(self.config, fold, self.fold(fold), dataset, splits,
                                    _for_fold(on_validation, fold), tracking=self.tracking).run()
                        for fold in self.config.training.folds]
        finally:
            self.training_lock.release()

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Ends the experiment's tracked run as the block ends (FINISHED, or KILLED / FAILED
        when it raises)."""
        try:
            yield
        except BaseException as error:
            if self.tracking is not None:
                self.tracking.end(exit_status(error))
            raise
        if self.tracking is not None:
            self.tracking.end(FINISHED)

    def _run_distributed(self, allow_config_change: bool,
                         on_validation: Callable[[int, int, float], None] | None,
                         parent_run: str | None = None) -> list[dict[str, Any]]:
        """``run`` in one process of a torchrun job: the main rank prepares the folder (any
        error there is raised on every rank), then all ranks train each fold together."""
        from sdm.engine.fold import FoldTrainer

        context, device = distributed.start(self.config.training.device)
        try:
            context.local_batch_size(self.config.training.batch_size)
            raised_on_main = None
            if context.is_main:
                try:
                    self.prepare(allow_config_change, parent_run)
                except Exception as raised:  # raised below, after the others have heard
                    raised_on_main = raised
            error = distributed.broadcast_from_main(None if raised_on_main is None else (
                isinstance(raised_on_main, USER_INPUT_ERRORS),
                f"{type(raised_on_main).__name__}: {raised_on_main}"))
            if raised_on_main is not None:
                raise raised_on_main
            if error is not None:  # bad input is reported as such by every rank
                bad_input, message = error
                raise (UserInputError if bad_input else RuntimeError)(
                    f"rank {context.rank}: the main rank could not prepare the experiment: "
                    f"{message}")
            dataset, splits = self.data()
            rank_config = copy.deepcopy(self.config)
            rank_config.training.device = str(device)
            with self._tracked():  # self.tracking: the main rank's only
                return [FoldTrainer(rank_config, fold, self.fold(fold), dataset, splits,
                                    _for_fold(on_validation, fold), context,
                                    self.tracking).run()
                        for fold in self.config.training.folds]
        finally:
            self.training_lock.release()  # the main rank's only
            distributed.stop()

    def evaluate(self, modes: tuple[str, ...] = C.EVAL_MODES, pretrained: bool = True,
                 ) -> TestResults:
        """The best checkpoint of every trained fold (and epoch 0 when ``pretrained``) on the
        test classes, written to ``<folder>/results/`` and returned; the experiment's tracked
        run then gets them (with whatever else of the folder it lacks) and ends FINISHED."""
        from sdm.engine import build
        from sdm.engine.evaluate import evaluate_models

        config = self.config
        require_trackers(config)
        folds = self.trained_folds(config.training.folds)
        test_set = build.test_dataset(config, *self.data())

        def scores(checkpoint: str) -> ModelSetScores:
            models = [build.load_checkpoint_model(config, self.checkpoint(fold, checkpoint))
                      for fold in folds]
            return evaluate_models(models, test_set, config, modes)

        measured = TestResults(
            experiment=config.name, folds=folds, trained=scores(C.BEST_CHECKPOINT),
            pretrained=scores(C.PRETRAINED_CHECKPOINT) if pretrained else None)
        write_results(self.path / C.RESULTS_FOLDER, measured)
        tracking = self.tracking or ExperimentTracking(self.path, config)
        tracking.start()
        tracking.end(FINISHED)
        return measured

    def evaluate_released_models(self, folder: str | Path,
                                 modes: tuple[str, ...] = C.EVAL_MODES) -> TestResults:
        """The paper's released models found below ``folder`` (one per fold), evaluated with
        this experiment's config on its test classes, written to
        ``<folder>/results_released/`` and returned."""
        from sdm.engine.evaluate import evaluate_released_models

        measured = evaluate_released_models(self.config, folder, *self.data(), modes)
        write_results(self.path / C.RELEASED_RESULTS_FOLDER, measured)
        return measured


def prepare_experiment_folder(config: ExperimentConfig, allow_config_change: bool = False) -> Path:
    """Creates or reopens the experiment folder and records config and run information."""
    folder = experiment_folder(config)
    if (folder / C.CONFIG_FILE).is_file():
        _accept_config(ExperimentFolder(folder), config, allow_config_change)
    folder.mkdir(parents=True, exist_ok=True)
    storage.write_text(folder / C.CONFIG_FILE, to_yaml(config))
    storage.write_json(folder / C.RUN_INFO_FILE, storage.run_info(config.training.seed))
    return folder


def _accept_config(experiment: ExperimentFolder, config: ExperimentConfig, allowed: bool) -> None:
    changes = {key: values for key, values in config_difference(experiment.config, config).items()
               if not key.startswith(RESUMABLE_KEYS)}
    if not changes:
        return
    if not experiment.has_trained_step():
        for fold_folder in sorted(experiment.path.glob("fold_*")):
            shutil.rmtree(fold_folder)
        # the new config gets a new tracked run (params cannot change in the old one)
        (experiment.path / C.MLFLOW_RUN_FILE).unlink(missing_ok=True)
        print(f"{experiment.path} had not trained a step yet: starting it afresh with the "
              f"new config ({', '.join(changes)} changed)", file=sys.stderr)
        return
    if not allowed:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"experiment {experiment.path} was started with a different config ({listed}); "
            "use another experiment name, or allow the change explicitly "
            "(sdm train --allow-config-change; run.py --merge_argparse_when_resuming)")
    log_path = experiment.path / C.CONFIG_CHANGES_FILE
    log = storage.read_json(log_path) if log_path.is_file() else []
    log.append({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "changes": {k: list(v) for k, v in changes.items()}})
    storage.write_json(log_path, log)


def _for_fold(callback: Callable[[int, int, float], None] | None,
              fold: int) -> Callable[[int, float], None] | None:
    if callback is None:
        return None
    return lambda epoch, score: callback(fold, epoch, score)
