"""The training engine end to end on the tiny CUB fixture with the small CNN."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures import TIE_MARGIN, ranking_margin
from sdm import constants as C
from sdm import storage
from sdm.config import load_config
from sdm.data.datasets import DatasetError
from sdm.engine import build
from sdm.engine import evaluate as ev
from sdm.engine.build import build_model, load_experiment_dataset
from sdm.engine.embeddings import concatenated_embeddings, evaluation_embeddings
from sdm.engine.experiment import ExperimentFolder
from sdm.engine.fold import FoldTrainer
from sdm.metrics import retrieval_metrics
from sdm.scores import read_results
from training_helpers import interrupted_at_epoch

LOSS_PARAMS = {
    "contrastive": "{pos_margin: 0.0, neg_margin: 0.5}",
    "triplet": "{margin: 0.1}",
    "margin": "{margin: 0.2, init_beta: 1.0}",
    "multi_similarity": "{alpha: 2.0, beta: 40.0, base: 0.5}",
}


@pytest.fixture
def load(tiny_config):
    """The tiny CUB fixture and its splits (loaded partially: it is not the full CUB)."""

    def dataset_and_splits():
        with pytest.warns(UserWarning):
            return load_experiment_dataset(tiny_config("x"))

    return dataset_and_splits


@pytest.mark.parametrize("sdm", [False, True])
@pytest.mark.parametrize("loss", sorted(LOSS_PARAMS))
def test_short_experiment_trains_and_evaluates(tiny_config, load, tmp_path, loss, sdm):
    config = tiny_config(f"{loss}_{sdm}", f"loss.name={loss}",
                         f"loss.params={LOSS_PARAMS[loss]}", f"sdm.enabled={sdm}")
    experiment = ExperimentFolder.of(config)
    with pytest.warns(UserWarning, match="partial"):
        summaries = experiment.run()
    assert [s["fold"] for s in summaries] == [0, 1]
    folder = tmp_path / config.name
    for fold in (0, 1):
        rows = storage.read_csv(folder / f"fold_{fold}" / C.METRICS_CSV)
        assert [int(r["epoch"]) for r in rows] == [-1, 0, 1, 2]
        assert all(0 <= float(r[C.MAP_AT_R]) <= 1 for r in rows)
        best = max(rows[1:], key=lambda r: float(r[C.MAP_AT_R]))
        assert summaries[fold]["best_epoch"] == int(best["epoch"])
    results = experiment.evaluate()
    assert read_results(folder / C.RESULTS_FOLDER) == results
    separated = results.trained.separated
    for metric in C.METRIC_NAMES:
        per_model = [s[metric] for s in separated.per_model]
        assert separated.mean[metric] == pytest.approx(np.mean(per_model))
        assert separated.std[metric] == pytest.approx(np.std(per_model))
    assert results.trained.dims == {"separated": 16, "concatenated": 32}
    table = (folder / "results" / "test_results.md").read_text()
    assert "Pretrained" in table and config.name in table


def test_rerun_skips_finished_folds(tiny_config):
    config = tiny_config("skip", "training.folds=[0]")
    with pytest.warns(UserWarning):
        first = ExperimentFolder.of(config).run()
    with pytest.warns(UserWarning):
        second = ExperimentFolder.of(config).run()
    assert first == second


def test_interrupted_fold_resumes_to_identical_numbers(tiny_config, load, tmp_path):
    dataset, splits = load()
    extra = ("training.max_epochs=3", "sdm.enabled=true", "loss.name=margin")
    config = tiny_config("straight", *extra)
    FoldTrainer(config, 0, tmp_path / "straight" / "fold_0", dataset, splits).run()

    config = tiny_config("interrupted", *extra)
    with interrupted_at_epoch(2), pytest.raises(KeyboardInterrupt):
        FoldTrainer(config, 0, tmp_path / "interrupted" / "fold_0", dataset, splits).run()
    FoldTrainer(config, 0, tmp_path / "interrupted" / "fold_0", dataset, splits).run()

    straight = storage.read_csv(tmp_path / "straight" / "fold_0" / C.METRICS_CSV)
    resumed = storage.read_csv(tmp_path / "interrupted" / "fold_0" / C.METRICS_CSV)
    assert resumed == straight
    a = storage.load_checkpoint(tmp_path / "straight" / "fold_0" / C.LATEST_CHECKPOINT)
    b = storage.load_checkpoint(tmp_path / "interrupted" / "fold_0" / C.LATEST_CHECKPOINT)
    for key in a["embedder"]:
        assert torch.equal(a["embedder"][key], b["embedder"][key])
    assert torch.equal(a["loss"]["base_loss.beta"], b["loss"]["base_loss.beta"])


def test_early_stopping_when_validation_stops_improving(tiny_config, load, tmp_path):
    dataset, splits = load()
    config = tiny_config("stop", "optimizer.trunk_lr=0.0",
                         "optimizer.embedder_lr=0.0", "training.max_epochs=20",
                         "training.patience=2")
    summary = FoldTrainer(config, 0, tmp_path / "stop" / "fold_0", dataset, splits).run()
    assert summary["best_epoch"] == 0
    assert summary["last_epoch"] == 3


def test_changed_config_is_refused_unless_allowed(tiny_config, tmp_path):
    config = tiny_config("change", "training.folds=[0]",
                         "training.max_epochs=1")
    with pytest.warns(UserWarning):
        ExperimentFolder.of(config).run()
    changed = tiny_config("change", "training.folds=[0]",
                          "training.max_epochs=1", "loss.params={neg_margin: 0.7}")
    with pytest.raises(ValueError, match=r"loss.params.neg_margin: None -> 0.7"):
        ExperimentFolder.of(changed).run()
    with pytest.warns(UserWarning):
        ExperimentFolder.of(changed).run(allow_config_change=True)
    log = storage.read_json(tmp_path / "change" / C.CONFIG_CHANGES_FILE)
    assert log[0]["changes"]["loss.params.neg_margin"] == [None, 0.7]


def test_concatenated_evaluation_equals_a_hand_concatenation(tiny_config, load):
    dataset, splits = load()
    config = tiny_config("concat")
    torch.manual_seed(0)
    models = [build_model(config) for _ in range(3)]
    test_set = build.test_dataset(config, dataset, splits)
    result = ev.evaluate_models(models, test_set, config)
    by_hand = []
    for model in models:
        model.eval()
        with torch.no_grad():
            images = torch.stack([test_set[i][0] for i in range(len(test_set))])
            by_hand.append(F.normalize(model(images), dim=1))
    joined = torch.cat(by_hand, dim=1) / np.sqrt(3.0)
    assert torch.allclose(concatenated_embeddings(by_hand), joined, atol=1e-6)
    labels = torch.as_tensor(test_set.labels)
    assert ranking_margin(joined, labels) > TIE_MARGIN, "no rounding may flip the ranking"
    expected = retrieval_metrics(joined, labels)
    for metric in C.METRIC_NAMES:
        assert result.concatenated[metric] == pytest.approx(expected[metric])


def test_batched_passes_equal_sequential_without_feature_dropout(tiny_config):
    config = tiny_config("passes", "sdm.enabled=false")
    model = build_model(config)
    model.train()
    images = torch.randn(4, 1, 32, 32)
    batched = model.perturbed_passes(images, 3, batched=True)
    sequential = model.perturbed_passes(images, 3, batched=False)
    assert batched.shape == (3, 4, 16)
    assert torch.allclose(batched, sequential, atol=1e-5)


def test_batched_passes_match_sequential_in_distribution_with_feature_dropout(tiny_config):
    from sdm.models.batchnorm import train_with_frozen_batchnorm

    config = tiny_config("passes", "sdm.enabled=true",
                         "sdm.feature_dropout=0.3")
    torch.manual_seed(0)
    model = build_model(config)
    train_with_frozen_batchnorm(model)
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        batched = model.perturbed_passes(images, 200, batched=True)
        sequential = model.perturbed_passes(images, 200, batched=False)
        model.eval()
        clean = model(images)
    assert not torch.allclose(batched[0], batched[1])
    spread = float(batched.std(0).mean())
    assert spread > 0.01 * float(clean.abs().mean())
    standard_error = torch.sqrt((batched.var(0) + sequential.var(0)) / 200)
    z_scores = (batched.mean(0) - sequential.mean(0)) / standard_error
    assert float(z_scores.abs().max()) < 5.0
    assert spread == pytest.approx(float(sequential.std(0).mean()), rel=0.2)


def test_missing_dataset_is_a_clear_error(tiny_config, tmp_path):
    config = tiny_config("missing", f"dataset.root={tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="cub2011"):
        ExperimentFolder.of(config).run()
    assert not (tmp_path / "missing").exists()


def test_embeddings_are_unit_length_and_in_dataset_order(tiny_config, load):
    dataset, splits = load()
    config = tiny_config("emb")
    model = build_model(config)
    test_set = build.test_dataset(config, dataset, splits)
    embeddings, labels = evaluation_embeddings(model, test_set, device=torch.device("cpu"),
                                            batch_size=5)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(len(test_set)), atol=1e-5)
    assert labels.tolist() == list(test_set.labels)


def test_released_model_files_evaluate_like_the_models_they_hold(tiny_config, load, tmp_path):
    dataset, splits = load()
    config = tiny_config("released")
    torch.manual_seed(3)
    models = [build_model(config) for _ in range(2)]
    for fold, model in enumerate(models):
        folder = tmp_path / "released" / f"fold_{fold}" / "saved_models"
        folder.mkdir(parents=True)
        torch.save(model.trunk.state_dict(), folder / "trunk_best4.pth")
        torch.save(model.embedder.state_dict(), folder / "embedder_best4.pth")
        torch.save(model.embedder.state_dict(), folder / "embedder_best2.pth")
        torch.save(model.trunk.state_dict(), folder / "trunk_best2.pth")
    pairs = build.find_released_models(tmp_path / "released")
    assert [p[0].name for p in pairs] == ["trunk_best4.pth", "trunk_best4.pth"]
    loaded = [build.load_released_model(config, trunk, embedder) for trunk, embedder in pairs]
    test_set = build.test_dataset(config, dataset, splits)
    assert ev.evaluate_models(loaded, test_set, config) == ev.evaluate_models(
        models, test_set, config)
    with pytest.raises(FileNotFoundError, match="trunk_best<E>.pth"):
        build.find_released_models(tmp_path / "nothing_here")


def brute_force_query_gallery(queries, query_labels, gallery, gallery_labels):
    """P@1, R-Precision and MAP@R of each query ranked against the gallery, one by one."""
    totals = {C.PRECISION_AT_1: 0.0, C.R_PRECISION: 0.0, C.MAP_AT_R: 0.0}
    scored = 0
    for query, label in zip(queries.tolist(), query_labels.tolist(), strict=True):
        distances = [sum((a - b) ** 2 for a, b in zip(query, item, strict=True))
                     for item in gallery.tolist()]
        order = sorted(range(len(distances)), key=lambda i: (distances[i], i))
        hits = [int(gallery_labels[i] == label) for i in order]
        r = sum(hits)
        if r == 0:
            continue
        scored += 1
        totals[C.PRECISION_AT_1] += hits[0]
        totals[C.R_PRECISION] += sum(hits[:r]) / r
        totals[C.MAP_AT_R] += sum(sum(hits[:i + 1]) / (i + 1) * hits[i] for i in range(r)) / r
    return {name: value / scored for name, value in totals.items()}


def test_inshop_test_set_is_evaluated_query_against_gallery(tmp_path, tiny_overrides):
    from fixtures import make_inshop_tree

    root = make_inshop_tree(tmp_path / "data", num_train_items=16, num_test_items=6,
                            per_item=4, size=(60, 40))
    config = load_config(overrides=tiny_overrides(root, tmp_path, "inshop",
                                                  "dataset.name=inshop"))
    with pytest.warns(UserWarning, match="partial"):
        dataset, splits = load_experiment_dataset(config)
    torch.manual_seed(0)
    models = [build_model(config) for _ in range(2)]
    test_set = build.test_dataset(config, dataset, splits)
    result = ev.evaluate_models(models, test_set, config)
    queries = torch.as_tensor(test_set.partition == "query")
    gallery = torch.as_tensor(test_set.partition == "gallery")
    assert int(queries.sum()) == int(gallery.sum()) == 12
    per_model = []
    for model in models:
        embeddings, labels = evaluation_embeddings(model, test_set, device=torch.device("cpu"))
        per_model.append(embeddings)
        assert ranking_margin(embeddings[queries], labels[queries], embeddings[gallery],
                              labels[gallery]) > TIE_MARGIN
        expected = brute_force_query_gallery(embeddings[queries], labels[queries],
                                             embeddings[gallery], labels[gallery])
        got = result.separated.per_model[len(per_model) - 1]
        for metric in C.METRIC_NAMES:
            assert got[metric] == pytest.approx(expected[metric], abs=1e-6)
    joined = concatenated_embeddings(per_model)
    assert ranking_margin(joined[queries], labels[queries], joined[gallery],
                          labels[gallery]) > TIE_MARGIN
    expected = brute_force_query_gallery(joined[queries], labels[queries], joined[gallery],
                                         labels[gallery])
    for metric in C.METRIC_NAMES:
        assert result.concatenated[metric] == pytest.approx(expected[metric], abs=1e-6)


def test_sop_trains_and_evaluates_through_the_engine(tmp_path, tiny_overrides):
    from fixtures import make_sop_tree

    root = make_sop_tree(tmp_path / "data", num_classes=16, per_class=3, size=(60, 40))
    config = load_config(overrides=tiny_overrides(root, tmp_path, "sop", "dataset.name=sop",
                                                  "training.folds=[0]", "training.max_epochs=1"))
    with pytest.warns(UserWarning, match="fewer than training.m_per_class=4 images"):
        [summary] = ExperimentFolder.of(config).run()
    assert summary["last_epoch"] == 1
    with pytest.warns(UserWarning, match="partial"):
        dataset, splits = load_experiment_dataset(config)
    assert splits.test == list(range(9, 17))
    results = ExperimentFolder(tmp_path / "sop", config).evaluate()
    assert results.folds == [0] and results.trained.dims == {"separated": 16, "concatenated": 16}
    test_set = build.test_dataset(config, dataset, splits)
    model = build.load_checkpoint_model(config, tmp_path / "sop" / "fold_0" / C.BEST_CHECKPOINT)
    # In evaluation's batches: other batches may round differently, and the briefly trained
    # model's test embeddings are within float32 rounding of ties (ranking_margin 3e-9).
    embeddings, labels = evaluation_embeddings(model, test_set, device=torch.device("cpu"),
                                            batch_size=config.training.eval_batch_size)
    expected = retrieval_metrics(embeddings, labels)
    for metric in C.METRIC_NAMES:
        assert results.trained.separated.mean[metric] == expected[metric]
