"""A tuning study's MLflow run (``sdm tune`` with mlflow in ``training.loggers``).

One run per study, named after it, recorded in ``<study folder>/mlflow_run.json``; its nested
runs are its trials' experiment runs (``sdm.engine.tracking``; their config params include the
trial's parameters), each with the metric ``objective`` and the tags ``sdm.trial.number`` /
``sdm.trial.state``. The study's run gets ``trial/objective`` (step = trial number),
``best_value`` and the study's files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm.config import ExperimentConfig
from sdm.engine.mlflow_runs import (
    KILLED,
    Connection,
    RecordedRun,
    now_ms,
    read_run_record,
    require_trackers,
    tracking_uri,
)

OBJECTIVE_KEY = "objective"
TRIAL_OBJECTIVE_KEY = "trial/objective"
STUDY_ARTIFACTS = (C.TRIALS_CSV, C.STUDY_FILE, C.BEST_CONFIG, "optimization_history.png",
                   "parallel_coordinates.png", "parameter_importances.png")


class StudyTracking:
    """A tuning study's MLflow run (``sdm tune`` with mlflow in ``training.loggers``), named
    after the study, recorded in ``<study folder>/mlflow_run.json``; its trials' experiment
    runs are nested in it. Off (every method does nothing) without mlflow."""

    def __init__(self, folder: str | Path, name: str, config: ExperimentConfig,
                 uri: str | None = None, strict: bool = False, create: bool = True):
        require_trackers(config)
        self.folder = Path(folder)
        self.on = C.MLFLOW in config.training.loggers or uri is not None
        self.connection = Connection(uri or tracking_uri(config, self.folder), self.folder,
                                     strict)
        self.create = create
        self.top = RecordedRun(self.connection, self.folder, name,
                               config.training.mlflow_experiment, None, create)

    @property
    def uri(self) -> str:
        return self.connection.uri

    def start(self, request: Mapping[str, Any]) -> None:
        """Opens (or creates) the study's run, the request's options as ``tune.<option>``
        params."""
        if self.on:
            params = {f"tune.{key}": str(request[key]) for key in
                      ("spaces", "trials", "sampler", "seed", "prune", "startup_trials")
                      if key in request}
            self.connection.call(self.top.open, params)

    def run_id(self) -> str | None:
        """The study's run id (opened from its record), for its trials' runs; None when off,
        or when a worker finds no record (the study's process could not create the run)."""
        recorded = self.create or (self.folder / C.MLFLOW_RUN_FILE).is_file()
        if self.on and self.top.run is None and recorded:
            self.connection.call(self.top.open, {})
        return self.top.run_id

    def trial_finished(self, number: int, state: str, value: float | None,
                       trial_folder: str | Path) -> None:
        """The trial's run gets ``objective`` and the tags ``sdm.trial.number`` /
        ``sdm.trial.state`` (a pruned trial's run ends KILLED); the study's run gets
        ``trial/objective`` at step ``number``."""
        if self.on and self.run_id() is not None:
            self.connection.call(self._trial_finished, number, state, value, Path(trial_folder))

    def _trial_finished(self, number: int, state: str, value: float | None,
                        trial_folder: Path) -> None:
        from mlflow.entities import Metric, RunTag

        client, stamp = self.connection.client, now_ms()
        if value is not None:
            client.log_batch(self.top.run_id,
                             metrics=[Metric(TRIAL_OBJECTIVE_KEY, float(value), stamp, number)])
        record = read_run_record(trial_folder / C.MLFLOW_RUN_FILE, self.uri)
        if record is None:
            return
        metrics = [Metric(OBJECTIVE_KEY, float(value), stamp, 0)] if value is not None else []
        client.log_batch(record["run_id"], metrics=metrics,
                         tags=[RunTag("sdm.trial.number", str(number)),
                               RunTag("sdm.trial.state", state)])
        if state == "PRUNED":
            client.set_terminated(record["run_id"], KILLED)

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Ends the study's run; with the study's ``summary``: ``best_value`` and the study's
        files (trials.csv, study.json, best.yaml, plots)."""
        if self.on and self.top.run is not None:
            self.connection.call(self._end, status, summary)

    def _end(self, status: str, summary: Mapping[str, Any] | None) -> None:
        from mlflow.entities import Metric

        if summary is not None and summary.get("best_value") is not None:
            self.connection.client.log_batch(self.top.run_id, metrics=[
                Metric("best_value", float(summary["best_value"]), now_ms(), 0)])
        if summary is not None:
            self.top.upload_files([self.folder / name for name in STUDY_ARTIFACTS])
        self.top.end(status)


def read_study_request(folder: Path) -> dict[str, Any]:
    """The request saved in a study's study.json (empty when there is none)."""
    try:
        return dict(json.loads((folder / C.STUDY_FILE).read_text()).get("request") or {})
    except (OSError, ValueError):
        return {}
