"""Trunks from timm (``model.trunk=timm/<name>``), random-initialised small models at small
inputs: the named stages compose timm's own forward; the prefix run once for SDM's T passes
gives the passes of the whole trunk (values and gradients, as in test_perturb_at.py); a few
iterations through the real engine, then evaluation, ``sdm embed`` and ONNX export; strict
loading of state-dict files; the errors of missing weights, unknown models and points.
No test downloads anything: timm's caches are pointed at empty folders where it matters.
"""

import argparse
import copy
import json

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from sdm.config import ConfigError, load_config  # noqa: E402
from sdm.constants import CUB_IMAGES  # noqa: E402
from sdm.data.transforms import build_transform  # noqa: E402
from sdm.engine import build  # noqa: E402
from sdm.engine.distributed import DistributedContext, GlobalBatchFeatureDropout  # noqa: E402
from sdm.engine.experiment import ExperimentFolder  # noqa: E402
from sdm.errors import UserInputError  # noqa: E402
from sdm.inference import embed, load_model  # noqa: E402
from sdm.inference.commands import register  # noqa: E402
from sdm.inference.export import PARITY_TOLERANCE, export_model  # noqa: E402
from sdm.models.stages import FeatureDropout, is_staged  # noqa: E402
from sdm.models.trunks import (  # noqa: E402
    build_trunk,
    default_image_size,
    input_convention,
    perturbation_point_names,
    perturbation_points,
)
from training_helpers import (  # noqa: E402
    assert_prefix_once_equals_whole_trunk,
    random_batchnorm_model,
)

SIDE = 32  # input side of every model here; the ViT is built for it (img_size=32: 2x2 patches)
RESNET, CONVNEXT, VIT = "timm/resnet18", "timm/convnext_atto", "timm/vit_tiny_patch16_224"
EFFICIENTNET, GENERIC = "timm/efficientnet_b0", "timm/mobilenetv3_small_050"
POINTS = [(name, point) for name in (RESNET, CONVNEXT, VIT)
          for point in perturbation_point_names(name)]
POINTS += [(EFFICIENTNET, point) for point in ("stem", "blocks.0", "blocks.6", "head", "pooled")]
POINTS += [(GENERIC, point) for point in ("features", "pooled")]
PASSES = 3


# ----- stages ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [RESNET, CONVNEXT, VIT, EFFICIENTNET, GENERIC])
def test_every_split_composes_timms_own_forward(name):
    model = random_batchnorm_model(name, "pooled", image_size=SIDE).eval()
    images = torch.randn(2, 3, SIDE, SIDE, dtype=torch.float64)
    with torch.no_grad():
        reference = model.trunk.model(images)  # timm: forward_features, forward_head
        assert reference.shape == (2, build_trunk(name, pretrained=False,
                                                  image_size=SIDE).output_dim)
        for point in perturbation_point_names(name):
            model.trunk.perturb_at = point
            assert torch.equal(model.trunk.suffix(model.trunk.prefix(images)), reference), point


@pytest.mark.parametrize(("trunk_name", "point"), POINTS)
def test_prefix_run_once_gives_the_passes_of_the_whole_trunk(trunk_name, point):
    # a ViT at 32 px has 4 patch tokens an image: a higher rate so that every pass drops some
    model = random_batchnorm_model(trunk_name, point, rate=0.5 if trunk_name == VIT else 0.2,
                                   image_size=SIDE)
    assert is_staged(model.trunk)
    images = torch.randn(2, 3, SIDE, SIDE, dtype=torch.float64)
    assert_prefix_once_equals_whole_trunk(model, images, PASSES)


def test_points_and_shapes():
    resnet = dict(perturbation_points(RESNET, 64))
    assert list(resnet) == ["stem", "layer1", "layer2", "layer3", "layer4", "pooled"]
    assert resnet["stem"] == (64, 32, 32) and resnet["layer4"] == (512, 2, 2)
    assert resnet["pooled"] == (512,)
    convnext = dict(perturbation_points(CONVNEXT, 64))
    assert list(convnext) == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "pooled"]
    assert convnext["stem"] == (40, 16, 16) and convnext["pooled"] == (320,)
    vit = dict(perturbation_points(VIT, 64))  # 4x4 patches and the class token
    # pooled from the class token: the last block (blocks.11) runs in pooled
    assert list(vit) == ["stem", *(f"blocks.{i}" for i in range(11)), "pooled"]
    assert vit["stem"] == (17, 192) and vit["blocks.10"] == (17, 192) and vit["pooled"] == (192,)
    average = build_trunk("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False,
                          image_size=SIDE).module
    average.model.global_pool = "avg"  # pooled from the patch tokens: every block is a point
    assert average.points()[-2:] == ["blocks.11", "pooled"]
    assert dict(perturbation_points(VIT))["stem"] == (197, 192)  # the model's own 224 px
    efficientnet = perturbation_point_names(EFFICIENTNET)
    assert efficientnet == ("stem", *(f"blocks.{i}" for i in range(7)), "head", "pooled")
    assert perturbation_point_names(GENERIC) == ("features", "pooled")


def test_token_dropout_zeroes_whole_patch_tokens_and_keeps_the_class_token():
    model = random_batchnorm_model(VIT, "blocks.5", rate=0.5, image_size=SIDE)
    trunk = model.trunk
    tokens = torch.randn(6, 5, 192, dtype=torch.float64)
    torch.manual_seed(3)
    out = trunk.perturb(tokens)
    assert torch.equal(out[:, 0], tokens[:, 0])  # the class token is never dropped
    patches, kept = out[:, 1:], tokens[:, 1:]
    dropped = (patches == 0).all(dim=2)
    assert 0 < dropped.double().mean() < 1
    assert torch.equal(patches[~dropped], 2 * kept[~dropped])  # survivors scaled by 1/(1-p)
    assert torch.equal(trunk.eval().perturb(tokens), tokens)


def test_token_dropout_of_ranks_together_is_that_of_one_process():
    x = torch.randn(2, 2, 3, 5, 4)  # (pass, rank, image, token, channel)
    torch.manual_seed(4)
    one_process = FeatureDropout(0.4).train()(x.reshape(12, 5, 4)).view_as(x)
    dropped = (one_process == 0).all(dim=-1)
    assert dropped.any() and not dropped.all()
    for rank in (0, 1):
        context = DistributedContext(rank=rank, world_size=2, local_rank=rank)
        torch.manual_seed(4)
        mine = GlobalBatchFeatureDropout(0.4, 3, context).train()(x[:, rank].reshape(6, 5, 4))
        assert torch.equal(mine.view(2, 3, 5, 4), one_process[:, rank])


def test_batchnorm_is_frozen_and_the_input_convention_is_the_models():
    model = random_batchnorm_model(EFFICIENTNET, "stem", image_size=SIDE)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and model.trunk.feature_dropout.training
    assert default_image_size(VIT) == (248, 224)  # crop_pct 0.9
    assert default_image_size(RESNET) == (235, 224)  # crop_pct 0.95
    transform = build_transform(input_convention(VIT), False, 40, SIDE)
    normalize = transform.transforms[-1]
    assert tuple(normalize.mean) == (0.5, 0.5, 0.5) and tuple(normalize.std) == (0.5, 0.5, 0.5)
    assert "bicubic" in repr(transform.transforms[1])
    config = load_config(overrides=[f"model.trunk={VIT}"])
    assert (config.transform.resize, config.transform.crop) == (248, 224)
    assert config.model.allow_download is False


# ----- the engine, embeddings and export ---------------------------------------------------


def sdm_command(*argv) -> int:
    parser = argparse.ArgumentParser(prog="sdm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


TRAINED = [(RESNET, "layer4"), (CONVNEXT, "stem"), (VIT, "blocks.10")]


@pytest.fixture(scope="module")
def trained(cub_root, tiny_overrides, tmp_path_factory):
    """``trained(name, point)``: the folder of a 2-iteration experiment with ``model.trunk=name``
    and SDM's dropout at ``point`` (trained once per module)."""
    folders = {}

    def train(name: str, point: str) -> ExperimentFolder:
        if name not in folders:
            config = load_config(overrides=tiny_overrides(
                cub_root, tmp_path_factory.mktemp("experiments"), name.split("/")[1],
                f"model.trunk={name}", "transform.resize=40", f"transform.crop={SIDE}",
                "training.folds=[0]", "training.max_epochs=1",
                "training.iterations_per_epoch=2", "sdm.enabled=true",
                f"sdm.perturb_at={point}", "evaluation.pretrained=false"))
            folders[name] = ExperimentFolder.of(config)
            with pytest.warns(UserWarning, match="partial"):
                folders[name].run()
        return folders[name]

    return train


@pytest.mark.parametrize(("name", "point"), TRAINED)
def test_train_with_sdm_evaluate_and_embed(trained, cub_root, tmp_path, name, point):
    experiment = trained(name, point)
    results = experiment.evaluate()
    assert results.trained.dims["separated"] == 16
    out = tmp_path / "gallery"
    assert sdm_command("embed", experiment.path, cub_root / CUB_IMAGES, "--out", out,
                       "--fold", 0) == 0
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    model, _ = load_model(experiment.path, 0, device="cpu")
    assert model.input_shape == (3, SIDE, SIDE)
    images = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        assert np.allclose(embed(model, images), model(images).numpy(), atol=1e-6)


@pytest.mark.parametrize(("name", "point"), TRAINED)
def test_onnx_export_gives_the_models_embeddings(trained, tmp_path, name, point):
    model, _ = load_model(trained(name, point).path, 0, device="cpu")
    path = tmp_path / "model.onnx"
    description = export_model(model, path, "onnx")  # checked on batches of 1 and 3 images
    assert description["parity_max_abs_difference"] <= PARITY_TOLERANCE
    assert description["input"]["shape"] == ["batch", 3, SIDE, SIDE]
    assert json.loads(path.with_name("model.onnx.json").read_text()) == description


# ----- weights -----------------------------------------------------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """timm's caches (the Hugging Face hub cache, the torch hub cache) as empty folders."""
    from huggingface_hub import constants

    hub, torch_hub = tmp_path / "hf", tmp_path / "torch_hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(torch_hub))
    monkeypatch.setattr("timm.models.load_pretrained", _no_download)
    return hub, torch_hub


def _no_download(*args, **kwargs):
    raise AssertionError("a test must not download weights")


def _save(state, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


SUFFIXES = [".pth", pytest.param(".safetensors", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("safetensors") is None, reason="no safetensors"))]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_state_dict_on_disk_loads_strictly(tmp_path, empty_caches, suffix):
    torch.manual_seed(5)
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # with fc
    path = tmp_path / f"resnet18{suffix}"
    _save(source.state_dict(), path)
    trunk = build_trunk(RESNET, weights_path=str(path), image_size=SIDE).module
    for key, value in trunk.model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    images = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        assert torch.allclose(trunk.eval()(images), source.eval().forward_head(
            source.forward_features(images), pre_logits=True))
    own = tmp_path / f"trunk{suffix}"  # this trunk's own keys ("model.") load too
    _save(trunk.state_dict(), own)
    again = build_trunk(RESNET, weights_path=str(own), image_size=SIDE).module
    assert torch.equal(again.model.conv1.weight, source.conv1.weight)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", [RESNET, CONVNEXT])
def test_a_state_dict_that_does_not_fit_is_one_line_listing_the_keys(tmp_path, empty_caches,
                                                                       suffix, name):
    state = timm.create_model(name.split("/")[1], pretrained=False, num_classes=0).state_dict()
    first = next(k for k in state if k.endswith(".weight"))
    del state[first]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / f"bad{suffix}"
    _save(state, path)
    with pytest.raises(UserInputError) as error:
        build_trunk(name, weights_path=str(path), image_size=SIDE)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "strict" in message
    assert f"missing keys (1): {first}" in message
    assert "unexpected keys (1): extra.weight" in message


def test_a_vit_state_dict_of_another_input_size_loads_resampled(tmp_path, empty_caches):
    torch.manual_seed(6)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)  # 14x14 position embedding, loaded at 2x2
    trunk = build_trunk(VIT, weights_path=str(path), image_size=SIDE).module
    assert trunk.model.pos_embed.shape == (1, 5, 192)
    assert torch.equal(trunk.model.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)


def test_a_file_that_is_no_state_dict_is_a_clear_error(tmp_path, empty_caches):
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(UserInputError, match="holds a list, not a state dict"):
        build_trunk(RESNET, weights_path=str(path))
    with pytest.raises(FileNotFoundError, match="model.weights_path=.*missing.pth is not a file"):
        build_trunk(RESNET, weights_path=str(tmp_path / "missing.pth"))


def test_no_weights_anywhere_says_where_it_looked_and_how_to_get_them(empty_caches):
    hub, torch_hub = empty_caches
    with pytest.raises(FileNotFoundError) as error:
        build_trunk(RESNET, image_size=SIDE)
    message = str(error.value)
    assert "\n" not in message
    assert str(hub / "models--timm--resnet18.a1_in1k" / "snapshots") in message
    assert str(torch_hub / "checkpoints" / "resnet18_a1_0-d63eafa0.pth") in message
    for hint in ("model.allow_download=true", "model.weights_path",
                 "timm.create_model('resnet18', pretrained=True)", "model.pretrained=false"):
        assert hint in message


def test_timms_cache_is_used_without_network_and_downloads_only_when_allowed(
        tmp_path, empty_caches, monkeypatch):
    hub, torch_hub = empty_caches
    calls = []
    monkeypatch.setattr("timm.models.load_pretrained",
                        lambda model, **kwargs: calls.append(kwargs))
    build_trunk(CONVNEXT, allow_download=True, image_size=SIDE)  # nothing cached: timm fetches
    assert calls and calls[0]["num_classes"] == 0 and calls[0]["strict"] is True
    torch.manual_seed(7)
    source = timm.create_model("convnext_atto", pretrained=False)  # with its classifier
    snapshot = hub / "models--timm--convnext_atto.d2_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    torch.save(source.state_dict(), snapshot / "pytorch_model.bin")
    trunk = build_trunk(CONVNEXT, image_size=SIDE).module  # cached: loaded, no download
    assert torch.equal(trunk.model.stem[0].weight, source.stem[0].weight)
    assert len(calls) == 1
    url_file = torch_hub / "checkpoints" / "resnet18_a1_0-d63eafa0.pth"  # timm's url cache
    url_file.parent.mkdir(parents=True)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), url_file)
    build_trunk(RESNET, image_size=SIDE)
    assert len(calls) == 1


# ----- names, points and the command line ----------------------------------------------------


def test_list_points_of_a_timm_model(capsys):
    from sdm.cli import main

    assert main(["list-points", RESNET, "--side", "64"]) == 0
    rows = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["stem", "64 x 32 x 32"] and rows[-2] == ["layer4", "512 x 2 x 2"]
    assert rows[-1] == ["pooled", "512"]
    assert main(["list-points", "timm/resnet18x"]) == 2
    assert "timm has no model 'resnet18x'; did you mean timm/resnet18" in capsys.readouterr().err


def test_unknown_models_tags_and_points_are_config_errors():
    with pytest.raises(ConfigError, match="timm has no model 'convnext_atoo'; did you mean "
                                          "timm/convnext_atto"):
        load_config(overrides=["model.trunk=timm/convnext_atoo"])
    with pytest.raises(ConfigError, match="has no pretrained tag 'nope'; its tags: .*dino"):
        load_config(overrides=["model.trunk=timm/vit_small_patch16_224.nope"])
    with pytest.raises(ConfigError, match="sdm.perturb_at 'layer3' is not a point of trunk "
                                          f"{CONVNEXT}; its points, first to last: stem, "
                                          "stages.0"):
        load_config(overrides=[f"model.trunk={CONVNEXT}", "sdm.perturb_at=layer3"])
    with pytest.raises(ConfigError, match="or timm/<model name>"):
        load_config(overrides=["model.trunk=vgg16"])


def test_a_model_of_no_known_family_perturbs_its_features_or_pooled_vector():
    config = load_config(overrides=[f"model.trunk={GENERIC}", "model.pretrained=false"])
    assert build.build_model(copy.deepcopy(config)).trunk.perturb_at == "pooled"  # SDM off
    with pytest.raises(ConfigError, match="points, first to last: features, pooled"):
        load_config(overrides=[f"model.trunk={GENERIC}", "sdm.enabled=true"])
    load_config(overrides=[f"model.trunk={GENERIC}", "sdm.enabled=true",
                           "sdm.perturb_at=features"])
