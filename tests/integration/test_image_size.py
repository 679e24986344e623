"""``transform.resize`` / ``transform.crop``: defaults per trunk, checks, and every image path."""

import pytest
import torch

from sdm import constants as C
from sdm.cli import main
from sdm.config import ConfigError, load_config
from sdm.engine import build
from sdm.engine.experiment import ExperimentFolder


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model.trunk=bninception"], (256, 227)),
    (["model.trunk=resnet50"], (256, 227)),
    (["model.trunk=efficientnet_lite0"], (256, 227)),
    (["model.trunk=small_cnn"], (None, None)),
    (["transform.resize=72", "transform.crop=64"], (72, 64)),
    (["transform.resize=72"], (72, 72)),
    (["transform.resize=300"], (300, 227)),
    (["transform.crop=200"], (256, 200)),
    (["model.trunk=small_cnn", "transform.crop=24"], (24, 24)),
])
def test_unset_sizes_take_the_trunk_default(overrides, expected):
    config = load_config(overrides=overrides)
    assert (config.transform.resize, config.transform.crop) == expected


@pytest.mark.parametrize(("overrides", "message"), [
    (["transform.resize=64", "transform.crop=72"], r"transform.crop \(72\) must not exceed"),
    (["transform.crop=300"], r"transform.crop \(300\) must not exceed transform.resize \(256\)"),
    (["transform.resize=15", "transform.crop=15"],
     r"transform.resize=15 is out of range: valid values are >= 16"),
    (["transform.size=64"], "unknown config key 'transform.size'; valid keys here: crop, resize"),
])
def test_impossible_sizes_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


@pytest.mark.parametrize(("trunk", "channels"), [("small_cnn", 1), ("efficientnet_lite0", 3)])
def test_crop_64_reaches_the_model_in_every_path(tiny_config, tmp_path, monkeypatch, trunk,
                                                 channels):
    seen = []
    original = build.build_model

    def recording_model(config):
        model = original(config)
        model.trunk.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
        return model

    monkeypatch.setattr(build, "build_model", recording_model)
    config = tiny_config(f"size_{trunk}", f"model.trunk={trunk}", "transform.resize=72",
                         "transform.crop=64", "training.folds=[0]", "training.max_epochs=1",
                         "training.iterations_per_epoch=1", "sdm.enabled=true")
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(config).run()
    trained = len(seen)
    assert trained > 0
    with pytest.warns(UserWarning, match="partial"):
        code = main(["evaluate", str(ExperimentFolder.of(config).path / C.CONFIG_FILE),
                     "--retrieval-picture"])
    assert code == 0
    assert len(seen) > trained
    assert {tuple(shape[1:]) for shape in seen} == {(channels, 64, 64)}
    assert (ExperimentFolder.of(config).path / C.RESULTS_FOLDER / "retrieval.png").is_file()
    with pytest.warns(UserWarning, match="partial"):
        dataset, splits = build.load_experiment_dataset(config)
    train, val = build.fold_datasets(config, dataset, splits, 0)
    test = build.test_dataset(config, dataset, splits)
    for part in (train, val, test):
        assert part[0][0].shape == (channels, 64, 64)


def test_the_resized_cache_follows_transform_resize(tiny_config, cub_root):
    assert main(["data", "cache", "cub200", "--dataset-root", str(cub_root), "--size", "72",
                 "--allow-partial"]) == 0
    for resize, used in ((72, True), (256, False)):
        config = tiny_config("cache", "dataset.use_cache=true", f"transform.resize={resize}",
                             "transform.crop=64")
        with pytest.warns(UserWarning, match="partial"):
            dataset, _ = build.load_experiment_dataset(config)
        assert dataset.uses_cache is used
        if used:
            assert min(dataset.load_image(0).size) == 72
    assert torch.is_tensor(build.image_transform(config, train=False)(dataset.load_image(0)))
