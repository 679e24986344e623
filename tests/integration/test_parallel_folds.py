"""`sdm train --devices`: folds in separate worker processes, one per device."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdm import constants as C
from sdm import storage
from sdm.cli import main
from sdm.engine import parallel_folds as pf
from sdm.engine.experiment import ExperimentFolder
from training_helpers import (
    KILLABLE,
    TIMEOUT,
    WORKERS_STOP,
    held_environment,
    own_process_group,
)

REPO = Path(__file__).resolve().parents[2]


def fold_file(experiment: Path, fold: int, name: str) -> Path:
    return ExperimentFolder(experiment).fold(fold) / name


def test_cpu_folds_train_in_separate_processes_with_the_sequential_numbers(
        tiny_config, tmp_path, capsys, monkeypatch):
    # The workers take this process's torch threads, so that both compute with the same
    # kernels and rounding: their numbers are then the very same.
    monkeypatch.setattr(pf, "_cpu_threads", lambda devices, folds: torch.get_num_threads())
    with pytest.warns(UserWarning, match="partial"):
        results = pf.run_folds_in_parallel(tiny_config("parallel"), ["cpu", "cpu"])
    with pytest.warns(UserWarning, match="partial"):
        summaries = ExperimentFolder.of(tiny_config("sequential")).run()
    assert [(r["fold"], r["device"], r["status"]) for r in results] == [
        (0, "cpu", pf.DONE), (1, "cpu", pf.DONE)]
    pids = set()
    for fold, result, summary in zip((0, 1), results, summaries, strict=True):
        log = fold_file(tmp_path / "parallel", fold, C.FOLD_LOG)
        assert result["log"] == str(log)
        pids |= set(re.findall(r"pid (\d+)", log.read_text()))
        parallel = storage.read_csv(fold_file(tmp_path / "parallel", fold, C.METRICS_CSV))
        sequential = storage.read_csv(fold_file(tmp_path / "sequential", fold, C.METRICS_CSV))
        assert [row["epoch"] for row in parallel] == ["-1", "0", "1", "2"]
        assert parallel == sequential
        models = [storage.load_checkpoint(fold_file(tmp_path / name, fold, C.LATEST_CHECKPOINT))
                  for name in ("parallel", "sequential")]
        for part in ("trunk", "embedder"):
            for key, value in models[1][part].items():
                assert torch.equal(models[0][part][key], value), (fold, part, key)
        done = storage.read_json(fold_file(tmp_path / "parallel", fold, C.FOLD_DONE_FILE))
        assert done["best_epoch"] == summary["best_epoch"] == result["best_epoch"]
        assert done["best_val_map_at_r"] == summary["best_val_map_at_r"]
    assert len(pids) == 2 and str(os.getpid()) not in pids
    printed = capsys.readouterr().out
    assert "fold 0: started on cpu" in printed and "fold 1: done on cpu" in printed
    assert re.search(r"^1\s+cpu\s+done\s+\d", printed, flags=re.MULTILINE)

    with pytest.warns(UserWarning, match="partial"):
        rerun = pf.run_folds_in_parallel(tiny_config("parallel"), ["cpu"])
    assert [(r["status"], r["best_epoch"]) for r in rerun] == [
        (pf.DONE, r["best_epoch"]) for r in results]
    assert "fold 1: finished before" in capsys.readouterr().out


def run_and_kill_on_start(command: list[str], kill_fold: int, stderr: Path) -> tuple[int, str]:
    """Runs ``command`` (an ``sdm train --devices``), SIGKILLs fold ``kill_fold``'s worker as
    soon as it is announced, and returns (exit status, stdout)."""
    with stderr.open("w") as errors:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors,
                                   text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        out = []
        for line in process.stdout:
            out.append(line)
            started = re.match(rf"fold {kill_fold}: started on cpu \(pid (\d+)\)", line)
            if started:
                os.kill(int(started.group(1)), signal.SIGKILL)
        return process.wait(timeout=600), "".join(out)


def test_failing_folds_do_not_stop_the_other(cub_root, tmp_path, tiny_overrides):
    """Fold 1 raises (its resume checkpoint is corrupt), fold 2's worker is killed, fold 0
    trains; the summary says why each failed and the exit status is 1."""
    experiment = tmp_path / "failing"
    broken = fold_file(experiment, 1, C.LATEST_CHECKPOINT)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    command = [sys.executable, "-m", "sdm.cli", "train", "--devices", "cpu,cpu",
               *tiny_overrides(cub_root, tmp_path, "failing", "training.folds=[0,1,2]")]
    status, out = run_and_kill_on_start(command, 2, tmp_path / "stderr.txt")
    assert status == 1, out + (tmp_path / "stderr.txt").read_text()
    assert "fold 0: done on cpu" in out and "fold 1: FAILED on cpu" in out
    assert re.search(r"^0\s+cpu\s+done\s+\d", out, flags=re.MULTILINE)
    assert re.search(r"^1\s+cpu\s+failed\s+-\s+-", out, flags=re.MULTILINE)
    assert re.search(r"^2\s+cpu\s+failed\s+-\s+-", out, flags=re.MULTILINE)
    failures = out.split(f"fold 1 failed (log {fold_file(experiment, 1, C.FOLD_LOG)}):\n")[1]
    assert "UnpicklingError" in failures.split("fold 2 failed")[0]
    assert f"fold 2 failed (log {fold_file(experiment, 2, C.FOLD_LOG)}):" in failures
    assert "worker process killed by signal SIGKILL" in failures
    log = fold_file(experiment, 1, C.FOLD_LOG).read_text()
    assert "Traceback" in log and "UnpicklingError" in log
    assert fold_file(experiment, 0, C.FOLD_DONE_FILE).is_file()
    assert not fold_file(experiment, 1, C.FOLD_DONE_FILE).exists()
    assert not fold_file(experiment, 2, C.FOLD_DONE_FILE).exists()


def test_sigterm_stops_the_fold_workers_with_one_line_and_a_rerun_finishes(
        cub_root, tmp_path, tiny_overrides):
    """SIGTERM to ``sdm train --devices cpu,cpu`` (``kill PID``) while both workers train (each
    held after its step 2, as its log announces): the workers end with it, no orphan is left,
    one line and exit status 143; the rerun trains both folds to the end."""
    overrides = tiny_overrides(cub_root, tmp_path, "run", "training.max_epochs=1")
    command = ["train", "--devices", "cpu,cpu", *overrides]
    environment = {**held_environment(), WORKERS_STOP: "step:1:2"}
    errors = tmp_path / "stderr.txt"
    workers: dict[int, Path] = {}
    with errors.open("w") as stream, own_process_group(
            [sys.executable, str(KILLABLE), "step:1:2", *command], environment, stream) as job:
        for line in job.stdout:
            started = re.match(r"fold (\d): started on cpu \(pid (\d+)\), log (.+)$", line)
            if started:
                workers[int(started[2])] = Path(started[3])
                if len(workers) == 2:
                    break
        assert len(workers) == 2, errors.read_text()[-4000:]
        deadline = time.monotonic() + TIMEOUT
        while not all(log.is_file() and "STOPPED step:1:2" in log.read_text()
                      for log in workers.values()):
            assert time.monotonic() < deadline and job.poll() is None, errors.read_text()[-4000:]
            time.sleep(0.2)  # polling the logs for the announcement, up to the deadline
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=TIMEOUT)
        orphans = [pid for pid in workers if _alive(pid)]
    stderr = errors.read_text()
    assert job.returncode == 143, stderr[-4000:]
    assert orphans == [], "fold workers outlived the stopped command"
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("sdm train:")] == [
        "sdm train: stopped (SIGTERM); what was saved is kept: rerun the same command to "
        "resume"]
    rerun = subprocess.run([sys.executable, "-m", "sdm", *command], capture_output=True,
                           text=True, timeout=TIMEOUT, env=held_environment())
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    for fold in (0, 1):
        assert fold_file(tmp_path / "run", fold, C.FOLD_DONE_FILE).is_file()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (the stopped command reaped its workers: an orphan
    would be running, a zombie would not be ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(("text", "message"), [
    ("", "without empty items"),
    ("cpu,,cpu", "without empty items"),
    ("gpu", "unknown device 'gpu'"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("cpu,cuda:3", "cuda:3 does not exist; available CUDA devices: cuda:0, cuda:1"),
])
def test_bad_devices_are_refused_with_what_is_wrong(monkeypatch, text, message):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=re.escape(message)):
        pf.parse_devices(text)


def test_devices_parse_and_cuda_without_a_gpu_is_named(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pf.parse_devices(" cuda:0, cuda:1,cpu ,cuda") == ["cuda:0", "cuda:1", "cpu", "cuda"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(["train", "cub_ms", "--devices", "cuda"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sdm train: error: --devices: cuda does not exist")
    assert "none (no CUDA device is visible)" in error


def test_the_summary_table_lists_every_fold_then_each_failure():
    common = {"best_epoch": None, "best_val_map_at_r": None, "error": None}
    failed = {**common, "fold": 2, "device": "cuda:1", "status": pf.FAILED, "seconds": 7.0,
              "error": "File \"x.py\", line 3, in f\nRuntimeError: boom",
              "log": "e/fold_2/train.log"}
    done = {**common, "fold": 3, "device": "cuda:0", "status": pf.DONE, "seconds": 61.25,
            "best_epoch": 4, "best_val_map_at_r": 0.5, "log": "e/fold_3/train.log"}
    before = {**done, "fold": 0, "device": None, "seconds": 0.0}
    lines = pf.summary_table([failed, done, before]).splitlines()
    assert lines[0] == "fold  device  status  best epoch  best val MAP@R  seconds"
    assert lines[1].split() == ["2", "cuda:1", "failed", "-", "-", "7.0"]
    assert lines[2].split() == ["3", "cuda:0", "done", "4", "50.00", "61.2"]
    assert lines[3].split() == ["0", "-", "done", "4", "50.00", "0.0"]
    assert lines[4:] == ["fold 2 failed (log e/fold_2/train.log):",
                         '  File "x.py", line 3, in f', "  RuntimeError: boom"]
