"""``sdm tune``: hyperparameter search over an experiment config, with Optuna.

The objective is MLRC's: the mean over the configured folds of each fold's best validation
MAP@R. Every trial is an ordinary experiment folder ``<experiments_root>/<study>/trial_<n>/``
(trial numbers come from the storage, so two workers never share a folder). The study lives in
an Optuna storage: an SQLite file in the study folder by default, or any URL Optuna takes
(``postgresql://...`` for several machines). Trials keep a heartbeat; one whose process died
(SIGKILL, power loss) is marked failed once its heartbeat is older than the grace period, and
is retried once with the same parameters (``RetryHeartbeatStaleTrialCallback``); completed
trials are never run again. ``trials`` is the number of finished (complete or pruned) trials
the study should reach: a rerun runs only what is missing.

After the search the study folder holds ``best.yaml`` (the best trial's complete config, named
``<study>_best``, ready for ``sdm train``), ``trials.csv``, plots, and the best trial is
evaluated on the test classes (never used for selection) so that ``sdm report`` can show it.

With mlflow in ``training.loggers`` the study is one MLflow run (named after it) and each
trial's experiment run is nested in it, with its parameters (config keys among the run's
params), its ``objective`` and state (see ``sdm.tune.tracking.StudyTracking``).
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sdm import constants as C
from sdm import storage
from sdm.config import ConfigError, ExperimentConfig, load_config, override, to_yaml
from sdm.engine.mlflow_runs import FINISHED as TRACKED_FINISHED
from sdm.engine.mlflow_runs import exit_status
from sdm.interrupts import Terminated, sigterm_interrupts, stop_status
from sdm.tune.space import load_space
from sdm.tune.tracking import StudyTracking

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SAMPLERS = ("tpe", "gp")

# Sampler seeds of a resumed study move on by this much per trial already in it.
RESEED_STRIDE = 1000

@dataclass
class TuneRequest:
    """What ``sdm tune`` was asked: the experiment, the space and how to search it."""

    config_files: list[str]
    overrides: list[str]
    spaces: list[str]
    trials: int
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    prune: bool = False
    sampler: str = "tpe"
    seed: int = 0
    heartbeat_seconds: int = 60
    startup_trials: int = 10


def study_folder(request: TuneRequest) -> tuple[str, Path]:
    """(study name, ``<experiments_root>/<study name>``) of a request."""
    base = load_config(request.config_files, request.overrides)
    name = request.study_name or f"{base.name}_tune"
    return name, Path(base.experiments_root) / name


def storage_url(request: TuneRequest, folder: Path) -> str:
    """The request's storage URL, or the SQLite file in the study folder."""
    return request.storage or f"sqlite:///{(folder / C.STUDY_DATABASE).resolve()}"


def open_storage(url: str, heartbeat_seconds: int) -> RDBStorage:
    """Optuna's RDB storage with trial heartbeats and one retry of a trial that died."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    retry_once = RetryHeartbeatStaleTrialCallback(max_retry=1)
    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_seconds,
                      grace_period=2 * heartbeat_seconds,
                      heartbeat_stale_trial_callback=retry_once)


def run_tune(request: TuneRequest) -> dict[str, Any]:
    """Validates everything, runs the missing trials on ``request.workers`` processes, then
    writes the study's results; returns the study's summary (also in ``study.json``)."""
    if request.trials < 1 or request.workers < 1 or request.startup_trials < 1:
        raise ValueError("--trials, --workers and --startup-trials must be at least 1")
    if request.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {request.sampler!r}; expected one of {SAMPLERS}")
    space = load_space(request.spaces, request.config_files, request.overrides)
    tuned_sdm = [key for key in space if key.startswith("sdm.") and key != "sdm.enabled"]
    if tuned_sdm and not load_config(request.config_files, request.overrides).sdm.enabled:
        raise ConfigError(f"the space tunes {', '.join(tuned_sdm)} but the config has SDM off; "
                          "add sdm.enabled=true (or use the space without SDM)")
    name, folder = study_folder(request)
    tracking = StudyTracking(folder, name, load_config(request.config_files, request.overrides))
    folder.mkdir(parents=True, exist_ok=True)
    url = storage_url(request, folder)
    study = _load_study(request, name, url, worker=0)
    optuna.storages.fail_stale_trials(study)
    missing = request.trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    shares = [missing // request.workers + (i < missing % request.workers)
              for i in range(request.workers)]
    tracking.start(asdict(request))
    try:
        if missing > 0 and request.workers == 1:
            run_worker(request, name, url, 0, shares[0])
        elif missing > 0:
            _run_workers(request, name, url, shares)
        summary = write_study_results(request, name, folder, _load_study(request, name, url, 0))
    except BaseException as error:
        tracking.end(exit_status(error))
        raise
    tracking.end(TRACKED_FINISHED, summary)
    return summary


def run_worker(request: TuneRequest, name: str, url: str, worker: int, trials: int) -> None:
    """One worker: ``trials`` trials of the study (its sampler seeded as ``_load_study``
    says)."""
    if trials <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _StopWithoutTraceback) for f in handler.filters):
            handler.addFilter(_StopWithoutTraceback())
    study = _load_study(request, name, url, worker)
    space = load_space(request.spaces, request.config_files, request.overrides)
    _, folder = study_folder(request)
    tracking = StudyTracking(folder, name, load_config(request.config_files, request.overrides),
                             create=False)
    study.optimize(lambda trial: _objective(trial, request, space, folder, tracking),
                   n_trials=trials, gc_after_trial=True)


class _StopWithoutTraceback(logging.Filter):
    """Optuna logs a trial failed by Ctrl-C or SIGTERM with the interrupt's traceback; a stop is
    not a bug, so its record keeps the one line saying which trial failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


def _worker_process(request: TuneRequest, name: str, url: str, worker: int,
                    trials: int) -> None:
    """``run_worker`` as a worker process: Ctrl-C, or SIGTERM from the stopped command, fails
    the trial in progress (as in one process) and ends the worker quietly with its exit status;
    the command prints the one line."""
    with sigterm_interrupts():
        try:
            run_worker(request, name, url, worker, trials)
        except KeyboardInterrupt as interrupt:
            sys.exit(stop_status(interrupt))


def _run_workers(request: TuneRequest, name: str, url: str, shares: list[int]) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_process, args=(request, name, url, i, share),
                                 name=f"sdm-tune-worker-{i}")
                 for i, share in enumerate(shares) if share > 0]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Terminated):  # Ctrl-C reaches the workers; SIGTERM did not
            for process in processes:
                process.terminate()
        for process in processes:
            process.join(timeout=60)
        raise
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        print(f"sdm tune: workers {', '.join(failed)} stopped early; rerun the same command to "
              "finish the study", file=sys.stderr)


def _load_study(request: TuneRequest, name: str, url: str, worker: int) -> optuna.Study:
    """The study, created if new, with worker ``worker``'s sampler. The sampler is seeded by
    seed + worker + RESEED_STRIDE x (trials already in the study): a fresh study is
    reproducible, and a resumed one does not propose its first trials' parameters again."""
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
              if request.prune else optuna.pruners.NopPruner())
    storage = open_storage(url, request.heartbeat_seconds)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    seed = request.seed + worker + RESEED_STRIDE * len(study.get_trials(deepcopy=False))
    if request.sampler == "gp":
        study.sampler = optuna.samplers.GPSampler(seed=seed,
                                                  n_startup_trials=request.startup_trials)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed,
                                                   n_startup_trials=request.startup_trials)
    return study


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    """A value of ``dist`` for config key ``key`` from the trial."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


def trial_config(request: TuneRequest, folder: Path, number: int,
                 params: dict[str, Any]) -> ExperimentConfig:
    """The experiment config of trial ``number`` with ``params`` (config key -> value)."""
    return load_config(request.config_files, [
        *request.overrides, *(override(key, value) for key, value in params.items()),
        f"name={C.TRIAL_FOLDER.format(number=number)}", f"experiments_root={folder}"])


def _objective(trial: optuna.Trial, request: TuneRequest, space: dict[str, BaseDistribution],
               folder: Path, tracking: StudyTracking) -> float:
    from sdm.engine.experiment import ExperimentFolder

    params = {key: suggest(trial, key, dist) for key, dist in space.items()}
    config = trial_config(request, folder, trial.number, params)
    if tracking.on and config.training.mlflow_uri is None:  # the study's store, not the folder's
        config.training.mlflow_uri = tracking.uri
    fold_order = list(config.training.folds)

    def report(fold: int, epoch: int, score: float) -> None:
        trial.report(score, fold_order.index(fold) * (config.training.max_epochs + 1) + epoch)
        if request.prune and trial.should_prune():
            storage.write_json(folder / config.name / C.PRUNED_FILE,
                               {"fold": fold, "epoch": epoch, "val_map_at_r": score})
            raise optuna.TrialPruned(f"pruned at fold {fold}, epoch {epoch}")

    trial_folder = folder / config.name
    try:
        summaries = ExperimentFolder.of(config).run(on_validation=report,
                                                    parent_run=tracking.run_id())
    except optuna.TrialPruned:
        tracking.trial_finished(trial.number, TrialState.PRUNED.name, None, trial_folder)
        raise
    except Exception:
        tracking.trial_finished(trial.number, TrialState.FAIL.name, None, trial_folder)
        raise
    value = statistics.fmean(summary["best_val_map_at_r"] for summary in summaries)
    tracking.trial_finished(trial.number, TrialState.COMPLETE.name, value, trial_folder)
    return value


# ----- after the search --------------------------------------------------------------------


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, seconds, and each parameter."""
    keys = sorted({key for trial in study.trials for key in trial.params})
    rows = []
    for trial in study.trials:
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
        rows.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                     "seconds": seconds, **{key: trial.params.get(key) for key in keys}})
    return rows


def write_study_results(request: TuneRequest, name: str, folder: Path,
                        study: optuna.Study) -> dict[str, Any]:
    """``trials.csv``, ``study.json``, and with a completed trial ``best.yaml``, the plots and
    the best trial's test results."""
    storage.write_csv(folder / C.TRIALS_CSV, trial_rows(study))
    summary: dict[str, Any] = {"study": name, "request": asdict(request),
                               "finished_trials": len(study.get_trials(states=FINISHED))}
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        best = study.best_trial
        best_config = _write_best_config(request, name, folder, best)
        summary.update(best_trial=best.number, best_value=best.value,
                       best_folder=C.TRIAL_FOLDER.format(number=best.number),
                       best_params=best.params, best_config=str(best_config))
        from sdm.engine.experiment import ExperimentFolder

        ExperimentFolder(folder / C.TRIAL_FOLDER.format(number=best.number)).evaluate(
            pretrained=False)
        _write_plots(study, folder)
    storage.write_json(folder / C.STUDY_FILE, summary)
    return summary


def _write_best_config(request: TuneRequest, name: str, folder: Path,
                       best: optuna.trial.FrozenTrial) -> Path:
    base = load_config(request.config_files, request.overrides)
    config = trial_config(request, folder, best.number, best.params)
    config.name, config.experiments_root = f"{name}_best", base.experiments_root
    header = (f"# The best trial ({best.number}) of study {name}: mean best validation MAP@R "
              f"{best.value:.4f} over folds {list(config.training.folds)}.\n")
    path = folder / C.BEST_CONFIG
    storage.write_text(path, header + to_yaml(config))
    return path


def _write_plots(study: optuna.Study, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    drawings = {
        "optimization_history.png": lambda: plots.plot_optimization_history(study),
        "parallel_coordinates.png": lambda: plots.plot_parallel_coordinate(study),
        "parameter_importances.png": lambda: plots.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator()),
    }
    for file, draw in drawings.items():
        try:
            axes = draw()
        except (ValueError, RuntimeError) as error:  # e.g. too few trials for importances
            print(f"sdm tune: no {file}: {error}", file=sys.stderr)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        storage.save_figure(figure, folder / file)
