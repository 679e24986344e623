"""The ``sdm track`` command group: ``sdm track upload`` sends an experiment's (or a tuning
study's) local records to MLflow, for runs trained while the server was down or before
tracking was on (see ``sdm.engine.tracking``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdm import constants as C
from sdm import storage
from sdm.errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sdm track upload`` to the main CLI's subparsers."""
    track = subparsers.add_parser("track", help="experiment tracking (MLflow): upload records")
    commands = track.add_subparsers(dest="track_command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload", help="upload an experiment's or a tuning study's local records to MLflow "
                       "(what the server lacks: params, metrics per epoch, results, files)")
    upload.add_argument("folder", type=Path, metavar="EXPERIMENT_DIR",
                        help="an experiment folder (config.yaml, fold_<k>/) or an `sdm tune` "
                             "study folder (trial_<n>/)")
    upload.add_argument("--uri", help="MLflow tracking URI (default: the config's "
                                      "training.mlflow_uri, else the local store "
                                      "sqlite:///<experiments_root>/mlflow.db)")
    upload.set_defaults(func=_upload)


def _upload(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    if (folder / C.CONFIG_FILE).is_file():
        run_id, uri = upload_experiment_folder(folder, args.uri)
        print(f"{folder}: uploaded to MLflow run {run_id} at {uri}")
        return 0
    run_id, uri, trials = upload_study_folder(folder, args.uri)
    print(f"{folder}: study uploaded to MLflow run {run_id} at {uri} with {trials} trials")
    return 0


def upload_experiment_folder(folder: Path, uri: str | None = None,
                             parent_run: str | None = None) -> tuple[str, str]:
    """Uploads the experiment ``folder`` (its saved config); (run id, tracking URI)."""
    from sdm.engine.experiment import ExperimentFolder
    from sdm.engine.mlflow_runs import tracking_uri
    from sdm.engine.tracking import upload_experiment

    config = ExperimentFolder(folder).config
    uri = uri or tracking_uri(config, folder)
    return upload_experiment(folder, config, uri, parent_run), uri


def upload_study_folder(folder: Path, uri: str | None = None) -> tuple[str, str, int]:
    """Uploads an ``sdm tune`` study folder: the study's run, each trial's experiment nested in
    it, and the trials' objective and state from trials.csv; (run id, URI, trials)."""
    from sdm.engine.experiment import ExperimentFolder
    from sdm.engine.mlflow_runs import default_uri
    from sdm.tune.tracking import StudyTracking, read_study_request

    trials = sorted((p for p in folder.glob(C.TRIAL_FOLDER.format(number="*"))
                     if (p / C.CONFIG_FILE).is_file()), key=lambda p: int(p.name.split("_")[1]))
    if not trials:
        raise UserInputError(f"{folder} is neither an experiment folder (no {C.CONFIG_FILE}) "
                             f"nor a tuning study folder (no trial_<n>/{C.CONFIG_FILE})")
    config = ExperimentFolder(trials[0]).config
    uri = uri or config.training.mlflow_uri or default_uri(folder.parent)
    summary = storage.read_json(folder / C.STUDY_FILE) if (folder / C.STUDY_FILE).is_file() else {}
    study = StudyTracking(folder, summary.get("study", folder.name), config, uri=uri, strict=True)
    study.start(read_study_request(folder))
    parent = study.run_id()
    rows = ({int(row["number"]): row for row in storage.read_csv(folder / C.TRIALS_CSV)}
            if (folder / C.TRIALS_CSV).is_file() else {})
    for trial in trials:
        upload_experiment_folder(trial, uri, parent)
        row = rows.get(int(trial.name.split("_")[1]))
        if row is not None:
            value = float(row["value"]) if row.get("value") else None
            study.trial_finished(int(row["number"]), row["state"], value, trial)
    study.end("FINISHED", summary)
    assert parent is not None
    return parent, uri, len(trials)
