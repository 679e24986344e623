"""The paper's README commands, token for token as the shell splits them."""

import shlex
from pathlib import Path

import pytest

from sdm.config import ConfigError
from sdm.paper_commands import load_paper_config, translate

REPO = Path(__file__).resolve().parents[2]
TRAIN_CARS = """--reproduce_results exp_configs/car_ms --experiment_name car_ms
 --merge_argparse_when_resuming --split_manager~SWAP~1 {MLRCSplitManager: {}}
 --config_dataset [default, with_cars196] --config_general [default, with_cars196]"""
TRAIN_CUB = """--reproduce_results exp_configs/cub_ms --experiment_name cub_ms
 --merge_argparse_when_resuming --split_manager~SWAP~1 {MLRCSplitManager: {}}"""


def parse(text):
    return load_paper_config_and_command(shlex.split(text.replace("\n", " ")))


def load_paper_config_and_command(argv):
    command = translate(argv)
    return command, load_paper_config(command)


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(REPO)


def test_cars_training_command():
    command, config = parse(TRAIN_CARS)
    assert command.action == "train" and command.allow_config_change
    assert config.name == "car_ms" and config.dataset.name == "cars196"
    assert config.loss.name == "multi_similarity"
    assert config.loss.params["alpha"] == pytest.approx(14.358760978642266)
    assert (config.training.save_interval, config.training.patience) == (5, 14)
    assert config.sdm.enabled and (config.sdm.passes, config.sdm.masks) == (8, 8)
    assert config.sdm.feature_dropout == 0.1 and config.sdm.embedding_dropout == 0.05


@pytest.mark.parametrize(("flag", "mode"), [("--evaluate_ensemble", "concatenated"),
                                            ("--evaluate", "separated")])
def test_cars_evaluation_commands(flag, mode):
    command, config = parse(TRAIN_CARS + f" --splits_to_eval [test] {flag}")
    assert command.action == "evaluate" and command.eval_mode == mode
    assert config.dataset.name == "cars196"


def test_cub_commands():
    command, config = parse(TRAIN_CUB)
    assert command.action == "train"
    assert config.dataset.name == "cub200" and config.loss.name == "multi_similarity"
    assert (config.training.save_interval, config.training.patience) == (2, 9)
    assert config.loss.params["beta"] == pytest.approx(50.601773762279336)
    command, _ = parse(TRAIN_CUB + " --splits_to_eval [test] --evaluate_ensemble")
    assert (command.action, command.eval_mode) == ("evaluate", "concatenated")


@pytest.mark.parametrize(("name", "loss"), [("cub_triplet", "triplet"),
                                            ("car_contrast", "contrastive"),
                                            ("car_margin", "margin")])
def test_the_alternative_configs(name, loss):
    _, config = parse(f"--reproduce_results exp_configs/{name} --experiment_name {name}")
    assert config.loss.name == loss and config.sdm.enabled


def test_roots_and_generic_overrides():
    _, config = parse(TRAIN_CUB + " --dataset_root /d --root_experiment_folder /e"
                      " --training.seed 4 --sdm.passes 1")
    assert (config.dataset.root, config.experiments_root) == ("/d", "/e")
    assert (config.training.seed, config.sdm.passes) == (4, 1)


def test_unknown_flag_is_named():
    with pytest.raises(ConfigError, match="--bogus_flag"):
        parse(TRAIN_CUB + " --bogus_flag 3")


def test_other_split_managers_are_refused():
    with pytest.raises(ConfigError, match="MLRCSplitManager"):
        parse("--reproduce_results exp_configs/cub_ms --split_manager~SWAP~1 {Other: {}}")


def test_a_paper_command_runs_end_to_end_on_the_tiny_cub_fixture(tmp_path):
    from fixtures import make_cub_tree
    from sdm.paper_commands import main

    root = make_cub_tree(tmp_path / "data", num_classes=16, per_class=4)
    small = (f" --dataset_root {root} --root_experiment_folder {tmp_path / 'exp'}"
             " --dataset.allow_partial true --dataset.use_cache false --model.trunk small_cnn"
             " --model.pretrained false --training.batch_size 8 --training.max_epochs 1"
             " --training.iterations_per_epoch 2 --training.folds [0,1] --sdm.passes 2"
             " --sdm.masks 2 --training.num_workers 0")
    with pytest.warns(UserWarning):
        assert main(shlex.split(TRAIN_CUB + small)) == 0
    with pytest.warns(UserWarning):
        assert main(shlex.split(TRAIN_CUB + small + " --splits_to_eval [test] --evaluate")) == 0
    results = tmp_path / "exp" / "cub_ms" / "results" / "test_results.json"
    assert results.is_file()
    assert (tmp_path / "exp" / "cub_ms" / "fold_1" / "done.json").is_file()
