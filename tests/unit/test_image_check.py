"""The header check before training: unreadable image files stop a run before it trains, even
in classes that training never samples, unless ``dataset.check_images=false``."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures import make_cub_tree
from sdm import cli
from sdm.constants import CUB_IMAGES
from sdm.data.base import ArrayImageDataset, FileImageDataset
from sdm.data.image_check import (
    BAD_FILES_SHOWN,
    describe_unreadable,
    image_files,
    unreadable_images,
)

ONE_FOLD = ("training.folds=[0]", "training.max_epochs=1", "training.iterations_per_epoch=1")


def _good_images(folder: Path) -> list[Path]:
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    paths = [folder / "good.jpg", folder / "good.png"]
    for path in paths:
        Image.fromarray(pixels).save(path)
    return paths


def test_unreadable_images_are_those_pil_cannot_open(tmp_path):
    good = _good_images(tmp_path)
    text = tmp_path / "text.jpg"
    text.write_bytes(b"this is not an image\n" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    bad = unreadable_images([good[0], text, good[1], empty, missing])
    assert [path for path, _ in bad] == [text, empty, missing]
    assert "UnidentifiedImageError" in bad[0][1] and "FileNotFoundError" in bad[2][1]
    assert unreadable_images(good) == []


def test_the_message_names_the_count_a_few_files_and_the_switch():
    bad = [(Path(f"/data/{i}.jpg"), "broken") for i in range(BAD_FILES_SHOWN + 2)]
    message = describe_unreadable(bad, 100, "dataset.check_images=false")
    assert f"{BAD_FILES_SHOWN + 2} of the 100 image files" in message
    assert f"/data/{BAD_FILES_SHOWN - 1}.jpg" in message
    assert f"/data/{BAD_FILES_SHOWN}.jpg" not in message and "... and 2 more" in message
    assert "dataset.check_images=false" in message


def test_image_files_are_the_files_a_dataset_decodes(tmp_path):
    paths = _good_images(tmp_path)
    assert image_files(FileImageDataset(paths, [0, 1], "x")) == paths
    arrays = ArrayImageDataset(np.zeros((2, 8, 8), dtype=np.uint8), [0, 1], "glyphs")
    assert image_files(arrays) == []


@pytest.fixture
def broken_cub(tmp_path) -> tuple[Path, Path]:
    """A CUB tree whose last class (a test class, never sampled in training) holds one file
    that is not an image; returns (dataset root, that file)."""
    root = make_cub_tree(tmp_path / "data", num_classes=16, per_class=4)
    broken = sorted((root / CUB_IMAGES).glob("016.*/*.jpg"))[-1]
    broken.write_bytes(b"\x00 not a JPEG " * 20)
    return root, broken


def test_an_unreadable_image_stops_the_run_before_it_trains(broken_cub, tiny_overrides,
                                                            tmp_path, capsys):
    root, broken = broken_cub
    experiments = tmp_path / "experiments"
    assert cli.main(["train", *tiny_overrides(root, experiments, "run", *ONE_FOLD)]) == 2
    error = capsys.readouterr().err
    assert "checked the headers of 64 image files in" in error
    assert "1 of the 64 image files cannot be opened" in error
    assert str(broken) in error and "dataset.check_images=false" in error
    assert not (experiments / "run").exists(), "nothing is written before the check"


def test_check_images_false_skips_the_check(broken_cub, tiny_overrides, tmp_path, capsys):
    root, _ = broken_cub
    overrides = tiny_overrides(root, tmp_path / "experiments", "run", *ONE_FOLD,
                               "dataset.check_images=false")
    assert cli.main(["train", *overrides]) == 0  # training never reads the test classes
    assert "checked the headers" not in capsys.readouterr().err
    assert (tmp_path / "experiments" / "run" / "fold_0" / "done.json").is_file()
