"""Inference on the tiny CUB fixture: sdm embed / index / search, the Python API, bad input.

One small-CNN experiment (2 folds) is trained for the whole module; the key check is that
``sdm embed`` on the test classes scores exactly what ``sdm evaluate`` reported.
"""

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import class_pattern
from sdm import constants as C
from sdm import storage
from sdm.cli import main as sdm_main
from sdm.config import load_config
from sdm.constants import INDEX_FILE, INDEX_INFO_FILE
from sdm.engine import build
from sdm.engine.experiment import (
    ExperimentFolder,
    prepare_experiment_folder,
)
from sdm.inference import InferenceError, embed, load_model
from sdm.inference.commands import register
from sdm.inference.retrieval import GallerySearch, format_results
from sdm.metrics import retrieval_metrics

CUB_IMAGES = "cub2011/CUB_200_2011/images"


def sdm(*argv) -> int:
    """The inference commands as ``sdm`` runs them."""
    parser = argparse.ArgumentParser(prog="sdm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def trained(cub_root, tiny_overrides, tmp_path_factory):
    """(experiment folder, config, test classes) of a trained 2-fold experiment at 32x32."""
    root = tmp_path_factory.mktemp("experiments")
    config = load_config(overrides=tiny_overrides(cub_root, root, "inference",
                                                  "transform.resize=40", "transform.crop=32"))
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(config).run()
    with pytest.warns(UserWarning, match="partial"):
        _, splits = build.load_experiment_dataset(config)
    return ExperimentFolder.of(config).path, config, splits.test


@pytest.fixture(scope="module")
def evaluated(trained):
    """What ``sdm evaluate`` reports for the trained experiment."""
    folder, _, _ = trained
    with pytest.warns(UserWarning, match="partial"):
        assert sdm_main(["evaluate", str(folder / C.CONFIG_FILE), "--no-pretrained"]) == 0
    return ExperimentFolder(folder).results().trained


def embed_dataset(folder: Path, out: Path, *model_options) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) that ``sdm embed`` writes for the whole tiny CUB."""
    with pytest.warns(UserWarning, match="partial"):
        assert sdm("embed", folder, "cub200", "--out", out, *model_options) == 0
    items = storage.read_csv(out / "items.csv")
    return np.load(out / "embeddings.npy"), np.array([int(r["label"]) for r in items])


def test_test_class_embeddings_score_what_sdm_evaluate_reports(trained, evaluated, tmp_path):
    folder, _, test_classes = trained

    def scores(embeddings, labels):
        test = np.isin(labels, test_classes)
        return retrieval_metrics(torch.from_numpy(embeddings[test]),
                                 torch.from_numpy(labels[test]))

    for position, fold in enumerate((0, 1)):
        measured = scores(*embed_dataset(folder, tmp_path / f"fold{fold}", "--fold", fold))
        for metric in C.METRIC_NAMES:
            expected = evaluated.separated.per_model[position][metric]
            assert measured[metric] == pytest.approx(expected, abs=1e-6)
    measured = scores(*embed_dataset(folder, tmp_path / "concat", "--concatenated"))
    for metric in C.METRIC_NAMES:
        assert measured[metric] == pytest.approx(evaluated.concatenated[metric], abs=1e-6)


def test_embed_writes_unit_float32_rows_items_and_the_model_identity(trained, cub_root,
                                                                     tmp_path, capsys):
    folder, _, _ = trained
    out = tmp_path / "gallery"
    assert sdm("embed", folder, cub_root / CUB_IMAGES, "--out", out, "--fold", 1) == 0
    assert "embedded 64 images (16-d, inference fold 1)" in capsys.readouterr().out
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.dtype == np.float32 and embeddings.shape == (64, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    items = storage.read_csv(out / "items.csv")
    assert list(items[0]) == ["row", "path", "label", "class_name"]
    assert [int(r["row"]) for r in items] == list(range(64))
    assert Path(items[5]["path"]).is_file()
    assert (items[5]["label"], items[5]["class_name"]) == ("1", "002.Bird_001")
    record = json.loads((out / "gallery.json").read_text())
    identity = record["model"]
    assert identity["folds"] == [1] and identity["concatenated"] is False
    assert identity["input_shape"] == [1, 32, 32]
    assert identity["transform"] == {"input_convention": "glyph", "resize": 40, "crop": 32}
    checkpoint = folder / "fold_1" / C.BEST_CHECKPOINT
    assert identity["checkpoints"] == {"1": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("form", ["flat folder", "csv with labels", "csv of paths", "files"])
def test_every_accepted_form_of_images_embeds_the_same_images_alike(trained, cub_root,
                                                                    tmp_path, form):
    folder, _, _ = trained
    model, _ = load_model(folder, fold=0, device="cpu")
    class_folders = sorted((cub_root / CUB_IMAGES).iterdir())[:2]
    files = sorted(p for d in class_folders for p in d.glob("*.jpg"))
    expected = embed(model, files)
    if form == "flat folder":
        images = [tmp_path / "flat"]
        (tmp_path / "flat").mkdir()
        for file in files:
            shutil.copy(file, tmp_path / "flat" / file.name)
    elif form.startswith("csv"):
        images = [tmp_path / "list.csv"]
        labels = form == "csv with labels"
        lines = ["path,label" if labels else "path"]
        lines += [f"{f},{f.parent.name}" if labels else str(f) for f in files]
        images[0].write_text("\n".join(lines) + "\n")
    else:
        images = files
    out = tmp_path / "out"
    assert sdm("embed", folder, *images, "--out", out, "--fold", 0) == 0
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), expected, atol=1e-6)
    items = storage.read_csv(out / "items.csv")
    assert [Path(r["path"]).name for r in items] == [f.name for f in files]
    known = {r["class_name"] for r in items}
    assert known == ({d.name for d in class_folders} if form == "csv with labels" else {""})


def test_load_model_and_embed_from_python(trained, cub_root):
    folder, config, _ = trained
    model, transform = load_model(folder, fold=1, device="cpu")
    assert not model.training and model.input_shape == (1, 32, 32)
    files = sorted((cub_root / CUB_IMAGES).glob("*/*.jpg"))[:5]
    pil = [Image.open(f).convert("RGB") for f in files]
    batch = torch.stack([transform(image) for image in pil])
    from_files, from_pil, from_tensor = embed(model, files), embed(model, pil), embed(model, batch)
    np.testing.assert_allclose(from_pil, from_files, atol=1e-6)
    np.testing.assert_allclose(from_tensor, from_files, atol=1e-6)
    checkpoint = build.load_checkpoint_model(config, folder / "fold_1" / C.BEST_CHECKPOINT).eval()
    with torch.no_grad():
        direct = torch.nn.functional.normalize(checkpoint(batch), dim=1).numpy()
    np.testing.assert_allclose(from_files, direct, atol=1e-6)
    default, _ = load_model(folder, device="cpu")
    assert default.identity["folds"] == [0]
    concatenated, _ = load_model(folder, concatenated=True, device="cpu")
    assert concatenated.identity["folds"] == [0, 1] and concatenated.embedding_dim == 32


@pytest.fixture(scope="module")
def gallery(trained, cub_root, tmp_path_factory):
    """An embeddings folder of the whole tiny CUB (fold 0)."""
    folder, _, _ = trained
    out = tmp_path_factory.mktemp("gallery") / "cub"
    assert sdm("embed", folder, cub_root / CUB_IMAGES, "--out", out, "--fold", 0) == 0
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_finds_each_gallery_image_first_with_its_exact_neighbours(
        gallery, cub_root, tmp_path, capsys, kind):
    assert sdm("index", gallery, "--kind", kind) == 0
    info = json.loads((gallery / INDEX_INFO_FILE).read_text())
    assert info["kind"] == kind and info["size"] == 64
    queries = sorted((cub_root / CUB_IMAGES).glob("*/*.jpg"))[::9]
    out = tmp_path / "results.json"
    capsys.readouterr()
    assert sdm("search", gallery, *queries, "--k", 5, "--out", out) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == len(queries) and "results written to" in printed
    results = json.loads(out.read_text())
    embeddings = np.load(gallery / "embeddings.npy")
    items = storage.read_csv(gallery / "items.csv")
    rows = {Path(item["path"]): int(item["row"]) for item in items}
    for query, result in zip(queries, results, strict=True):
        assert Path(result["query"]) == query
        found = [n["row"] for n in result["neighbours"]]
        assert found[0] == rows[query]
        assert result["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert result["class_name"] is None  # image files have no class
        assert result["neighbours"][0]["class_name"] == query.parent.name
        exact = np.argsort(-(embeddings @ embeddings[rows[query]]), kind="stable")[:5]
        if kind == "flat":
            assert found == exact.tolist()
        scores = [n["score"] for n in result["neighbours"]]
        assert scores == sorted(scores, reverse=True)


def test_search_from_python(gallery, cub_root):
    assert sdm("index", gallery, "--kind", "hnsw") == 0
    searcher = GallerySearch.open(gallery, device="cpu")
    query = sorted((cub_root / CUB_IMAGES / "004.Bird_003").glob("*.jpg"))[2]
    [result] = searcher.search([query], k=3)
    assert result.query == str(query) and [n.rank for n in result.neighbours] == [1, 2, 3]
    assert result.neighbours[0].path == str(query) and result.neighbours[0].label == 3
    assert "  1. 1.0000  " in format_results([result])


def test_search_draws_a_picture(gallery, cub_root, tmp_path):
    assert sdm("index", gallery) == 0
    picture = tmp_path / "search.png"
    queries = cub_root / CUB_IMAGES / "003.Bird_002"
    assert sdm("search", gallery, queries, "--k", 3, "--picture", picture) == 0
    with Image.open(picture) as image:
        assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.parametrize(("arguments", "message"), [
    (["--kind", "flat", "--nlist", "4"], "nlist do(es) not apply to a flat index"),
    (["--kind", "hnsw", "--nprobe", "4"], "nprobe do(es) not apply to a hnsw index"),
    (["--kind", "ivf", "--nlist", "100"], "nlist 100 exceeds the 64 items"),
    (["--kind", "hnsw", "--hnsw-m", "0"], "must be at least 1"),
])
def test_index_parameters_of_another_kind_are_refused(gallery, capsys, arguments, message):
    assert sdm("index", gallery, *arguments) == 2
    assert message in capsys.readouterr().err


# ----- bad input -------------------------------------------------------------------------


def test_an_experiment_without_a_trained_fold_is_a_clear_error(tiny_config, cub_root, tmp_path,
                                                              capsys):
    config = tiny_config("untrained")
    prepare_experiment_folder(config)
    code = sdm("embed", ExperimentFolder.of(config).path, cub_root / CUB_IMAGES, "--out",
               tmp_path / "o")
    assert code == 2
    error = capsys.readouterr().err
    assert "sdm embed: error: no trained fold in" in error and "train the experiment first" in error
    assert sdm("export", tmp_path / "nothing", "--format", "onnx", "--out", tmp_path / "m") == 2
    assert "is not an experiment folder" in capsys.readouterr().err


def test_an_untrained_fold_is_a_clear_error(trained, cub_root, tmp_path):
    folder, _, _ = trained
    with pytest.raises(InferenceError, match="fold 3 of .* has no .*trained folds: 0, 1"):
        load_model(folder, fold=3)


@pytest.mark.parametrize("images", ["no_such_dataset", "notes.txt", "mixed", "empty"])
def test_images_in_none_of_the_accepted_forms_are_a_clear_error(trained, cub_root, tmp_path,
                                                                capsys, images):
    folder, _, _ = trained
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    shutil.copytree(cub_root / CUB_IMAGES / "001.Bird_000", mixed / "birds")
    shutil.copy(next((mixed / "birds").glob("*.jpg")), mixed / "loose.jpg")
    argument = images if images == "no_such_dataset" else tmp_path / images
    assert sdm("embed", folder, argument, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    expected = {"no_such_dataset": "is none of the accepted forms of images",
                "notes.txt": "is none of the accepted forms of images",
                "mixed": "holds 1 images directly and class subfolders",
                "empty": "no images in"}[images]
    assert expected in error
    assert not (tmp_path / "out").exists()


def test_a_query_of_another_input_size_is_refused(cub_root, tiny_overrides, tmp_path, capsys):
    config = load_config(overrides=tiny_overrides(
        cub_root, tmp_path, "own_size", "training.folds=[0]", "training.max_epochs=1"))
    assert config.transform.crop is None  # the small CNN keeps the images' own size
    with pytest.warns(UserWarning, match="partial"):
        ExperimentFolder.of(config).run()
    with pytest.warns(UserWarning, match="partial"):
        model, _ = load_model(ExperimentFolder.of(config).path, device="cpu")
    assert model.input_shape == (1, 40, 60)
    odd = tmp_path / "square.png"
    Image.fromarray(class_pattern(3, 0, (64, 64))).save(odd)
    with pytest.raises(InferenceError, match=r"square.png: input of shape \(1, 64, 64\) .* "
                                             r"the model takes \(1, 40, 60\)"):
        embed(model, [odd])
    with pytest.raises(InferenceError, match="the tensor's images"):
        embed(model, torch.zeros(2, 1, 32, 32))
    gallery = tmp_path / "gallery"
    with pytest.warns(UserWarning, match="partial"):
        assert sdm("embed", ExperimentFolder.of(config).path, cub_root / CUB_IMAGES, "--out",
                   gallery) == 0
        assert sdm("index", gallery) == 0
        assert sdm("search", gallery, odd) == 2
    assert "input of shape (1, 64, 64)" in capsys.readouterr().err


def test_an_index_built_from_another_models_embeddings_is_refused(trained, cub_root, tmp_path,
                                                                 capsys):
    folder, _, _ = trained
    images = cub_root / CUB_IMAGES
    for fold in (0, 1):
        assert sdm("embed", folder, images, "--out", tmp_path / f"g{fold}", "--fold", fold) == 0
        assert sdm("index", tmp_path / f"g{fold}") == 0
    for name in (INDEX_FILE, INDEX_INFO_FILE):
        shutil.copy(tmp_path / "g1" / name, tmp_path / "g0" / name)
    capsys.readouterr()
    assert sdm("search", tmp_path / "g0", images / "001.Bird_000") == 2
    error = capsys.readouterr().err
    assert "was built from other embeddings (model" in error and "fold 1)" in error
    assert "rebuild it: `sdm index" in error
    (tmp_path / "g0" / INDEX_INFO_FILE).unlink()
    assert sdm("search", tmp_path / "g0", images / "001.Bird_000") == 2
    assert "no index in" in capsys.readouterr().err


def test_a_gallery_embedded_by_a_model_that_has_changed_since_is_refused(trained, cub_root,
                                                                         tmp_path, capsys):
    folder, _, _ = trained
    copy = tmp_path / "experiment"
    shutil.copytree(folder, copy)
    images = cub_root / CUB_IMAGES
    assert sdm("embed", copy, images, "--out", tmp_path / "g", "--fold", 0) == 0
    assert sdm("index", tmp_path / "g") == 0
    moved = tmp_path / "moved"
    copy.rename(moved)
    assert sdm("search", tmp_path / "g", images / "001.Bird_000", "--experiment", moved) == 0
    checkpoint = moved / "fold_0" / C.BEST_CHECKPOINT
    state = storage.load_checkpoint(checkpoint)
    state["embedder"] = {k: v + 0.01 for k, v in state["embedder"].items()}
    storage.save_checkpoint(checkpoint, state)
    capsys.readouterr()
    assert sdm("search", tmp_path / "g", images / "001.Bird_000", "--experiment", moved) == 2
    error = capsys.readouterr().err
    assert "was embedded by another model than" in error and "checkpoints:" in error
    assert sdm("search", tmp_path / "g", images / "001.Bird_000") == 2
    assert "is no longer there; pass --experiment" in capsys.readouterr().err


def test_an_incomplete_embeddings_folder_is_refused(gallery, tmp_path, capsys):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(gallery, incomplete)
    (incomplete / "gallery.json").unlink()
    assert sdm("index", incomplete) == 2
    assert "is not a complete embeddings folder: no gallery.json" in capsys.readouterr().err


def test_search_without_faiss_says_how_to_install_it(monkeypatch):
    import sys

    from sdm.inference.errors import InferenceError
    from sdm.inference.index import faiss_module

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    with pytest.raises(InferenceError, match=r"pip install 'sdm-metric-learning\[search\]'"):
        faiss_module()
