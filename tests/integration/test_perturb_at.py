"""Where SDM's trunk perturbation enters (``sdm.perturb_at``) and the prefix run once.

Every trunk is an ordered list of stages; the feature dropout sits after one of them. For
every trunk and every point: the split composes the same function; running the prefix once
for T passes gives the embeddings of running the whole trunk T times with the same masks
(bit for bit when the passes run one after another, where both paths run the same kernels on
the same shapes; in float64 to 1e-12 when batched, where the prefix sees B instead of T*B
images); parameter gradients differ only by the order of the prefix's sums.
"""

import copy

import pytest
import torch

from sdm.engine.build import build_fold_loss, build_model, build_optimizers
from sdm.engine.distributed import DistributedContext, GlobalBatchFeatureDropout
from sdm.engine.step import train_step
from sdm.models.batchnorm import train_with_frozen_batchnorm
from sdm.models.stages import FeatureDropout, is_staged
from sdm.models.trunks import build_trunk, perturbation_points
from training_helpers import (
    assert_prefix_once_equals_whole_trunk,
    largest_difference,
    random_batchnorm_model,
)

# Input shapes small enough for a quick test; 35 px is a side BN-Inception accepts.
TRUNK_INPUTS = {"small_cnn": (2, 1, 32, 32), "efficientnet_lite0": (2, 3, 32, 32),
                "resnet50": (2, 3, 32, 32), "bninception": (2, 3, 35, 35)}
POINTS = [(name, point) for name in sorted(TRUNK_INPUTS)
          for point, _ in perturbation_points(name)]
PASSES = 3


@pytest.mark.parametrize("trunk_name", sorted(TRUNK_INPUTS))
def test_every_split_composes_the_same_trunk(one_thread, trunk_name):
    images = torch.randn(*TRUNK_INPUTS[trunk_name], dtype=torch.float64)
    model = random_batchnorm_model(trunk_name).eval()
    with torch.no_grad():
        reference = model.trunk(images)
        for point, _ in perturbation_points(trunk_name):
            model.trunk.perturb_at = point
            assert torch.equal(model.trunk.suffix(model.trunk.prefix(images)), reference), point


@pytest.mark.parametrize(("trunk_name", "point"), POINTS)
def test_prefix_run_once_gives_the_passes_of_the_whole_trunk(one_thread, trunk_name, point):
    model = random_batchnorm_model(trunk_name, point)
    assert is_staged(model.trunk)
    images = torch.randn(*TRUNK_INPUTS[trunk_name], dtype=torch.float64)
    assert_prefix_once_equals_whole_trunk(model, images, PASSES)


def test_the_point_decides_which_layers_see_the_masks(one_thread):
    """With the dropout at ``pooled`` the passes differ only after the trunk's last map: the
    pooled features of all passes are those of the unperturbed trunk, masked elementwise."""
    model = random_batchnorm_model("small_cnn", "pooled", rate=0.5)
    images = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    seen = []
    model.embedder.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    with torch.no_grad():
        model.perturbed_passes(images, PASSES, batched=False)
        clean = model.trunk.prefix(images)
    for features in seen:
        kept = features != 0
        assert 0 < kept.double().mean() < 1
        assert torch.equal(features[kept], 2 * clean[kept])


def test_feature_dropout_drops_channels_of_maps_and_entries_of_vectors():
    dropout = FeatureDropout(0.5).train()
    torch.manual_seed(2)
    maps = dropout(torch.ones(4, 6, 3, 3))
    per_channel = maps.amax(dim=(2, 3))
    assert torch.equal(maps, per_channel[:, :, None, None].expand_as(maps))
    assert set(maps.unique().tolist()) == {0.0, 2.0}
    vectors = dropout(torch.ones(4, 50))
    assert set(vectors.unique().tolist()) == {0.0, 2.0}
    assert 0 < (vectors == 0).double().mean() < 1
    assert torch.equal(dropout.eval()(vectors), vectors)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FeatureDropout(1.0)


@pytest.mark.parametrize("shape", [(6, 5, 2, 2), (6, 5)], ids=["maps", "vectors"])
def test_ranks_together_draw_the_masks_of_one_process(shape):
    """Two blocks (T=2 passes batched) of a per-rank batch of 3 on 2 ranks: each rank's
    slices of each block equal one process's dropout of the whole global batch."""
    x = torch.randn(2, 2, 3, *shape[1:])  # (pass, rank, image, ...)
    torch.manual_seed(4)
    one_process = FeatureDropout(0.4).train()(x.reshape(12, *shape[1:])).view_as(x)
    for rank in (0, 1):
        context = DistributedContext(rank=rank, world_size=2, local_rank=rank)
        torch.manual_seed(4)
        mine = GlobalBatchFeatureDropout(0.4, 3, context).train()(
            x[:, rank].reshape(6, *shape[1:]))
        assert torch.equal(mine.view(2, 3, *shape[1:]), one_process[:, rank])


def test_points_and_shapes_at_the_usual_input_sizes():
    """Shapes derived by hand from each architecture's strides and widths."""
    points = dict(perturbation_points("efficientnet_lite0", 64))
    assert list(points)[0] == "stem" and list(points)[-1] == "pooled"
    assert points["stem"] == (32, 32, 32) and points["stage3"] == (40, 8, 8)
    assert points["head"] == (1280, 2, 2) and points["pooled"] == (1280,)
    assert len(points) == 10
    resnet = dict(perturbation_points("resnet50", 224))
    assert list(resnet) == ["stem", "layer1", "layer2", "layer3", "layer4", "pooled"]
    assert resnet["layer1"] == (256, 56, 56) and resnet["layer4"] == (2048, 7, 7)
    inception = dict(perturbation_points("bninception"))
    assert inception["stem"] == (64, 114, 114) and inception["inception_5b"] == (1024, 7, 7)
    assert dict(perturbation_points("small_cnn"))["block5"] == (256, 1, 1)


def test_an_unknown_point_names_the_trunks_points():
    with pytest.raises(ValueError, match="stem, block1, .*, pooled"):
        build_trunk("small_cnn", perturb_at="stage3")


@pytest.mark.parametrize("point", ["stem", "block3", "pooled"])
def test_training_step_with_the_prefix_run_once_matches(one_thread, tiny_config, point):
    """The engine's step (float32 loss on float64 embeddings): the same loss and gradients
    either way (parameters are not compared: RMSprop moves an entry by about ten learning
    rates in the direction of its gradient's sign, which rounding decides for tiny entries)."""
    config = tiny_config("prefix", "sdm.enabled=true", "sdm.feature_dropout=0.2",
                         f"sdm.perturb_at={point}")
    model = build_model(config).double()
    assert model.trunk.perturb_at == point
    train_with_frozen_batchnorm(model)
    images = torch.randn(8, 1, 32, 32, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(2)
    results = {}
    for shared in (True, False):
        copy_ = copy.deepcopy(model)
        loss = build_fold_loss(config, 4)
        optimizers = build_optimizers(config, copy_, loss)
        torch.manual_seed(5)
        value = train_step(copy_, loss, optimizers, images, labels, passes=4,
                           shared_stem=shared)
        results[shared] = value, {name: p.grad for name, p in copy_.named_parameters()}
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    for name, expected in results[False][1].items():
        assert largest_difference(results[True][1][name], expected) <= 1e-5, name


def test_list_points_and_an_unknown_point_from_the_command_line(tmp_path):
    import subprocess
    import sys

    def sdm(*args):
        return subprocess.run([sys.executable, "-m", "sdm", *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    listed = sdm("list-points", "resnet50", "--side", "224")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split(None, 1) for line in listed.stdout.splitlines()]
    assert rows[0] == ["stem", "64 x 112 x 112"] and rows[-2] == ["layer4", "2048 x 7 x 7"]
    assert rows[-1] == ["pooled", "2048"]
    unknown = sdm("list-points", "vgg16")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "unknown trunk 'vgg16'" in unknown.stderr
    bad = sdm("train", "cub_ms", "sdm.perturb_at=layer3", f"dataset.root={tmp_path}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert ("sdm.perturb_at 'layer3' is not a point of trunk bninception; its points, first "
            "to last: stem, conv2, inception_3a") in bad.stderr
