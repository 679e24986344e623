"""`sdm tune`: search spaces, seeded studies, best.yaml, SIGKILL recovery, parallel workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from postgres_server import postgres_url  # noqa: F401 (a fixture)
from sdm import constants as C
from sdm.config import ConfigError, load_config
from sdm.engine.experiment import ExperimentFolder
from sdm.tune.space import PACKAGED_SPACES, distribution, load_space
from sdm.tune.study import TuneRequest, open_storage, run_tune
from training_helpers import KILLABLE, WORKERS_STOP, held, own_process_group

REPO = Path(__file__).resolve().parents[2]
ONE_EPOCH = ("training.folds=[0]", "training.max_epochs=1", "training.iterations_per_epoch=2",
             "loss.name=triplet")


def write_space(folder: Path, text: str) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def test_space_entries_become_the_right_distributions():
    assert distribution("a", {"low": 0.01, "high": 10.0, "log": True}) == FloatDistribution(
        0.01, 10.0, log=True)
    assert distribution("b", {"low": 1, "high": 16}) == IntDistribution(1, 16)
    assert distribution("c", {"choices": [1, 2, 4]}) == CategoricalDistribution([1, 2, 4])
    for entry, message in [({"low": 2.0, "high": 1.0}, "low 2.0 is above high 1.0"),
                           ({"low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
                           ({"low": 0.0}, r"expected \{low, high\[, log\]\}"),
                           ({"choices": []}, "non-empty list"),
                           ({"low": "a", "high": 1}, "must be numbers")]:
        with pytest.raises(ConfigError, match=message):
            distribution("key", entry)


def test_unknown_keys_and_values_are_refused_before_anything_runs(tmp_path):
    base = ["loss.name=triplet"]
    with pytest.raises(ConfigError, match="unknown config key 'sdm.alhpa'; valid keys here: "
                                          "alpha, batched_passes"):
        load_space([write_space(tmp_path, "sdm.alhpa: {low: 0.0, high: 1.0}\n")], [], base)
    with pytest.raises(ConfigError, match="'triplet' does not take marg; valid keys here: margin"):
        load_space([write_space(tmp_path, "loss.params.marg: {low: 0.0, high: 1.0}\n")], [],
                   base)
    with pytest.raises(ConfigError, match="sdm.embedding_dropout.*value 1.5"):
        load_space([write_space(tmp_path, "sdm.embedding_dropout: {low: 0.0, high: 1.5}\n")],
                   [], base)


@pytest.mark.parametrize("loss", ["contrast", "triplet", "margin", "ms"])
def test_the_packaged_spaces_fit_their_losses(loss):
    names = {"contrast": "contrastive", "ms": "multi_similarity"}
    base = [f"loss.name={names.get(loss, loss)}", "sdm.enabled=true"]
    plain = load_space([loss], [], base)
    with_sdm = load_space([f"{loss}_sdm"], [], base)
    assert set(with_sdm) == set(plain) | set(load_space([PACKAGED_SPACES / "sdm.yaml"], [], base))
    assert {"optimizer.trunk_lr", "optimizer.embedder_lr"} <= set(plain)
    assert all(key.startswith(("loss.", "optimizer.")) for key in plain)


def tiny_request(cub_root, tmp_path, tiny_overrides, name, **options) -> TuneRequest:
    space = write_space(tmp_path, "loss.params.margin: {low: 0.01, high: 0.5}\n"
                                  "optimizer.embedder_lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    overrides = tiny_overrides(cub_root, tmp_path / "exp", "tiny", *ONE_EPOCH)
    return TuneRequest(config_files=[], overrides=overrides, spaces=[str(space)],
                       study_name=name, **{"trials": 3, **options})


def test_a_seeded_study_repeats_its_parameters_and_its_best_config_trains(
        cub_root, tmp_path, tiny_overrides):
    with pytest.warns(UserWarning, match="partial"):
        first = run_tune(tiny_request(cub_root, tmp_path, tiny_overrides, "first"))
        second = run_tune(tiny_request(cub_root, tmp_path, tiny_overrides, "second"))
    studies = [optuna.load_study(study_name=name, storage=open_storage(
        f"sqlite:///{tmp_path / 'exp' / name / C.STUDY_DATABASE}", 60))
        for name in ("first", "second")]
    params = [[trial.params for trial in study.trials] for study in studies]
    assert len(params[0]) == 3 and params[0] == params[1]
    assert first["best_params"] == second["best_params"]
    folder = tmp_path / "exp" / "first"
    values = [t.value for t in studies[0].trials]
    assert first["best_value"] == max(values)
    for trial in studies[0].trials:  # each trial is an experiment with the trial's parameters
        saved = load_config([folder / f"trial_{trial.number}" / C.CONFIG_FILE])
        assert saved.loss.params["margin"] == pytest.approx(trial.params["loss.params.margin"])
    rows = (folder / C.TRIALS_CSV).read_text().splitlines()
    assert rows[0].startswith("number,state,value,seconds") and len(rows) == 4
    assert (folder / f"trial_{first['best_trial']}" / C.RESULTS_FOLDER /
            "test_results.json").is_file()
    assert (folder / "optimization_history.png").is_file()
    best = load_config([folder / C.BEST_CONFIG], ["training.max_epochs=1"])
    assert best.name == "first_best" and best.experiments_root == str(tmp_path / "exp")
    assert best.loss.params["margin"] == pytest.approx(first["best_params"]["loss.params.margin"])
    with pytest.warns(UserWarning, match="partial"):
        [summary] = ExperimentFolder.of(best).run()
    assert summary["last_epoch"] == 1
    from sdm.report import write_report

    report = write_report([folder], tmp_path / "report").read_text()
    assert f"| first (tuned: best of 3 trials, trial_{first['best_trial']}) |" in report


def tune_arguments(cub_root, tmp_path, tiny_overrides, trials, *extra) -> list[str]:
    """The arguments of ``sdm tune`` for a tiny study of ``trials`` trials."""
    space = write_space(tmp_path, "loss.params.margin: {low: 0.01, high: 0.5}\n")
    return ["tune", *tiny_overrides(cub_root, tmp_path / "exp", "tiny", *ONE_EPOCH,
                                    "training.max_epochs=3", "training.iterations_per_epoch=5"),
            "--space", str(space), "--trials", str(trials), "--study-name", "study", *extra]


def tune_command(cub_root, tmp_path, tiny_overrides, trials, *extra,
                 program: tuple[str, ...] = ("-m", "sdm.cli")) -> list[str]:
    """``python PROGRAM tune ...`` (see ``tune_arguments``)."""
    return [sys.executable, *program,
            *tune_arguments(cub_root, tmp_path, tiny_overrides, trials, *extra)]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONWARNINGS": "ignore"}


def finished_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="study", storage=open_storage(url, 60))
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_a_study_killed_mid_trial_resumes_without_losing_or_repeating_trials(
        cub_root, tmp_path, tiny_overrides):
    command = tune_command(cub_root, tmp_path, tiny_overrides, 3, "--heartbeat", "1")
    folder = tmp_path / "exp" / "study"
    arguments = tune_arguments(cub_root, tmp_path, tiny_overrides, 3, "--heartbeat", "1")
    with (tmp_path / "stderr.txt").open("w") as stream, held(
            arguments, "trial:1", stream) as process:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    url = f"sqlite:///{folder / C.STUDY_DATABASE}"
    study = optuna.load_study(study_name="study", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    # Not a synchronisation (the process is dead): the killed trial counts as stale once
    # its last heartbeat is older than the grace period (2 s).
    time.sleep(3)
    finished = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr
    study = optuna.load_study(study_name="study", storage=url)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and states[1] == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].params == study.trials[1].params
    assert retried[0].state == TrialState.COMPLETE
    new = [t.params for t in study.trials[2:] if t.number != retried[0].number]
    assert new and all(p not in (study.trials[0].params, study.trials[1].params) for p in new), \
        "a resumed study must not propose its first trials' parameters again"
    assert (folder / C.BEST_CONFIG).is_file()


def test_two_workers_share_a_sqlite_study(cub_root, tmp_path, tiny_overrides):
    two_workers_finish_distinct_trials(cub_root, tmp_path, tiny_overrides, None)


def test_two_workers_share_a_postgresql_study(cub_root, tmp_path, tiny_overrides,
                                             postgres_url):  # noqa: F811
    two_workers_finish_distinct_trials(cub_root, tmp_path, tiny_overrides, postgres_url)


def two_workers_finish_distinct_trials(cub_root, tmp_path, tiny_overrides, url):
    storage = ["--storage", url] if url else []
    command = tune_command(cub_root, tmp_path, tiny_overrides, 4, "--workers", "2", *storage)
    finished = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr
    url = url or f"sqlite:///{tmp_path / 'exp' / 'study' / C.STUDY_DATABASE}"
    study = optuna.load_study(study_name="study", storage=url)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        trial_folder = tmp_path / "exp" / "study" / f"trial_{trial.number}"
        assert (trial_folder / "fold_0" / C.FOLD_DONE_FILE).is_file()
        saved = load_config([trial_folder / C.CONFIG_FILE])
        assert saved.loss.params["margin"] == pytest.approx(trial.params["loss.params.margin"])
    assert len({t.params["loss.params.margin"] for t in study.trials}) == 4


@pytest.mark.parametrize(("sent", "status", "cause"), [
    (signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_or_sigterm_stops_cleanly_and_keeps_the_finished_trials(
        cub_root, tmp_path, tiny_overrides, sent, status, cause):
    """Ctrl-C reaches the whole process group, SIGTERM (``kill``) the command alone."""
    folder = tmp_path / "exp" / "study"
    errors = tmp_path / "stderr.txt"
    arguments = tune_arguments(cub_root, tmp_path, tiny_overrides, 3)
    with errors.open("w") as stream, held(arguments, "trial:1", stream) as process:
        if sent == signal.SIGINT:
            os.killpg(process.pid, sent)
        else:
            process.send_signal(sent)
        process.communicate(timeout=120)
    assert process.returncode == status, errors.read_text()[-4000:]
    assert "Traceback" not in errors.read_text(), errors.read_text()[-4000:]
    assert [line for line in errors.read_text().splitlines() if line.startswith("sdm tune:")] == [
        f"sdm tune: stopped ({cause}); the finished trials are kept; rerun the same command to "
        "continue"]
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{folder / C.STUDY_DATABASE}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_sigterm_stops_the_worker_processes_and_fails_their_trials(
        cub_root, tmp_path, tiny_overrides):
    """SIGTERM to ``sdm tune --workers 2`` (``kill PID``) while each worker is held in a trial
    (tests/killable_train.py): the workers end with it and mark their trials failed (none is
    left running), one line from the command, no traceback, exit status 143."""
    command = tune_command(cub_root, tmp_path, tiny_overrides, 4, "--workers", "2",
                           program=(str(KILLABLE), "step:1:2"))
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stream, own_process_group(
            command, {**subprocess_env(), WORKERS_STOP: "step:1:2"}, stream) as process:
        held = 0
        for line in process.stdout:  # each worker announces its held trial here
            held += line.count("STOPPED step:1:2")
            if held == 2:
                break
        assert held == 2, errors.read_text()[-4000:]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=300)
        workers_left = _group_workers(process.pid)
    stderr = errors.read_text()
    assert process.returncode == 143, stderr[-4000:]
    assert workers_left == []
    assert "Traceback" not in stderr, stderr[-4000:]
    assert [line for line in stderr.splitlines() if line.startswith("sdm tune:")] == [
        "sdm tune: stopped (SIGTERM); the finished trials are kept; rerun the same command to "
        "continue"]
    folder = tmp_path / "exp" / "study"
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{folder / C.STUDY_DATABASE}")
    assert sorted(t.state.name for t in study.trials) == ["FAIL", "FAIL"]


def _group_workers(group: int) -> list[int]:
    """The multiprocessing workers (spawned) still running in process group ``group``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == group and \
                    b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError):
            continue  # ended meanwhile
    return found


def test_a_pruned_trial_says_where_it_was_stopped(cub_root, tmp_path, tiny_overrides,
                                                  monkeypatch):
    # A pruner that stops every trial at its first report after the warm-up step (MAP@R < 2).
    monkeypatch.setattr(optuna.pruners, "MedianPruner",
                        lambda **_: optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=1))
    request = tiny_request(cub_root, tmp_path, tiny_overrides, "pruned", trials=2, prune=True)
    request.overrides.append("training.max_epochs=3")
    with pytest.warns(UserWarning, match="partial"):
        summary = run_tune(request)
    folder = tmp_path / "exp" / "pruned"
    study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{folder / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert summary["finished_trials"] == 2 and "best_trial" not in summary
    for trial in study.trials:
        record = (folder / f"trial_{trial.number}" / C.PRUNED_FILE).read_text()
        assert '"epoch": 1' in record and '"fold": 0' in record
        assert not (folder / f"trial_{trial.number}" / "fold_0" / C.FOLD_DONE_FILE).exists()


def test_tuning_sdm_parameters_with_sdm_off_is_refused(tmp_path):
    request = TuneRequest(config_files=[], overrides=["loss.name=triplet"], spaces=["sdm"],
                          trials=1)
    with pytest.raises(ConfigError, match="tunes sdm.alpha, .* but the config has SDM off"):
        run_tune(request)
