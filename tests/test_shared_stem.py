"""The trunk's stem (everything before the feature dropout) run once for SDM's T passes.

The masks drawn and the embeddings must be those of running every pass through the whole
trunk, bit for bit; parameter gradients may differ only by float rounding (the stem's weight
gradient is summed in another order).
"""

import copy

import pytest
import torch

from sdm.engine.build import build_fold_loss, build_model, build_optimizers
from sdm.engine.step import train_step
from sdm.models.batchnorm import train_with_frozen_batchnorm
from sdm.models.embedding_model import EmbeddingModel, splits_at_stem
from sdm.models.trunks import build_trunk

# Input shapes small enough for a quick test; 35 px is a side BN-Inception accepts.
TRUNK_INPUTS = {"small_cnn": (3, 1, 32, 32), "efficientnet_lite0": (3, 3, 32, 32),
                "resnet50": (3, 3, 32, 32), "bninception": (3, 3, 35, 35)}


def _model(trunk_name: str) -> EmbeddingModel:
    torch.manual_seed(0)
    trunk = build_trunk(trunk_name, pretrained=False, feature_dropout=0.2)
    # BatchNorm in training mode: randomly initialized trunks with frozen running statistics
    # give near-constant outputs. It normalizes after the feature dropout, on the same
    # tensor in both paths.
    return EmbeddingModel(trunk.module, torch.nn.Linear(trunk.output_dim, 8)).train()


def _passes_and_gradients(model, images, batched, shared_stem):
    torch.manual_seed(1)
    model.zero_grad()
    embeddings = model.perturbed_passes(images, 4, batched, shared_stem)
    embeddings.square().sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    return embeddings.detach(), gradients


@pytest.mark.parametrize("trunk_name", sorted(TRUNK_INPUTS))
def test_stem_then_rest_is_the_trunk(one_thread, trunk_name):
    model = _model(trunk_name).eval()
    images = torch.randn(*TRUNK_INPUTS[trunk_name])
    assert splits_at_stem(model.trunk)
    with torch.no_grad():
        assert torch.equal(model.trunk.from_stem(model.trunk.stem(images)), model.trunk(images))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "sequential"])
@pytest.mark.parametrize("trunk_name", sorted(TRUNK_INPUTS))
def test_shared_stem_gives_the_same_passes(one_thread, trunk_name, batched):
    model = _model(trunk_name)
    images = torch.randn(*TRUNK_INPUTS[trunk_name])
    shared, shared_gradients = _passes_and_gradients(model, images, batched, True)
    full, full_gradients = _passes_and_gradients(model, images, batched, False)
    assert shared.shape == (4, 3, 8)
    assert not torch.equal(shared[0], shared[1]), "feature dropout must perturb each pass"
    assert torch.equal(shared, full)
    for name, expected in full_gradients.items():
        scale = float(expected.abs().max()) or 1.0
        assert float((shared_gradients[name] - expected).abs().max()) <= 1e-5 * scale, name


def test_a_trunk_without_a_stem_runs_whole(one_thread):
    trunk = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6), torch.nn.Dropout(0.5))
    model = EmbeddingModel(trunk, torch.nn.Linear(6, 4)).train()
    images = torch.randn(5, 3, 2, 2)
    assert not splits_at_stem(trunk)
    torch.manual_seed(3)
    shared = model.perturbed_passes(images, 3, batched=True, shared_stem=True)
    torch.manual_seed(3)
    whole = model.perturbed_passes(images, 3, batched=True, shared_stem=False)
    assert torch.equal(shared, whole)


def test_training_step_with_shared_stem_matches(one_thread, tiny_config):
    config = tiny_config("stem", "sdm.enabled=true", "sdm.feature_dropout=0.2")
    model = build_model(config)
    train_with_frozen_batchnorm(model)
    images, labels = torch.randn(8, 1, 32, 32), torch.arange(4).repeat_interleave(2)
    results = {}
    for shared_stem in (True, False):
        copy_ = copy.deepcopy(model)
        loss = build_fold_loss(config, 4)
        optimizers = build_optimizers(config, copy_, loss)
        torch.manual_seed(5)
        value = train_step(copy_, loss, optimizers, images, labels, passes=4,
                           shared_stem=shared_stem)
        results[shared_stem] = value, torch.cat([p.detach().flatten()
                                                 for p in copy_.parameters()])
    assert results[True][0] == results[False][0]
    assert torch.allclose(results[True][1], results[False][1], rtol=1e-5, atol=1e-7)
