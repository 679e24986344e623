import argparse
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import make_cub_tree, make_inshop_tree, make_sop_tree, write_corrupt_jpeg
from sdm.data.cache import build_resized_cache, resized_cache_dir
from sdm.data.commands import register
from sdm.data.datasets import DatasetError, FileImageDataset, load_cub200, load_dataset
from sdm.data.transforms import build_transform

SIZE = 32  # a small resize keeps the tests fast; the real cache uses 256
COUNTS = "expected 11788 images"


def cub_files(root):
    """The fixture CUB as a FileImageDataset, counts warning silenced, cache not looked at."""
    with pytest.warns(UserWarning, match=COUNTS):
        dataset = load_cub200(root, allow_partial=True, use_cache=False)
    return dataset


def build_cache(dataset, cache_dir, size=SIZE, workers=2):
    return build_resized_cache(dataset.paths, dataset.source_root, cache_dir, size, workers)


def run_data_command(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def cached_twin(dataset, cache_dir, cache_size=SIZE):
    """`dataset` again, looking for a resized cache in `cache_dir`."""
    return FileImageDataset(
        dataset.paths,
        dataset.labels,
        dataset.name,
        cache_dir=cache_dir,
        source_root=dataset.source_root,
        cache_size=cache_size,
    )


@pytest.fixture
def cub_with_cache(tmp_path):
    root = make_cub_tree(tmp_path, num_classes=8, per_class=2, size=(50, 40))
    dataset = cub_files(root)
    cache_dir = tmp_path / "cache"
    build_cache(dataset, cache_dir)
    return dataset, cache_dir


def test_cached_images_give_the_uncached_tensors_up_to_jpeg_error(cub_with_cache):
    dataset, cache_dir = cub_with_cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = cached_twin(dataset, cache_dir)
    assert cached.uses_cache and not dataset.uses_cache
    assert cached.load_image(3).size == (40, 32)  # 50x40 -> shorter side 32
    for train in (False, True):
        transform = build_transform("bninception", train=train, resize=SIZE, crop=24)
        for index in range(len(dataset)):
            torch.manual_seed(index)
            original, label = dataset.with_transform(transform)[index]
            torch.manual_seed(index)
            from_cache, cached_label = cached.with_transform(transform)[index]
            assert cached_label == label
            # same geometry (same crop, same flip): only JPEG quality-95 error remains
            assert (from_cache - original).abs().mean() < 2.5
    torch.manual_seed(0)
    other_crop = cached.with_transform(transform)[len(dataset) - 1][0]
    assert (other_crop - original).abs().mean() > 10  # the bound above is not vacuous


def test_manifest_records_size_and_each_source_file(cub_with_cache):
    dataset, cache_dir = cub_with_cache
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["size"] == SIZE and manifest["format"] == "jpeg-q95-444"
    assert len(manifest["files"]) == len(dataset)
    path = dataset.paths[5]
    stat = os.stat(path)
    key = path.relative_to(dataset.source_root).as_posix()
    assert key == "003.Bird_002/Bird_002_0001.jpg"
    assert manifest["files"][key] == [stat.st_size, stat.st_mtime_ns]
    assert (cache_dir / (key + ".jpg")).is_file()


def test_subsets_keep_using_the_cache(cub_with_cache):
    dataset, cache_dir = cub_with_cache
    part = cached_twin(dataset, cache_dir).subset([2, 5])
    assert part.uses_cache and part.labels.tolist() == [2, 2, 5, 5]
    assert part.cached_paths[2] == cache_dir / "006.Bird_005" / "Bird_005_0000.jpg.jpg"


def test_a_changed_source_file_invalidates_the_cache(cub_with_cache):
    dataset, cache_dir = cub_with_cache
    changed = dataset.paths[4]
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.warns(UserWarning, match=f"ignoring .*{changed} .*has changed"):
        stale = cached_twin(dataset, cache_dir)
    assert not stale.uses_cache and stale.load_image(4).size == (50, 40)


def test_incomplete_or_other_size_caches_are_ignored(cub_with_cache):
    dataset, cache_dir = cub_with_cache
    key = dataset.paths[0].relative_to(dataset.source_root).as_posix()
    (cache_dir / (key + ".jpg")).unlink()
    with pytest.warns(UserWarning, match="resized copy .* is missing"):
        assert not cached_twin(dataset, cache_dir).uses_cache
    (cache_dir / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert not cached_twin(dataset, cache_dir).uses_cache
    build_cache(dataset, cache_dir, workers=1)
    assert cached_twin(dataset, cache_dir).uses_cache
    with pytest.warns(UserWarning, match=r"built with .* \(1, 32, 'jpeg-q95-444'\), not \(1, 33,"):
        assert not cached_twin(dataset, cache_dir, cache_size=SIZE + 1).uses_cache


def test_cache_command_builds_the_cache_the_loader_then_uses(tmp_path, capsys):
    root = make_cub_tree(tmp_path, num_classes=8, per_class=1, size=(24, 16))
    with pytest.warns(UserWarning, match=COUNTS):
        code = run_data_command("cache", "cub200", "--dataset-root", str(root), "--allow-partial")
    assert code == 0
    cache_dir = resized_cache_dir(root, "cub200")
    assert cache_dir == root / "resized256" / "cub200"
    assert str(cache_dir) in capsys.readouterr().out
    with pytest.warns(UserWarning, match=COUNTS):
        dataset = load_cub200(root, allow_partial=True)
    assert dataset.uses_cache
    assert dataset.load_image(0).size == (384, 256)  # 24x16 scaled to shorter side 256
    resized = dataset.read_source_image(0).resize((384, 256), resample=Image.Resampling.BILINEAR)
    difference = np.asarray(dataset.load_image(0), float) - np.asarray(resized, float)
    assert np.abs(difference).mean() < 2


def test_no_cache_folder_means_no_warning_and_a_failed_build_leaves_no_manifest(tmp_path):
    root = make_cub_tree(tmp_path, num_classes=8, per_class=1, size=(24, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_cub200(root, allow_partial=True)
    assert len(caught) == 1 and COUNTS in str(caught[0].message)  # nothing about a cache
    assert not dataset.uses_cache
    corrupt = write_corrupt_jpeg(dataset.paths[3])
    with pytest.raises(DatasetError, match=f"cannot decode image {corrupt}"):
        build_cache(dataset, tmp_path / "cache")
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_a_cache_built_at_one_size_serves_only_that_size_and_data_check_says_so(
        tmp_path, capsys):
    root = make_sop_tree(tmp_path, num_classes=8, per_class=2, size=(80, 100))
    argv = ["--dataset-root", str(root), "--allow-partial"]
    reports = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the counts of the tiny SOP
        assert run_data_command("cache", "sop", "--size", "64", *argv) == 0
        assert "to shorter side 64 into" in capsys.readouterr().out
        at_64 = load_dataset("sop", root, allow_partial=True, cache_size=64)
        at_256 = load_dataset("sop", root, allow_partial=True, cache_size=256)
        default = load_dataset("sop", root, allow_partial=True)
        for size in ("64", "256", None):
            assert run_data_command("check", "sop", *argv, *(["--size", size] if size else [])) == 0
            [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("files")]
            reports[size] = line
    cache_dir = root / "resized64" / "sop"
    assert resized_cache_dir(root, "sop", 64) == cache_dir and cache_dir.is_dir()
    assert not (root / "resized256").exists()
    assert at_64.uses_cache and not at_256.uses_cache and not default.uses_cache
    assert at_64.cached_paths[3].is_relative_to(cache_dir)
    assert {at_64.load_image(i).size for i in range(len(at_64))} == {(64, 80)}
    assert at_256.load_image(0).size == (80, 100)
    below = f"files below: {root / 'Stanford_Online_Products'}"
    assert reports["64"] == f"{below} (resized cache at 64 px in use)"
    assert reports["256"] == reports[None] == (
        f"{below} (no resized cache at 256 px in use; `sdm data cache sop --size 256` builds one)")


def test_inshop_cache_keeps_the_partition(tmp_path):
    root = make_inshop_tree(tmp_path, num_train_items=4, num_test_items=2, per_item=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = ["--dataset-root", str(root), "--size", "16", "--allow-partial"]
        assert run_data_command("cache", "inshop", *argv) == 0
        plain = load_dataset("inshop", root, allow_partial=True, use_cache=False)
        cached = load_dataset("inshop", root, allow_partial=True, cache_size=16)
    assert cached.uses_cache and cached.load_image(0).size == (16, 21)  # 24x32 -> 16x21
    assert cached.partition.tolist() == plain.partition.tolist()
    assert cached.subset([3]).partition.tolist() == ["query", "gallery"]


@pytest.mark.parametrize("size", ["15", "0", "big"])
def test_cache_sizes_below_16_pixels_or_not_numbers_are_refused(tmp_path, size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_data_command("cache", "cub200", "--dataset-root", str(tmp_path), "--size", size)
    assert exit_info.value.code == 2
    assert "--size" in capsys.readouterr().err


def test_the_cache_decodes_sources_with_the_given_read_function(tmp_path):
    root = make_cub_tree(tmp_path, num_classes=8, per_class=1, size=(24, 16))
    dataset = cub_files(root)
    read_paths = []

    def read_blue(path):
        read_paths.append(path)
        return Image.new("RGB", (40, 20), (0, 0, 255))

    build_resized_cache(dataset.paths, dataset.source_root, tmp_path / "c", 16, 1, read=read_blue)
    assert read_paths == dataset.paths
    cached = cached_twin(dataset, tmp_path / "c", cache_size=16)
    assert cached.load_image(2).size == (32, 16)
    assert np.abs(np.asarray(cached.load_image(2), float) - [0, 0, 255]).max() < 4
