"""sdm export: ONNX (onnxruntime) and TorchScript files against the PyTorch model, on real
test images, for the small CNN (one fold and the concatenation) and EfficientNet-Lite0."""

import argparse
import json

import numpy as np
import onnx
import pytest
import torch

from sdm.config import load_config
from sdm.engine import build
from sdm.engine.experiment import ExperimentFolder
from sdm.inference import load_model
from sdm.inference.commands import register
from sdm.inference.export import (
    PARITY_TOLERANCE,
    description_path,
    export_model,
    parity_difference,
    run_exported,
)

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


def sdm(*argv) -> int:
    parser = argparse.ArgumentParser(prog="sdm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def train(cub_root, tiny_overrides, root, name, *extra):
    config = load_config(overrides=tiny_overrides(cub_root, root, name, *extra))
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(config).run()
    return ExperimentFolder.of(config).path, config


@pytest.fixture(scope="module")
def small_cnn(cub_root, tiny_overrides, tmp_path_factory):
    return train(cub_root, tiny_overrides, tmp_path_factory.mktemp("experiments"), "small",
                 "transform.resize=40", "transform.crop=32")


@pytest.fixture(scope="module")
def efficientnet(cub_root, tiny_overrides, tmp_path_factory):
    return train(cub_root, tiny_overrides, tmp_path_factory.mktemp("experiments"), "lite0",
                 "model.trunk=efficientnet_lite0", "model.pretrained=false",
                 "transform.resize=72", "transform.crop=64", "training.folds=[0]",
                 "training.max_epochs=1", "training.iterations_per_epoch=1")


def eval_images(config, count: int) -> torch.Tensor:
    """The first ``count`` test images through the experiment's eval transform."""
    with pytest.warns(UserWarning, match="partial"):
        dataset, splits = build.load_experiment_dataset(config)
    test_set = build.test_dataset(config, dataset, splits)
    return torch.stack([test_set[i][0] for i in range(count)])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("which", ["small_cnn", "concatenated", "efficientnet"])
def test_the_exported_file_gives_the_models_embeddings_at_any_batch_size(
        request, tmp_path, capsys, fmt, which):
    folder, config = request.getfixturevalue("efficientnet" if which == "efficientnet"
                                             else "small_cnn")
    options = ["--concatenated"] if which == "concatenated" else ["--fold", "0"]
    path = tmp_path / f"model{SUFFIX[fmt]}"
    assert sdm("export", folder, "--format", fmt, "--out", path, *options) == 0
    assert f"written to {path}" in capsys.readouterr().out
    model, _ = load_model(folder, 0 if which != "concatenated" else None,
                          concatenated=which == "concatenated", device="cpu")
    images = eval_images(config, 6)
    for batch in (images[:1], images):
        assert parity_difference(model, path, fmt, batch) <= PARITY_TOLERANCE
    embeddings = run_exported(path, images, fmt)
    assert embeddings.shape == (6, model.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    description = json.loads(description_path(path).read_text())
    assert description["input"]["shape"] == ["batch", *model.input_shape]
    assert description["output"]["shape"] == ["batch", model.embedding_dim]
    assert description["model"] == model.identity
    if fmt == "onnx":
        graph = onnx.load(str(path)).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis


def test_efficientnet_input_is_the_experiments_crop(efficientnet):
    folder, _ = efficientnet
    model, _ = load_model(folder, device="cpu")
    assert model.input_shape == (3, 64, 64)


def test_a_file_that_differs_from_the_model_is_not_written(small_cnn, tmp_path, monkeypatch):
    folder, _ = small_cnn
    model, _ = load_model(folder, device="cpu")
    monkeypatch.setattr("sdm.inference.export.run_exported",
                        lambda path, images, fmt: np.zeros((len(images), 16), np.float32))
    path = tmp_path / "model.pt"
    with pytest.raises(ValueError, match="differs from the PyTorch model by"):
        export_model(model, path, "torchscript")
    assert not path.exists() and not description_path(path).exists()
