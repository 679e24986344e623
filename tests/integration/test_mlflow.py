"""MLflow tracking against a real ``mlflow server`` (SQLite backend, temporary artifacts):
one run per experiment with nested fold runs, resume, a server that is down or stops, the
default local store, ``sdm track upload`` and ``sdm tune``'s nested trial runs."""

import sys
import warnings
from pathlib import Path

import pytest

from mlflow_server import free_port, mlflow_server, running_mlflow, stop  # noqa: F401 (a fixture)
from sdm import constants as C
from sdm import storage
from sdm.config import ConfigError
from sdm.engine.experiment import ExperimentFolder
from sdm.engine.fold import FoldTrainer
from sdm.engine.mlflow_runs import INSTALL_HINT, TrackingWarning, default_uri
from sdm.engine.tracking import EPOCH_LOSS_KEY, flat_params, result_metrics
from training_helpers import interrupted_at_epoch

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

MAP_KEY = f"val/{C.MAP_AT_R}"
TRACKED = ("training.loggers=[tensorboard,mlflow]",)


def tracked(tiny_config, name, uri, *extra):
    return tiny_config(name, *TRACKED, f"training.mlflow_uri={uri}", *extra)


def run_recording(experiment: ExperimentFolder, **options):
    """``experiment.run()``; (its summaries, the TrackingWarnings it issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summaries = experiment.run(**options)
    return summaries, [w for w in caught if issubclass(w.category, TrackingWarning)]


def top_run(client: MlflowClient, name: str):
    """The one run named ``name`` in the sdm experiment."""
    experiment = client.get_experiment_by_name(C.MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def children(client: MlflowClient, run) -> dict[str, object]:
    """``{run name: run}`` of the runs nested in ``run``."""
    runs = client.search_runs([run.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return {r.info.run_name: r for r in runs}


def history(client: MlflowClient, run_id: str, key: str = MAP_KEY) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def csv_points(fold_folder: Path, metric: str = C.MAP_AT_R) -> list[tuple[int, float]]:
    return [(int(row["epoch"]), float(row[metric]))
            for row in storage.read_csv(fold_folder / C.METRICS_CSV)]


def assert_folds_uploaded(client: MlflowClient, parent, folder: Path, folds: list[int]) -> None:
    """Each fold is a FINISHED nested run whose validation metrics per epoch are exactly
    metrics.csv's."""
    nested = children(client, parent)
    assert sorted(nested) == [f"fold_{k}" for k in folds]
    for fold in folds:
        run = nested[f"fold_{fold}"]
        assert run.info.status == "FINISHED"
        for metric in C.METRIC_NAMES:
            assert history(client, run.info.run_id, f"val/{metric}") == csv_points(
                folder / f"fold_{fold}", metric)
        record = storage.read_json(folder / f"fold_{fold}" / C.MLFLOW_RUN_FILE)
        assert record["run_id"] == run.info.run_id and record["complete"] is True


def test_an_experiment_is_one_run_with_its_folds_nested(mlflow_server, tiny_config,  # noqa: F811
                                                        tmp_path):
    client = MlflowClient(mlflow_server.url)
    config = tracked(tiny_config, "tracked", mlflow_server.url)
    experiment = ExperimentFolder.of(config)
    _, warned = run_recording(experiment)
    assert warned == []
    results = experiment.evaluate()
    folder = tmp_path / "tracked"

    parent = top_run(client, "tracked")
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    params = parent.data.params
    assert params["training.batch_size"] == "8" and params["model.trunk"] == "small_cnn"
    assert params["training.folds"] == "[0, 1]" and params["sdm.enabled"] == "False"
    assert params["training.loggers"] == "['tensorboard', 'mlflow']"
    assert params == flat_params(config)
    assert storage.read_json(folder / C.MLFLOW_RUN_FILE)["run_id"] == parent.info.run_id
    assert_folds_uploaded(client, parent, folder, [0, 1])
    fold_run = children(client, parent)["fold_0"]
    assert [step for step, _ in history(client, fold_run.info.run_id, EPOCH_LOSS_KEY)] == [1, 2]
    assert fold_run.data.metrics["best_val_map_at_r"] == storage.read_json(
        folder / "fold_0" / C.FOLD_DONE_FILE)["best_val_map_at_r"]

    saved = storage.read_json(folder / C.RESULTS_FOLDER / "test_results.json")
    metrics = client.get_run(parent.info.run_id).data.metrics
    expected = result_metrics(saved)
    assert {key: metrics[key] for key in expected} == expected
    concatenated = f"test/trained/{C.CONCATENATED}/{C.MAP_AT_R}"
    assert metrics[concatenated] == results.trained.concatenated[C.MAP_AT_R]
    assert metrics[f"test/trained/{C.SEPARATED}/fold_1/{C.PRECISION_AT_1}"] == (
        results.trained.separated.per_model[1][C.PRECISION_AT_1])

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for artifact, local in [("config.yaml", folder / C.CONFIG_FILE),
                            ("results/test_results.json", folder / "results/test_results.json"),
                            ("results/test_results.md", folder / "results/test_results.md"),
                            ("results/test_results.csv", folder / "results/test_results.csv")]:
        path = client.download_artifacts(parent.info.run_id, artifact, str(downloads))
        assert Path(path).read_bytes() == local.read_bytes(), artifact
    path = client.download_artifacts(fold_run.info.run_id, C.METRICS_CSV, str(downloads))
    assert Path(path).read_bytes() == (folder / "fold_0" / C.METRICS_CSV).read_bytes()
    for fold in (0, 1):  # TensorBoard is still written
        assert list((folder / f"fold_{fold}" / C.TENSORBOARD_FOLDER).glob("events.*"))


def test_a_resumed_experiment_continues_its_runs(mlflow_server, tiny_config,  # noqa: F811
                                                 tmp_path, monkeypatch):
    client = MlflowClient(mlflow_server.url)
    config = tracked(tiny_config, "resumed", mlflow_server.url, "training.folds=[0]",
                     "training.max_epochs=3")
    with interrupted_at_epoch(2), pytest.raises(KeyboardInterrupt):
        run_recording(ExperimentFolder.of(config))
    parent = top_run(client, "resumed")
    fold_run = children(client, parent)["fold_0"]
    assert parent.info.status == "KILLED" and fold_run.info.status == "KILLED"
    assert [step for step, _ in history(client, fold_run.info.run_id)] == [-1, 0, 1]

    _, warned = run_recording(ExperimentFolder.of(config))
    assert warned == []
    again = top_run(client, "resumed")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert {name: run.info.run_id for name, run in children(client, again).items()} == {
        "fold_0": fold_run.info.run_id}
    folder = tmp_path / "resumed"
    assert history(client, fold_run.info.run_id) == csv_points(folder / "fold_0")
    assert [s for s, _ in history(client, fold_run.info.run_id)] == [-1, 0, 1, 2, 3]
    assert [s for s, _ in history(client, fold_run.info.run_id, EPOCH_LOSS_KEY)] == [1, 2, 3]
    assert_folds_uploaded(client, again, folder, [0])


def test_parallel_folds_log_their_runs_nested_in_the_parents(mlflow_server,  # noqa: F811
                                                             tiny_config, tmp_path):
    from sdm.engine import parallel_folds

    config = tracked(tiny_config, "parallel", mlflow_server.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = parallel_folds.run_folds_in_parallel(config, ["cpu", "cpu"])
    assert [r["status"] for r in results] == [parallel_folds.DONE] * 2
    assert [w for w in caught if issubclass(w.category, TrackingWarning)] == []
    client = MlflowClient(mlflow_server.url)
    parent = top_run(client, "parallel")
    assert parent.info.status == "FINISHED"
    folder = tmp_path / "parallel"
    assert_folds_uploaded(client, parent, folder, [0, 1])
    for fold in (0, 1):
        assert "MLflow tracking at" not in (folder / f"fold_{fold}" / C.FOLD_LOG).read_text()


def test_a_server_that_is_down_does_not_stop_training(mlflow_server, tiny_config,  # noqa: F811
                                                      tmp_path):
    one_fold = ("training.folds=[0]",)
    ExperimentFolder.of(tiny_config("plain", *one_fold)).run()
    nowhere = f"http://127.0.0.1:{free_port()}"
    offline = tracked(tiny_config, "offline", nowhere, *one_fold)
    [summary], warned = run_recording(ExperimentFolder.of(offline))
    assert summary["last_epoch"] == 2
    assert len(warned) == 1, [str(w.message) for w in warned]
    message = str(warned[0].message)
    folder = tmp_path / "offline"
    assert nowhere in message and f"sdm track upload {folder}" in message
    plain = storage.read_csv(tmp_path / "plain" / "fold_0" / C.METRICS_CSV)
    assert storage.read_csv(folder / "fold_0" / C.METRICS_CSV) == plain
    assert not (folder / C.MLFLOW_RUN_FILE).exists()

    from sdm.cli import main

    assert main(["track", "upload", str(folder), "--uri", mlflow_server.url]) == 0
    client = MlflowClient(mlflow_server.url)
    parent = top_run(client, "offline")
    assert parent.data.params["training.batch_size"] == "8"
    assert_folds_uploaded(client, parent, folder, [0])
    first = history(client, children(client, parent)["fold_0"].info.run_id)

    # The next run, tracked at the server now (a new mlflow_uri does not refuse the resume),
    # finds everything uploaded: the same runs, no step twice.
    online = tracked(tiny_config, "offline", mlflow_server.url, *one_fold)
    _, warned = run_recording(ExperimentFolder.of(online))
    assert warned == []
    again = top_run(client, "offline")
    assert again.info.run_id == parent.info.run_id
    assert history(client, children(client, again)["fold_0"].info.run_id) == first


def test_a_server_stopped_during_training_gets_the_rest_on_the_next_run(
        tiny_config, tmp_path, monkeypatch):
    folder, port = tmp_path / "server", free_port()
    original = FoldTrainer.train_one_epoch
    with running_mlflow(folder, port) as server:
        config = tracked(tiny_config, "stopped", server.url, "training.folds=[0]",
                         "training.max_epochs=3")

        def stop_server_at_epoch_2(self, epoch):
            if epoch == 2 and server.process.poll() is None:
                stop(server.process)
            return original(self, epoch)

        monkeypatch.setattr(FoldTrainer, "train_one_epoch", stop_server_at_epoch_2)
        [summary], warned = run_recording(ExperimentFolder.of(config))
    assert summary["last_epoch"] == 3 and len(warned) == 1
    experiment = tmp_path / "stopped"
    assert [e for e, _ in csv_points(experiment / "fold_0")] == [-1, 0, 1, 2, 3]

    monkeypatch.setattr(FoldTrainer, "train_one_epoch", original)
    with running_mlflow(folder, port) as server:
        client = MlflowClient(server.url)
        run_id = storage.read_json(experiment / "fold_0" / C.MLFLOW_RUN_FILE)["run_id"]
        assert [s for s, _ in history(client, run_id)] == [-1, 0, 1]
        _, warned = run_recording(ExperimentFolder.of(config))  # the fold is done: uploads
        assert warned == []
        parent = top_run(client, "stopped")
        assert children(client, parent)["fold_0"].info.run_id == run_id
        assert_folds_uploaded(client, parent, experiment, [0])


def test_the_default_store_is_sqlite_in_the_experiments_root(tiny_config, tmp_path):
    config = tiny_config("local", "training.loggers=[mlflow]", "training.folds=[0]",
                         "training.max_epochs=1")
    _, warned = run_recording(ExperimentFolder.of(config))
    assert warned == []
    assert (tmp_path / C.MLFLOW_DATABASE).is_file()
    client = MlflowClient(default_uri(tmp_path))
    parent = top_run(client, "local")
    assert parent.data.params["training.mlflow_uri"] == "None"
    assert_folds_uploaded(client, parent, tmp_path / "local", [0])
    assert list((tmp_path / C.MLFLOW_ARTIFACTS_FOLDER).rglob(C.CONFIG_FILE))
    assert not (tmp_path / "local" / "fold_0" / C.TENSORBOARD_FOLDER).exists()


def test_a_relative_sqlite_store_is_from_the_working_folder(tiny_config, tmp_path,
                                                            monkeypatch):
    store = tmp_path / "elsewhere"
    store.mkdir()
    monkeypatch.chdir(store)
    config = tiny_config("relative", "training.loggers=[mlflow]", "training.folds=[0]",
                         "training.max_epochs=1", "training.mlflow_uri=sqlite:///runs.db")
    _, warned = run_recording(ExperimentFolder.of(config))
    assert warned == []
    client = MlflowClient(f"sqlite:///{store / 'runs.db'}")
    assert_folds_uploaded(client, top_run(client, "relative"), tmp_path / "relative", [0])
    assert list((store / C.MLFLOW_ARTIFACTS_FOLDER).rglob(C.CONFIG_FILE))


def test_a_tuning_study_is_a_run_with_its_trials_nested(mlflow_server, cub_root,  # noqa: F811
                                                        tmp_path, tiny_overrides):
    import optuna

    from sdm.tune.study import TuneRequest, run_tune

    space = tmp_path / "space.yaml"
    space.write_text("loss.params.margin: {low: 0.01, high: 0.5}\n"
                     "optimizer.embedder_lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    overrides = tiny_overrides(cub_root, tmp_path / "exp", "tiny", "training.folds=[0]",
                               "training.max_epochs=1", "training.iterations_per_epoch=2",
                               "loss.name=triplet", *TRACKED,
                               f"training.mlflow_uri={mlflow_server.url}")
    request = TuneRequest(config_files=[], overrides=overrides, spaces=[str(space)], trials=2,
                          study_name="tracked_study")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_tune(request)
    assert [w for w in caught if issubclass(w.category, TrackingWarning)] == []
    study = optuna.load_study(study_name="tracked_study", storage=(
        f"sqlite:///{tmp_path / 'exp' / 'tracked_study' / C.STUDY_DATABASE}"))

    client = MlflowClient(mlflow_server.url)
    parent = top_run(client, "tracked_study")
    assert parent.info.status == "FINISHED" and parent.data.params["tune.trials"] == "2"
    assert parent.data.metrics["best_value"] == summary["best_value"]
    assert history(client, parent.info.run_id, "trial/objective") == [
        (t.number, t.value) for t in study.trials]
    trials = children(client, parent)
    assert sorted(trials) == ["trial_0", "trial_1"]
    for trial in study.trials:
        run = client.get_run(trials[f"trial_{trial.number}"].info.run_id)
        for key, value in trial.params.items():
            assert run.data.params[key] == str(value)
        assert run.data.metrics["objective"] == trial.value
        assert run.data.tags["sdm.trial.state"] == "COMPLETE"
        assert run.data.tags["sdm.trial.number"] == str(trial.number)
        assert sorted(children(client, run)) == ["fold_0"]
    best = client.get_run(trials[f"trial_{summary['best_trial']}"].info.run_id)
    assert f"test/trained/{C.CONCATENATED}/{C.MAP_AT_R}" in best.data.metrics


def test_mlflow_without_its_package_is_a_clear_error(tiny_config, tmp_path, monkeypatch):
    config = tiny_config("no_mlflow", "training.loggers=[mlflow]")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"MLflow is not installed: pip install "
                                          r"'sdm-metric-learning\[mlflow\]'"):
        ExperimentFolder.of(config).run()
    assert INSTALL_HINT in "pip install 'sdm-metric-learning[mlflow]'"
    assert not (tmp_path / "no_mlflow").exists()


def test_unknown_loggers_are_refused(tiny_config):
    with pytest.raises(ConfigError, match="training.loggers .*wandb.*each must be one of "
                                          "tensorboard, mlflow"):
        tiny_config("x", "training.loggers=[tensorboard,wandb]")
    assert tiny_config("x", "training.loggers=[]").training.loggers == []
