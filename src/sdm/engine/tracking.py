"""Experiment tracking: where training is recorded besides the experiment folder's own files.

``training.loggers`` picks the trackers, any of ``tensorboard`` (the default: each fold's
event files in ``fold_<k>/tensorboard/``) and ``mlflow`` (the ``[mlflow]`` extra, through an
explicit ``MlflowClient``: no global MLflow state). Only the main process tracks. The folder's
own records (config.yaml, metrics.csv, done.json, results/) stay the reference: trackers get
copies, and training never waits on a tracker that fails.

MLflow (at ``training.mlflow_uri``; unset, the SQLite store ``<experiments_root>/mlflow.db``
with artifacts in ``<experiments_root>/mlartifacts/``), in the MLflow experiment
``training.mlflow_experiment``:

- one run per experiment, named after it (``name``): the resolved config as flattened params
  (``training.batch_size`` = ``8``), config.yaml, run_info.json and config_changes.json as
  artifacts, and after ``evaluate`` the test results as metrics (``test/trained/concatenated/
  mean_average_precision_at_r``, ``test/trained/separated/mean/...``, ``.../std/...``,
  ``.../fold_<k>/...``, ``test/pretrained/...``) and their files under ``results/``;
- one nested run per fold (``fold_<k>``, tag ``mlflow.parentRunId``): every validation metric
  as ``val/<metric>`` with step = epoch (-1: the trunk alone, 0: untrained embedder), the
  epoch's mean loss ``train/epoch_loss``, and once the fold is done ``best_val_map_at_r``,
  ``best_epoch``, ``last_epoch`` and its metrics.csv and done.json as artifacts;
- ``sdm tune``: one run per study, its trials' experiment runs nested in it
  (``sdm.tune.tracking``).

The runs' ids are kept in ``mlflow_run.json`` beside config.yaml and in each fold folder (a fold
writes only its own, so parallel folds never write the same file), so a resumed experiment
continues the same runs. Opening an experiment's run uploads what the local records hold and
the server lacks (params, metric steps, results, finished folds), so a resume logs no step
twice, and an experiment trained while the server was down is uploaded by its next run or
evaluation, or by ``sdm track upload EXPERIMENT_DIR``.

A tracking server that is down or refuses: the first failing call warns once (a
``TrackingWarning`` saying how to upload later) and turns MLflow off for the rest of that
experiment; training and its local records go on unchanged (``sdm.engine.mlflow_runs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage
from sdm.config import ExperimentConfig
from sdm.engine.mlflow_runs import (
    FINISHED,
    KILLED,
    METRICS_PER_BATCH,
    PARENT_TAG,
    RUNNING,
    Connection,
    RecordedRun,
    chunks,
    existing_run,
    exit_status,
    now_ms,
    read_run_record,
    require_trackers,
    tracking_uri,
)

VALIDATION_KEYS = {name: f"val/{name}" for name in C.METRIC_NAMES}
EPOCH_LOSS_KEY = "train/epoch_loss"
TRAIN_LOSS_KEY = "train/loss"  # TensorBoard only: one point per iteration
FOLD_SUMMARY_KEYS = ("best_val_map_at_r", "best_epoch", "last_epoch")  # from done.json


def flat_params(config: ExperimentConfig) -> dict[str, str]:
    """The config's leaves as ``{dotted key: str(value)}``: MLflow's params."""
    out: dict[str, str] = {}

    def walk(tree: Any, prefix: str) -> None:
        if isinstance(tree, dict) and tree:
            for key, value in tree.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(tree)

    walk(asdict(config), "")
    return out


def result_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a ``test_results.json`` as MLflow metrics: ``test/<models>/<mode>/...``
    (``<models>``: trained, pretrained; separated: ``mean``, ``std`` and ``fold_<k>``)."""
    folds = results.get("folds") or []
    out: dict[str, float] = {}
    for models in ("trained", "pretrained"):
        scores = results.get(models) or {}
        for metric, value in (scores.get(C.CONCATENATED) or {}).items():
            out[f"test/{models}/{C.CONCATENATED}/{metric}"] = float(value)
        separated = scores.get(C.SEPARATED) or {}
        parts = {"mean": separated.get("mean") or {}, "std": separated.get("std") or {}}
        for index, per_model in enumerate(separated.get("per_model") or []):
            parts[f"fold_{folds[index]}" if index < len(folds) else f"model_{index}"] = per_model
        for part, values in parts.items():
            for metric, value in values.items():
                out[f"test/{models}/{C.SEPARATED}/{part}/{metric}"] = float(value)
    return out


# ----- MLflow for one experiment -----------------------------------------------------------


@dataclass
class _FoldRun:
    """A fold's nested run: its id, the steps each metric has on the server, and whether the
    finished fold is wholly uploaded (then it is never looked at again)."""

    run_id: str
    folder: Path
    logged: dict[str, set[int]] = field(default_factory=dict)
    complete: bool = False


class _MlflowExperiment:
    """An experiment's MLflow runs: its own (``RecordedRun``) and one nested run per fold."""

    def __init__(self, folder: Path, config: ExperimentConfig, parent_run: str | None = None,
                 uri: str | None = None, strict: bool = False):
        self.folder, self.config = folder, config
        self.connection = Connection(uri or tracking_uri(config, folder), folder, strict)
        self.top = RecordedRun(self.connection, folder, config.name,
                               config.training.mlflow_experiment, parent_run)
        self.folds: dict[int, _FoldRun] = {}

    @property
    def run_id(self) -> str | None:
        return self.top.run_id

    # public: each is one guarded call (a failure warns once and turns MLflow off)

    def sync(self) -> None:
        """Opens the run and uploads everything the folder holds that the server lacks."""
        self.connection.call(self._sync)

    def fold(self, fold: int, folder: Path) -> FoldLogger:
        state = self.connection.call(self._sync_fold, fold, folder)
        return _MlflowFold(self, state) if state is not None else _NoLogger()

    def end(self, status: str) -> None:
        self.connection.call(self.top.end, status)

    def end_unfinished_folds(self, status: str) -> None:
        self.connection.call(self._end_unfinished_folds, status)

    # the actions

    def _open(self) -> Any:
        run = self.top.open(flat_params(self.config))
        self.top.upload_files([self.folder / C.CONFIG_FILE, self.folder / C.RUN_INFO_FILE,
                               self.folder / C.CONFIG_CHANGES_FILE])
        return run

    def _sync(self) -> None:
        if self.top.run is None:
            self._open()
        folds = sorted(self.folder.glob(C.FOLD_FOLDER.format(fold="*")),
                       key=lambda p: int(p.name.split("_")[1]))
        for folder in folds:
            self._sync_fold(int(folder.name.split("_")[1]), folder)
        self._sync_results()

    def _fold_run(self, fold: int, folder: Path) -> _FoldRun:
        client, uri = self.connection.client, self.connection.uri
        path = folder / C.MLFLOW_RUN_FILE
        record = read_run_record(path, uri) or {}
        if record.get("parent_run_id") != self.run_id:
            record = {}
        if record.get("complete"):
            return _FoldRun(record["run_id"], folder, complete=True)
        run = existing_run(client, record.get("run_id"))
        if run is None:
            run = client.create_run(self.top.run.info.experiment_id,
                                    run_name=C.FOLD_FOLDER.format(fold=fold),
                                    tags={PARENT_TAG: self.run_id, "sdm.fold": str(fold)})
            storage.write_json(path, {"tracking_uri": uri, "run_id": run.info.run_id,
                                      "parent_run_id": self.run_id, "complete": False})
        elif run.info.status != RUNNING:
            client.update_run(run.info.run_id, status=RUNNING)
        keys = [*VALIDATION_KEYS.values(), EPOCH_LOSS_KEY]
        logged = {key: {m.step for m in client.get_metric_history(run.info.run_id, key)}
                  for key in keys}
        return _FoldRun(run.info.run_id, folder, logged)

    def _sync_fold(self, fold: int, folder: Path) -> _FoldRun:
        """The fold's run (created when missing) with the metrics.csv rows it lacks; a fold
        whose done.json is there is finished (see ``_finish_fold``)."""
        if self.top.run is None:
            self._open()
        state = self.folds.get(fold)
        if state is None:
            state = self.folds[fold] = self._fold_run(fold, folder)
        if state.complete:
            return state
        csv = folder / C.METRICS_CSV
        rows = storage.read_csv(csv) if csv.is_file() else []
        self._log(state, [(key, float(row[name]), int(row["epoch"]))
                          for row in rows for name, key in VALIDATION_KEYS.items()
                          if row.get(name) not in (None, "")])
        if (folder / C.FOLD_DONE_FILE).is_file():
            self._finish_fold(state)
        return state

    def _log(self, state: _FoldRun, points: list[tuple[str, float, int]]) -> None:
        """Logs the (key, value, step) points whose step the key does not have yet."""
        from mlflow.entities import Metric

        new = [(k, v, s) for k, v, s in points if s not in state.logged.setdefault(k, set())]
        stamp = now_ms()
        for chunk in chunks(new, METRICS_PER_BATCH):
            self.connection.client.log_batch(
                state.run_id, metrics=[Metric(k, v, stamp, s) for k, v, s in chunk])
            for key, _, step in chunk:
                state.logged[key].add(step)

    def _finish_fold(self, state: _FoldRun) -> None:
        """A done fold: its summary as metrics, metrics.csv and done.json as artifacts, status
        FINISHED, and its record marked complete."""
        from mlflow.entities import Metric

        client = self.connection.client
        summary = storage.read_json(state.folder / C.FOLD_DONE_FILE)
        have = client.get_run(state.run_id).data.metrics
        stamp = now_ms()
        metrics = [Metric(key, float(summary[key]), stamp, 0) for key in FOLD_SUMMARY_KEYS
                   if key in summary and have.get(key) != float(summary[key])]
        if metrics:
            client.log_batch(state.run_id, metrics=metrics)
        for name in (C.METRICS_CSV, C.FOLD_DONE_FILE):
            client.log_artifact(state.run_id, str(state.folder / name))
        client.set_terminated(state.run_id, FINISHED)
        storage.write_json(state.folder / C.MLFLOW_RUN_FILE,
                           {"tracking_uri": self.connection.uri, "run_id": state.run_id,
                            "parent_run_id": self.run_id, "complete": True})
        state.complete = True

    def _sync_results(self) -> None:
        """The test results (results/test_results.json) as metrics and files, when they are
        there and differ from the run's."""
        from mlflow.entities import Metric

        folder = self.folder / C.RESULTS_FOLDER
        json_file = folder / f"{C.TEST_RESULTS_NAME}.json"
        if not json_file.is_file():
            return
        client = self.connection.client
        have = client.get_run(self.run_id).data.metrics
        stamp = now_ms()
        new = [Metric(key, value, stamp, 0)
               for key, value in result_metrics(storage.read_json(json_file)).items()
               if have.get(key) != value]
        if not new:
            return
        self.top.upload_files([folder / f"{C.TEST_RESULTS_NAME}{suffix}"
                               for suffix in (".json", ".csv", ".md")], C.RESULTS_FOLDER)
        for chunk in chunks(new, METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=chunk)

    def _end_unfinished_folds(self, status: str) -> None:
        for state in self.folds.values():
            if not state.complete:
                self.connection.client.set_terminated(state.run_id, status)


# ----- what the fold loop talks to ---------------------------------------------------------


class FoldLogger:
    """One tracker of one fold: validation metrics per epoch, training losses, the end."""

    def validation(self, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def train_loss(self, step: int, value: float) -> None:
        pass

    def epoch_loss(self, epoch: int, value: float) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class _NoLogger(FoldLogger):
    """A tracker that is off (MLflow failed to open the fold's run)."""


class _TensorBoardFold(FoldLogger):
    """``fold_<k>/tensorboard/``: ``val/<metric>`` per epoch, ``train/loss`` per iteration,
    ``train/epoch_loss`` per epoch."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder / C.TENSORBOARD_FOLDER))

    def validation(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, epoch)

    def train_loss(self, step: int, value: float) -> None:
        self.writer.add_scalar(TRAIN_LOSS_KEY, value, step)

    def epoch_loss(self, epoch: int, value: float) -> None:
        self.writer.add_scalar(EPOCH_LOSS_KEY, value, epoch)

    def close(self, status: str) -> None:
        self.writer.close()


class _MlflowFold(FoldLogger):
    """A fold's nested MLflow run: ``val/<metric>`` and ``train/epoch_loss`` with step = epoch
    (a step the run has is not logged again); closed FINISHED, the done fold is uploaded
    whole (``_finish_fold``)."""

    def __init__(self, experiment: _MlflowExperiment, state: _FoldRun):
        self.experiment, self.state = experiment, state

    def validation(self, epoch: int, metrics: Mapping[str, float]) -> None:
        points = [(VALIDATION_KEYS.get(name, f"val/{name}"), float(value), epoch)
                  for name, value in metrics.items()]
        self.experiment.connection.call(self.experiment._log, self.state, points)

    def epoch_loss(self, epoch: int, value: float) -> None:
        self.experiment.connection.call(self.experiment._log, self.state,
                                        [(EPOCH_LOSS_KEY, float(value), epoch)])

    def close(self, status: str) -> None:
        connection = self.experiment.connection
        if status == FINISHED and (self.state.folder / C.FOLD_DONE_FILE).is_file():
            connection.call(self.experiment._finish_fold, self.state)
        else:
            connection.call(lambda: connection.client.set_terminated(self.state.run_id, status))


class FoldTracking:
    """A fold's trackers as one (``FoldTrainer`` calls it); as a context manager it closes
    them FINISHED, or KILLED (Ctrl-C) / FAILED when the block raises."""

    def __init__(self, loggers: list[FoldLogger] | None = None):
        self.loggers = loggers or []

    def validation(self, epoch: int, metrics: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.validation(epoch, metrics)

    def train_loss(self, step: int, value: float) -> None:
        for logger in self.loggers:
            logger.train_loss(step, value)

    def epoch_loss(self, epoch: int, value: float) -> None:
        for logger in self.loggers:
            logger.epoch_loss(epoch, value)

    def close(self, status: str) -> None:
        for logger in self.loggers:
            logger.close(status)

    def __enter__(self) -> FoldTracking:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        self.close(exit_status(error))


class ExperimentTracking:
    """The trackers of one experiment (``ExperimentFolder`` and ``FoldTrainer`` use it; main
    process only): ``start`` opens the experiment's runs and uploads what they lack, ``fold``
    gives a fold's trackers, ``end`` ends the experiment's run. ``parent_run``: the MLflow run
    its run is nested in (a tuning study's)."""

    def __init__(self, folder: str | Path, config: ExperimentConfig,
                 parent_run: str | None = None):
        require_trackers(config)
        self.folder, self.config = Path(folder), config
        loggers = config.training.loggers
        self.tensorboard = C.TENSORBOARD in loggers
        self.mlflow = (_MlflowExperiment(self.folder, config, parent_run)
                       if C.MLFLOW in loggers else None)

    @property
    def mlflow_run_id(self) -> str | None:
        return None if self.mlflow is None else self.mlflow.run_id

    def start(self) -> None:
        if self.mlflow is not None:
            self.mlflow.sync()

    def fold(self, fold: int, folder: str | Path) -> FoldTracking:
        folder = Path(folder)
        loggers: list[FoldLogger] = []
        if self.tensorboard:
            loggers.append(_TensorBoardFold(folder))
        if self.mlflow is not None:
            loggers.append(self.mlflow.fold(fold, folder))
        return FoldTracking(loggers)

    def end(self, status: str) -> None:
        if self.mlflow is not None:
            self.mlflow.end(status)



# ----- uploads of local records --------------------------------------------------------


def upload_experiment(folder: str | Path, config: ExperimentConfig, uri: str | None = None,
                      parent_run: str | None = None) -> str:
    """Uploads everything the experiment folder holds to MLflow (``uri``, else the config's)
    and returns its run id; TrackingError when MLflow fails. The runs end FINISHED when every
    fold of ``training.folds`` is done, else KILLED (the unfinished folds too)."""
    experiment = _MlflowExperiment(Path(folder), config, parent_run, uri, strict=True)
    experiment.sync()
    done = all((Path(folder) / C.FOLD_FOLDER.format(fold=k) / C.FOLD_DONE_FILE).is_file()
               for k in config.training.folds)
    experiment.end_unfinished_folds(KILLED)
    experiment.end(FINISHED if done else KILLED)
    assert experiment.run_id is not None
    return experiment.run_id
