"""MLflow for sdm's trackers: the client behind a guard (``Connection``: a failing call warns
once and turns MLflow off, training goes on), runs recorded in a folder's ``mlflow_run.json``
(``RecordedRun``, reopened when the server has them), and the helpers both the experiment
tracking (``sdm.engine.tracking``) and the tuning study's (``sdm.tune.tracking``) use.

Calls use short HTTP limits (``HTTP_LIMITS``, only while sdm calls MLflow, and only those the
user has not set), so a server that is down fails in seconds.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage
from sdm.config import ConfigError, ExperimentConfig
from sdm.errors import UserInputError, cause

INSTALL_HINT = "pip install 'sdm-metric-learning[mlflow]'"
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
PARENT_TAG = "mlflow.parentRunId"
# While sdm calls MLflow, unless the user set them: a server that is down fails in seconds.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
METRICS_PER_BATCH = 1000


class TrackingWarning(UserWarning):
    """A tracker failed: training goes on without it; the message says how to upload later."""


class TrackingError(UserInputError):
    """An upload the user asked for (``sdm track upload``) failed; the message says why."""


def require_trackers(config: ExperimentConfig) -> None:
    """ConfigError saying how to install MLflow when ``training.loggers`` names it and it
    cannot be imported."""
    if C.MLFLOW in config.training.loggers:
        _mlflow_client_class()


def _mlflow_client_class() -> Any:
    try:
        import mlflow  # noqa: F401 (the package first: its submodules may be cached)
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(f"training.loggers includes {C.MLFLOW}, but MLflow is not installed: "
                          f"{INSTALL_HINT} (or remove {C.MLFLOW} from training.loggers)") from None
    return MlflowClient


def default_uri(experiments_root: str | Path) -> str:
    """The local MLflow store of an experiments root: ``sqlite:///<root>/mlflow.db``."""
    return f"sqlite:///{(Path(experiments_root) / C.MLFLOW_DATABASE).resolve()}"


def tracking_uri(config: ExperimentConfig, folder: str | Path) -> str:
    """``training.mlflow_uri``, else the local store of the experiments root that holds the
    experiment (or study) ``folder``."""
    return config.training.mlflow_uri or default_uri(Path(folder).parent)


def exit_status(error: BaseException | None) -> str:
    """The MLflow run status of a block that ended with ``error`` (None: it finished)."""
    if error is None:
        return FINISHED
    return KILLED if isinstance(error, KeyboardInterrupt) else FAILED


@contextlib.contextmanager
def _http_limits() -> Iterator[None]:
    added = {key: value for key, value in HTTP_LIMITS.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def now_ms() -> int:
    """Now, in milliseconds since the epoch (MLflow's timestamps)."""
    return int(time.time() * 1000)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in consecutive lists of at most ``size`` (MLflow's limits per call)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ----- the connection to a tracking URI ----------------------------------------------------


class Connection:
    """An MLflow client for one experiment (or study) ``folder``: ``call`` runs an action and,
    when it raises, warns once (saying how to upload later) and turns MLflow off for the rest
    of this object's life; ``strict`` raises TrackingError instead (an upload the user asked
    for)."""

    def __init__(self, uri: str, folder: Path, strict: bool = False):
        self.uri, self.folder, self.strict = uri, folder, strict
        self.client: Any = None
        self.off = False

    def call(self, action: Callable[..., Any], *args: Any) -> Any:
        if self.off:
            return None
        try:
            with _http_limits(), warnings.catch_warnings():
                # MLflow's SQL store trips SQLAlchemy deprecations that are not the user's
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="mlflow")
                if self.client is None:
                    self.client = _mlflow_client_class()(tracking_uri=self.uri)
                return action(*args)
        except ConfigError:
            raise
        except Exception as error:
            self.off = True
            if self.strict:
                raise TrackingError(f"MLflow at {self.uri} failed: {cause(error)}") from error
            warnings.warn(TrackingWarning(
                f"MLflow tracking at {self.uri} failed ({_reason(error)}); sdm goes on without "
                f"MLflow for {self.folder} and keeps its local records there. Upload them "
                f"later with `sdm track upload {self.folder}` (--uri URI for another server), "
                "or rerun the same command: a rerun uploads what the server lacks."),
                stacklevel=3)
            return None


# What a failed HTTP request's long message comes down to.
NETWORK_REASONS = ("Connection refused", "Read timed out", "Connect timeout",
                   "Name or service not known", "Connection reset", "Connection aborted")


def _reason(error: Exception) -> str:
    text = str(error)
    found = next((reason for reason in NETWORK_REASONS if reason in text), None)
    return f"{type(error).__name__}: {found.lower()}" if found else cause(error)


def _error_code(error: Exception) -> str | None:
    return getattr(error, "error_code", None)


def read_run_record(path: Path, uri: str) -> dict[str, Any] | None:
    """A run record (``mlflow_run.json``) written for ``uri``, else None."""
    try:
        record = storage.read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("tracking_uri") == uri else None


def existing_run(client: Any, run_id: str | None) -> Any:
    """The run ``run_id`` when the server has it and it is not deleted, else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def _experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of MLflow experiment ``name``, created when missing (with its artifacts beside
    a SQLite store's database file)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///"):  # a relative path is from the working folder
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent
                        / C.MLFLOW_ARTIFACTS_FOLDER).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception as error:  # another process created it meanwhile
            if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(f"MLflow experiment {name!r} is deleted: restore it (mlflow "
                           "experiments restore) or set training.mlflow_experiment")
    return experiment.experiment_id


class RecordedRun:
    """A run recorded in ``<folder>/mlflow_run.json`` (an experiment's or a study's): reopened
    when the server has it, else created; its params logged where missing."""

    def __init__(self, connection: Connection, folder: Path, name: str, experiment: str,
                 parent_run: str | None, create: bool = True):
        self.connection, self.folder, self.name = connection, folder, name
        self.experiment, self.parent_run, self.create = experiment, parent_run, create
        self.run: Any = None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.info.run_id

    def open(self, params: Mapping[str, str]) -> Any:
        """The run (opened once), status RUNNING, with ``params`` logged where missing and
        a tag ``sdm.config_change.<key>`` for each param whose value changed since."""
        if self.run is not None:
            return self.run
        client, uri = self.connection.client, self.connection.uri
        path = self.folder / C.MLFLOW_RUN_FILE
        record = read_run_record(path, uri) or {}
        run = existing_run(client, record.get("run_id"))
        if run is None and not self.create:
            raise RuntimeError(f"no MLflow run recorded in {path}")
        if run is None:
            tags = {"sdm.folder": str(self.folder.resolve())}
            if self.parent_run:
                tags[PARENT_TAG] = self.parent_run
            run = client.create_run(_experiment_id(client, self.experiment, uri),
                                    run_name=self.name, tags=tags)
            storage.write_json(path, {"tracking_uri": uri, "run_id": run.info.run_id,
                                      "experiment_id": run.info.experiment_id,
                                      "parent_run_id": self.parent_run})
        elif run.info.status != RUNNING:
            client.update_run(run.info.run_id, status=RUNNING)
        logged = run.data.params
        from mlflow.entities import Param, RunTag

        missing = [Param(key, value) for key, value in params.items() if key not in logged]
        changed = [RunTag(f"sdm.config_change.{key}", value) for key, value in params.items()
                   if key in logged and logged[key] != value]
        for chunk in chunks([*missing, *changed], PARAMS_PER_BATCH):
            client.log_batch(run.info.run_id,
                             params=[p for p in chunk if isinstance(p, Param)],
                             tags=[t for t in chunk if isinstance(t, RunTag)])
        self.run = run
        return run

    def upload_files(self, files: list[Path], artifact_path: str | None = None) -> None:
        for path in files:
            if path.is_file():
                self.connection.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str) -> None:
        if self.run is not None:
            self.connection.client.set_terminated(self.run_id, status)
