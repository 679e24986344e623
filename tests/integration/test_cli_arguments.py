"""``key=value`` overrides may come anywhere on a command line, also after the options."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdm import constants as C
from sdm.cli import main, parse_arguments
from sdm.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["train", "cub_ms", "name=x", "--devices", "cpu,cpu", "training.seed=2"],
    ["train", "cub_ms", "--devices", "cpu,cpu", "name=x", "training.seed=2"],
    ["train", "--devices", "cpu,cpu", "cub_ms", "name=x", "training.seed=2"],
])
def test_train_takes_overrides_before_and_after_its_options(argv):
    args = parse_arguments(argv)
    assert args.config == ["cub_ms", "name=x", "training.seed=2"]
    assert args.devices == "cpu,cpu"


def test_tune_takes_overrides_after_its_options_and_loads_them():
    args = parse_arguments(["tune", "cub_ms", "--space", "ms_sdm", "--trials", "3", "name=x",
                            "--prune", "training.seed=4"])
    assert (args.space, args.trials, args.prune) == (["ms_sdm"], 3, True)
    config = load_config(args.config[:1], args.config[1:])
    assert (config.name, config.training.seed) == ("x", 4)


def test_evaluate_takes_overrides_after_its_options():
    args = parse_arguments(["evaluate", "cub_ms", "--mode", "both", "name=x"])
    assert (args.config, args.mode) == (["cub_ms", "name=x"], "both")


@pytest.mark.parametrize("argv", [
    ["train", "cub_ms", "--devices", "cpu", "--bogus", "name=x"],  # an unknown option
    ["train", "cub_ms", "--devices", "cpu", "other.yaml"],  # a file after the options
    ["demo", "--quick", "name=x"],  # a command without a config
    ["tune", "cub_ms", "--space", "ms_sdm", "--trials", "0"],  # not a number of trials
])
def test_unknown_options_and_stray_arguments_are_still_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(argv)
    assert exit_info.value.code == 2
    assert "error: " in capsys.readouterr().err


def test_a_training_run_takes_the_override_after_devices(tmp_path, cub_root, tiny_overrides):
    overrides = tiny_overrides(cub_root, tmp_path, "before", "training.folds=[0]",
                               "training.max_epochs=0")
    with pytest.warns(UserWarning, match="partial"):
        assert main(["train", *overrides, "--devices", "cpu", "name=after"]) == 0
    assert not (tmp_path / "before").exists()
    saved = load_config([tmp_path / "after" / C.CONFIG_FILE])
    assert saved.name == "after"
    assert (tmp_path / "after" / "fold_0" / C.BEST_CHECKPOINT).is_file()


def test_sdm_tune_applies_an_override_given_after_its_options(tmp_path):
    """The real command: the override after --trials reaches the config (and is refused)."""
    space = tmp_path / "space.yaml"
    space.write_text("sdm.alpha: {low: 1.0, high: 2.0}\n")
    run = subprocess.run(
        [sys.executable, "-m", "sdm", "tune", "cub_ms", "--space", str(space), "--trials", "3",
         f"experiments_root={tmp_path}", "training.batch_size=0"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "training.batch_size=0 is out of range: valid values are >= 2" in run.stderr
