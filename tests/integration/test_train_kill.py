"""``sdm train`` killed with SIGKILL at any moment resumes to exactly the uninterrupted run.

One fold is trained uninterrupted; the same run in another folder is killed four times in
sequence (mid-epoch before any epoch checkpoint, right after the first epoch's checkpoint,
half-way through writing a checkpoint, mid-epoch after a resume), each time at a moment the
child announces and then waits at (``killable_train.py``), then rerun to its end with plain
``sdm train``: its curve and every checkpoint must equal the uninterrupted run's bit for bit.
"""

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdm import constants as C
from sdm import storage
from sdm.engine.experiment import ExperimentFolder
from training_helpers import TIMEOUT, held, held_environment

EXTRA = ("training.folds=[0]", "training.max_epochs=3", "training.iterations_per_epoch=3",
         "training.patience=10")
CHECKPOINTS = (C.LATEST_CHECKPOINT, C.BEST_CHECKPOINT, C.PRETRAINED_CHECKPOINT)


def _train_to_end(overrides: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "sdm", "train", *overrides],
                         capture_output=True, text=True, timeout=TIMEOUT, env=held_environment())
    assert run.returncode == 0, run.stderr[-4000:]


def _train_and_kill(overrides: list[str], stop: str, log: Path) -> None:
    """Starts the run, waits until it announces ``stop`` and SIGKILLs it there."""
    with log.open("w") as stderr, held(["train", *overrides], stop, stderr) as job:
        job.kill()
        job.wait()


def _assert_equal(found: Any, expected: Any, where: str) -> None:
    """Exact equality of nested checkpoint contents (tensors with torch.equal)."""
    if isinstance(expected, torch.Tensor):
        same = isinstance(found, torch.Tensor) and torch.equal(found, expected)
        assert same, where
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(found, expected), where
    elif isinstance(expected, dict):
        assert found.keys() == expected.keys(), where
        for key in expected:
            _assert_equal(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            _assert_equal(a, b, f"{where}[{index}]")
    else:
        assert found == expected, where


@pytest.fixture(scope="module")
def uninterrupted(cub_root, tiny_overrides, tmp_path_factory) -> Path:
    """The fold folder of the run trained without interruption."""
    experiments = tmp_path_factory.mktemp("uninterrupted")
    _train_to_end(tiny_overrides(cub_root, experiments, "run", *EXTRA))
    return ExperimentFolder(experiments / "run").fold(0)


def test_sigkilled_training_resumes_to_the_uninterrupted_result(
        uninterrupted, cub_root, tiny_overrides, tmp_path):
    overrides = tiny_overrides(cub_root, tmp_path / "experiments", "run", *EXTRA)
    folder = ExperimentFolder(tmp_path / "experiments" / "run").fold(0)
    latest = folder / C.LATEST_CHECKPOINT

    def latest_epoch() -> int:
        return storage.load_checkpoint(latest)["epoch"]

    # Mid-epoch 1: only the epoch-0 state is saved.
    _train_and_kill(overrides, "step:1:2", tmp_path / "kill1.log")
    assert latest_epoch() == 0

    # Right after the first epoch's checkpoint is in place.
    _train_and_kill(overrides, "saved:1", tmp_path / "kill2.log")
    assert latest_epoch() == 1

    # Half-way through writing epoch 2's checkpoint: the half-written bytes are in the
    # temporary file beside it, and latest.pth is still epoch 1's, complete.
    _train_and_kill(overrides, "writing:2", tmp_path / "kill3.log")
    partial = list(latest.parent.glob(f".{latest.name}.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    with pytest.raises(Exception):  # noqa: B017 - any failure to read: the file is truncated
        torch.load(partial[0], map_location="cpu", weights_only=False)
    assert latest_epoch() == 1
    epochs = [row["epoch"] for row in storage.read_csv(folder / C.METRICS_CSV)]
    assert epochs == ["-1", "0", "1", "2"], "epoch 2 was validated before the kill"

    # Mid-epoch 2 of the run resumed from epoch 1.
    _train_and_kill(overrides, "step:2:1", tmp_path / "kill4.log")
    assert latest_epoch() == 1
    assert not (folder / C.FOLD_DONE_FILE).exists()

    _train_to_end(overrides)
    assert latest_epoch() == 3
    assert not list(folder.rglob(".*.tmp")), "the rerun removes the half-written file"
    expected_curve = storage.read_csv(uninterrupted / C.METRICS_CSV)
    assert [row["epoch"] for row in expected_curve] == ["-1", "0", "1", "2", "3"]
    assert storage.read_csv(folder / C.METRICS_CSV) == expected_curve
    for name in CHECKPOINTS:
        _assert_equal(storage.load_checkpoint(folder / name),
                      storage.load_checkpoint(uninterrupted / name), name)
    done = storage.read_json(folder / C.FOLD_DONE_FILE)
    expected = storage.read_json(uninterrupted / C.FOLD_DONE_FILE)
    for key in ("best_epoch", "best_val_map_at_r", "last_epoch"):
        assert done[key] == expected[key], key


@pytest.mark.parametrize(("sent", "status", "cause"), [
    (signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_or_sigterm_ends_training_with_one_line_and_its_status(
        cub_root, tiny_overrides, tmp_path, sent, status, cause):
    """SIGINT or SIGTERM while a step runs (the moment the child announces): no traceback, one
    line, exit 128 + the signal; the rerun resumes and finishes."""
    overrides = tiny_overrides(cub_root, tmp_path, "run", *EXTRA)
    with held(["train", *overrides], "step:1:2", subprocess.PIPE) as job:
        job.send_signal(sent)
        _, stderr = job.communicate()
    assert job.returncode == status, stderr[-4000:]
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("sdm train:")] == [
        f"sdm train: stopped ({cause}); what was saved is kept: rerun the same command to "
        "resume"]
    _train_to_end(overrides)
    assert (ExperimentFolder(tmp_path / "run").fold(0) / C.FOLD_DONE_FILE).is_file()


def test_a_second_training_of_a_folder_in_training_is_refused_until_the_first_is_killed(
        cub_root, tiny_overrides, tmp_path):
    """While one ``sdm train`` trains a folder, another of the same folder exits 2 naming the
    first one's pid; SIGKILL frees the folder (the kernel drops the lock) and a rerun resumes."""
    overrides = tiny_overrides(cub_root, tmp_path, "run", *EXTRA)
    with held(["train", *overrides], "step:1:2", subprocess.DEVNULL) as job:
        second = subprocess.run([sys.executable, "-m", "sdm", "train", *overrides],
                                capture_output=True, text=True, timeout=TIMEOUT,
                                env=held_environment())
    assert job.returncode == -signal.SIGKILL  # held until killed at the block's end
    assert second.returncode == 2, second.stderr[-4000:]
    assert "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("sdm train:")]
    assert len(errors) == 1, second.stderr[-4000:]
    assert errors[0].startswith(f"sdm train: error: experiment {tmp_path / 'run'} is being "
                                f"trained by another process (pid {job.pid}, since ")
    _train_to_end(overrides)
    assert (ExperimentFolder(tmp_path / "run").fold(0) / C.FOLD_DONE_FILE).is_file()
