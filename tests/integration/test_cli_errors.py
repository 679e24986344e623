"""Bad input reaches the ``sdm`` command as one line on stderr and exit status 2, no traceback.

Each kind of bad input runs the real command in a subprocess: numeric config values out of
range, a YAML syntax error, a weights file that is no state dict, a latest checkpoint that
cannot be read when a fold resumes, and a device this machine does not have.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdm import constants as C
from sdm import storage
from sdm.config import load_config
from sdm.engine.experiment import ExperimentFolder
from sdm.errors import UserInputError
from sdm.models.small_cnn import SmallCNN
from sdm.models.trunks import load_weights

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds


def sdm(*argv: str | Path) -> subprocess.CompletedProcess:
    """``sdm ARGV`` in a subprocess, as a user runs it."""
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sdm", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT, env=environment)


def assert_user_error(run: subprocess.CompletedProcess, command: str, *phrases: str) -> None:
    """Exit status 2, no traceback, and one ``sdm <command>: error:`` line on stderr holding
    every phrase."""
    assert run.returncode == 2, run.stderr[-4000:]
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    lines = [line for line in run.stderr.splitlines()
             if line.startswith(f"sdm {command}: error: ")]
    assert len(lines) == 1, run.stderr[-4000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize(("override", "message"), [
    ("training.batch_size=0", "training.batch_size=0 is out of range: valid values are >= 2"),
    ("optimizer.trunk_lr=-0.1", "optimizer.trunk_lr=-0.1 is out of range: valid values are >= 0"),
    ("sdm.embedding_dropout=1.5",
     "sdm.embedding_dropout=1.5 is out of range: valid values are in [0, 1)"),
    ("model.embedding_sizes=[128,0]",
     "model.embedding_sizes=[128, 0] is out of range: each item must be >= 1"),
])
def test_a_numeric_value_out_of_range_names_key_value_and_range(tmp_path, override, message):
    run = sdm("train", "cub_ms", override, f"experiments_root={tmp_path}")
    assert_user_error(run, "train", message)
    assert not any(tmp_path.iterdir())


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("training:\n  batch_size: 8\n   seed: 1\n")
    run = sdm("train", config)
    assert_user_error(run, "train", f"{config}:3:8: YAML syntax error: ",
                      "mapping values are not allowed")


def test_a_weights_file_that_is_no_state_dict_is_named(tmp_path, cub_root, tiny_overrides):
    weights = tmp_path / "weights.pth"
    torch.save([torch.zeros(3)], weights)
    overrides = tiny_overrides(cub_root, tmp_path / "exp", "weights", "training.folds=[0]",
                               "model.trunk=efficientnet_lite0", "model.pretrained=true",
                               f"model.weights_path={weights}")
    run = sdm("train", *overrides)
    assert_user_error(run, "train", f"weights file {weights} holds a list, not a state dict",
                      "model.weights_path")


def test_a_weights_file_that_cannot_be_read_is_named(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not a pytorch file")
    with pytest.raises(UserInputError, match=f"weights file {weights} cannot be read"):
        load_weights(SmallCNN(), weights)


def test_an_unreadable_latest_checkpoint_says_what_is_intact_and_how_to_restart(
        tmp_path, cub_root, tiny_overrides):
    overrides = tiny_overrides(cub_root, tmp_path, "resume", "training.folds=[0]",
                               "training.max_epochs=1", "training.iterations_per_epoch=1")
    config = load_config(overrides=overrides)
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(config).run()
    fold = ExperimentFolder.of(config).path / "fold_0"
    (fold / C.FOLD_DONE_FILE).unlink()  # as if the run had been stopped
    latest, best = fold / C.LATEST_CHECKPOINT, fold / C.BEST_CHECKPOINT
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    best_bytes = best.read_bytes()
    run = sdm("train", *overrides)
    assert_user_error(
        run, "train", "fold 0 cannot resume: ", f"checkpoint {latest} cannot be read",
        f"Its best checkpoint {best} is intact (epoch ",
        f"To restart fold 0 from epoch 0, delete {latest}", "copy it elsewhere first")
    assert best.read_bytes() == best_bytes and latest.is_file()  # nothing deleted


def test_a_checkpoint_that_cannot_be_read_is_named(tmp_path):
    path = tmp_path / "best.pth"
    path.write_bytes(b"")
    with pytest.raises(storage.CheckpointError, match=f"checkpoint {path} cannot be read"):
        storage.load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(storage.CheckpointError, match="holds a list"):
        storage.load_checkpoint(path)


def test_an_unknown_device_is_named_before_the_dataset_is_read(tmp_path):
    run = sdm("train", "exp_configs/glyphs/ms.yaml", "training.device=gpu",
              f"dataset.root={tmp_path / 'no_data_here'}", f"experiments_root={tmp_path}")
    assert_user_error(run, "train", "training.device: unknown device 'gpu'; expected cpu, "
                                    "cuda, cuda:N or mps")
    assert not any(tmp_path.iterdir())


def test_a_device_this_machine_lacks_lists_the_devices_there_are(tmp_path, cub_root,
                                                                  tiny_overrides):
    count = torch.cuda.device_count()
    missing = "cuda" if count == 0 else f"cuda:{count}"
    overrides = tiny_overrides(cub_root, tmp_path, "device", f"training.device={missing}")
    run = sdm("train", *overrides)
    assert_user_error(run, "train", f"training.device: {missing} does not exist; "
                                    "available CUDA devices: ")
    assert not (tmp_path / "device").exists()


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """``sdm list-points small_cnn | head -0``: stdout's reader is gone before the first line."""
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "sdm", "list-points", "small_cnn"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                                   env=environment)
        process.stdout.close()
        assert process.wait(timeout=TIMEOUT) == 141
    assert (tmp_path / "stderr").read_text() == ""
