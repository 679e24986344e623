"""What is checked before an experiment folder is written, and restarting a failed start."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fixtures import class_pattern, write_corrupt_jpeg
from sdm import constants as C
from sdm.cli import main
from sdm.config import ConfigError, load_config
from sdm.engine.experiment import ExperimentFolder
from sdm.engine.preflight import classes_for_training_classes

REPO = Path(__file__).resolve().parents[2]


def make_photo_folder(root: Path, num_classes: int, per_class: int | list[int]) -> Path:
    """``root/class_<k>/<i>.jpg``: ``per_class`` images per class (or one count per class)."""
    counts = per_class if isinstance(per_class, list) else [per_class] * num_classes
    for label, count in enumerate(counts):
        (root / f"class_{label:02d}").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = class_pattern(label, index, (60, 40))
            Image.fromarray(pixels).save(root / f"class_{label:02d}" / f"{index}.jpg")
    return root


def test_a_small_own_dataset_is_refused_before_anything_is_written(tmp_path):
    photos = make_photo_folder(tmp_path / "photos", num_classes=8, per_class=5)
    command = [sys.executable, "-m", "sdm.cli", "train", "exp_configs/own_photos.yaml",
               f"dataset.path={photos}", f"experiments_root={tmp_path / 'exp'}"]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert finished.returncode == 2, finished.stderr
    message = finished.stderr
    assert "Traceback" not in message
    assert "training.batch_size=32" in message and "training.m_per_class=4" in message
    assert ("fold 0 has 3 training classes (15 images) and 1 validation classes (5 images)"
            in message)
    assert "at most 12" in message and "at least 19 classes" in message
    assert not (tmp_path / "exp").exists()


def test_the_fewest_classes_for_a_number_of_training_classes_by_brute_force():
    def train_classes(n):  # DESIGN section 3, restated
        return n - int(n * 0.125) - int(n * 0.5)

    for needed in range(1, 40):
        expected = next(n for n in range(1, 200) if train_classes(n) >= needed)
        assert classes_for_training_classes(needed) == expected
    assert classes_for_training_classes(8) == 19  # 19 classes: 2 val, 9 test, 8 train


def test_classes_with_fewer_images_than_m_per_class_are_announced(tmp_path, tiny_overrides):
    counts = [2, 4, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    photos = make_photo_folder(tmp_path / "photos", 16, counts)
    config = load_config(overrides=tiny_overrides(
        tmp_path, tmp_path / "exp", "few", "dataset.name=folder", f"dataset.path={photos}",
        "training.folds=[0]", "training.max_epochs=0"))
    with pytest.warns(UserWarning, match=r"fold 0: 2 of 6 training classes have fewer than "
                                         r"training.m_per_class=4 images \(the fewest: 2\)"):
        ExperimentFolder.of(config).run()


def test_an_empty_folder_fails_first_and_the_corrected_rerun_starts(tmp_path, tiny_overrides):
    empty = tmp_path / "photos"
    empty.mkdir()
    overrides = tiny_overrides(tmp_path, tmp_path / "exp", "mine", "dataset.name=folder",
                               f"dataset.path={empty}", "training.folds=[0]",
                               "training.max_epochs=1")
    with pytest.raises(ValueError, match="no images found"):
        ExperimentFolder.of(load_config(overrides=overrides)).run()
    assert not (tmp_path / "exp").exists()
    make_photo_folder(empty, 16, 4)
    ExperimentFolder.of(load_config(overrides=overrides)).run()
    assert (tmp_path / "exp" / "mine" / "fold_0" / C.FOLD_DONE_FILE).is_file()


def test_an_unknown_loss_parameter_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="'triplet' does not take margn; valid keys here: margin"):
        load_config(overrides=["loss.name=triplet", "loss.params={margn: 0.1}"])
    with pytest.raises(ConfigError, match="valid keys here: epsilon"):
        load_config(overrides=["loss.name=multi_similarity", "loss.miner=multi_similarity",
                               "loss.miner_params={eps: 0.1}"])


def test_a_missing_weights_file_is_found_before_the_folder_is_written(tiny_config, tmp_path):
    config = tiny_config("weights", "model.trunk=bninception", "model.pretrained=true",
                         f"model.weights_path={tmp_path / 'bn_inception.pth'}")
    with pytest.warns(UserWarning, match="partial"), pytest.raises(
            FileNotFoundError, match="looked at .*bn_inception.pth"):
        ExperimentFolder.of(config).run()
    assert not (tmp_path / "weights").exists()


def test_a_loss_that_cannot_take_sdm_is_found_before_the_folder_is_written(tiny_config, tmp_path):
    config = tiny_config("proxy", "loss.name=proxy_nca", "sdm.enabled=true")
    with pytest.warns(UserWarning, match="partial"), pytest.raises(
            ConfigError, match="cannot wrap ProxyNCALoss"):
        ExperimentFolder.of(config).run()
    assert not (tmp_path / "proxy").exists()


def test_an_experiment_without_a_trained_step_restarts_with_a_new_config(tiny_config, tmp_path):
    first = tiny_config("restart", "training.folds=[0]", "training.max_epochs=0")
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(first).run()
    epoch0 = tmp_path / "restart" / "fold_0" / C.PRETRAINED_CHECKPOINT
    assert epoch0.is_file()
    changed = tiny_config("restart", "training.folds=[0]", "training.max_epochs=1",
                          "loss.params={neg_margin: 0.7}")
    with pytest.warns(UserWarning, match="partial"):
        [summary] = ExperimentFolder.of(changed).run()
    assert summary["last_epoch"] == 1
    saved = load_config([tmp_path / "restart" / C.CONFIG_FILE])
    assert saved.loss.params["neg_margin"] == 0.7 and saved.training.max_epochs == 1
    assert not (tmp_path / "restart" / C.CONFIG_CHANGES_FILE).exists()
    again = tiny_config("restart", "training.folds=[0]", "training.max_epochs=1",
                        "loss.params={neg_margin: 0.5}")
    with pytest.warns(UserWarning, match="partial"), pytest.raises(
            ConfigError, match="started with a different config") as refused:
        ExperimentFolder.of(again).run()
    message = str(refused.value)
    assert "\n" not in message and "--allow-config-change" in message
    assert "neg_margin" in message and message.index("0.7") < message.index("0.5")


def test_an_image_that_cannot_be_decoded_points_to_the_check_command(tmp_path, tiny_overrides,
                                                                     capsys):
    photos = make_photo_folder(tmp_path / "photos", 16, 4)
    write_corrupt_jpeg(photos / "class_01" / "9.jpg")
    code = main(["train", *tiny_overrides(tmp_path, tmp_path / "exp", "corrupt",
                                          "dataset.name=folder", f"dataset.path={photos}",
                                          "training.folds=[1]")])
    assert code == 2
    error = capsys.readouterr().err
    assert "9.jpg" in error and "--verify-images" in error
