import argparse
import io
import sys
import tarfile
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import class_pattern, make_cars_tree, make_cub_tree, write_corrupt_jpeg, write_jpeg
from sdm.data import images
from sdm.data.commands import register
from sdm.data.datasets import (
    ArrayImageDataset,
    DatasetError,
    FileImageDataset,
    load_cars196,
    load_csv,
    load_cub200,
    load_dataset,
    load_image_folder,
    read_rgb_image,
    unpack_cub_archive,
)
from sdm.data.transforms import build_transform

CUB_COUNTS_MESSAGE = "expected 11788 images in 200 classes, found 32 images in 8 classes"
CARS_COUNTS_MESSAGE = "expected 16185 images in 196 classes, found 32 images in 8 classes"


def load_partial_cub(root):
    with pytest.warns(UserWarning, match=CUB_COUNTS_MESSAGE):
        return load_cub200(root, allow_partial=True)


def run_data_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sdm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


# --- CUB-200-2011 ---


def test_cub_labels_follow_sorted_folders_and_agree_with_the_official_lists(tmp_path):
    dataset = load_partial_cub(make_cub_tree(tmp_path))
    assert dataset.name == "cub200" and len(dataset) == 32
    assert dataset.classes == list(range(8))
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [c for c in range(8) for _ in range(4)]
    cub = tmp_path / "cub2011" / "CUB_200_2011"
    listed_paths = dict(line.split() for line in (cub / "images.txt").read_text().splitlines())
    listed_labels = dict(
        line.split() for line in (cub / "image_class_labels.txt").read_text().splitlines()
    )
    expected = {cub / "images" / listed_paths[i]: int(listed_labels[i]) - 1 for i in listed_paths}
    assert dict(zip(dataset.paths, dataset.labels.tolist(), strict=True)) == expected
    assert dataset.class_names[2] == "003.Bird_002"


def test_cub_items_are_the_written_images(tmp_path):
    dataset = load_partial_cub(make_cub_tree(tmp_path, size=(60, 40)))
    image, label = dataset[5]  # class 1, its second image
    assert label == 1 and image.mode == "RGB" and image.size == (60, 40)
    read_means = np.asarray(image, dtype=np.float64).mean(axis=(0, 1))
    written_means = class_pattern(1, 1, (60, 40)).mean(axis=(0, 1))
    other_class_means = class_pattern(2, 1, (60, 40)).mean(axis=(0, 1))
    assert np.abs(read_means - written_means).max() < 2  # JPEG keeps the mean colour
    assert np.abs(read_means - other_class_means).max() > 20


def test_wrong_counts_say_expected_and_found_and_suggest_allow_partial(tmp_path):
    make_cub_tree(tmp_path)
    with pytest.raises(DatasetError, match=CUB_COUNTS_MESSAGE) as error:
        load_cub200(tmp_path)
    assert "allow_partial" in str(error.value)


def test_missing_cub_names_the_path_the_layout_and_the_archive(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_cub200(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cub2011" / "CUB_200_2011" / "images") in message
    assert "<NNN.Class_name>/*.jpg" in message
    assert f"extract CUB_200_2011.tgz into {tmp_path / 'cub2011'}/" in message
    assert "001.Black_footed_Albatross" in message


def make_cub_archive(tmp_path):
    """A tiny official-style CUB_200_2011.tgz in a fresh dataset root; returns that root."""
    make_cub_tree(tmp_path / "source")
    root = tmp_path / "root"
    (root / "cub2011").mkdir(parents=True)
    with tarfile.open(root / "cub2011" / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(tmp_path / "source" / "cub2011" / "CUB_200_2011", arcname="CUB_200_2011")
    return root


def test_a_packed_archive_is_pointed_out_and_unpacked_on_request(tmp_path):
    root = make_cub_archive(tmp_path)
    with pytest.raises(DatasetError, match="sdm data unpack-cub"):
        load_cub200(root)
    images_dir = unpack_cub_archive(root)
    assert images_dir == root / "cub2011" / "CUB_200_2011" / "images"
    assert len(load_partial_cub(root)) == 32
    assert sorted(p.name for p in (root / "cub2011").iterdir()) == [
        "CUB_200_2011",
        "CUB_200_2011.tgz",
    ]


def test_unpacking_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "cub2011" / "CUB_200_2011.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"escaped"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DatasetError, match="cannot extract"):
        unpack_cub_archive(tmp_path)
    assert not (tmp_path / "escaped.txt").exists()


def test_corrupt_and_missing_images_fail_when_read_naming_their_path(tmp_path):
    make_cub_tree(tmp_path)
    class_dir = tmp_path / "cub2011" / "CUB_200_2011" / "images" / "001.Bird_000"
    corrupt = write_corrupt_jpeg(class_dir / "Bird_000_9999.jpg")
    with pytest.warns(UserWarning, match="found 33 images"):
        dataset = load_cub200(tmp_path, allow_partial=True)  # decoding is lazy
    index = dataset.paths.index(corrupt)
    with pytest.raises(DatasetError, match=f"cannot decode image {corrupt}"):
        dataset[index]
    dataset.paths[0].unlink()
    with pytest.raises(DatasetError, match=f"image file not found: {dataset.paths[0]}"):
        dataset.load_image(0)


def test_a_failed_read_suggests_the_command_that_finds_every_unreadable_image(tmp_path):
    corrupt = write_corrupt_jpeg(tmp_path / "k" / "bad.jpg")
    with pytest.raises(DatasetError) as error:
        load_image_folder(tmp_path)[0]
    message = str(error.value)
    assert message.startswith(f"cannot decode image {corrupt}: ")
    assert message.endswith(
        "; find every unreadable image first with `sdm data check <dataset> --verify-images` "
        "(add --path DIR for folder/csv)"
    )
    with pytest.raises(DatasetError, match="not found: .*; find every unreadable image first"):
        read_rgb_image(tmp_path / "nowhere.jpg")


def test_the_image_reader_and_its_error_are_still_importable_from_datasets():
    assert DatasetError is images.DatasetError and read_rgb_image is images.read_rgb_image


# --- Cars196 ---


def test_cars_labels_and_paths_come_from_the_annotations(tmp_path):
    make_cars_tree(tmp_path)
    with pytest.warns(UserWarning, match=CARS_COUNTS_MESSAGE):
        dataset = load_cars196(tmp_path, allow_partial=True)
    assert dataset.labels.tolist() == [i % 8 + 1 for i in range(32)]
    assert dataset.classes == list(range(1, 9))
    assert dataset.paths[6] == tmp_path / "cars196" / "car_ims" / "000007.jpg"
    assert dataset.class_names[3] == "Car Maker Model 3 2012"
    image, label = dataset[6]
    assert label == 7 and image.size == (64, 48)  # image 6 is 64 + 4 * (6 % 3) wide


def test_missing_cars_images_are_named(tmp_path):
    make_cars_tree(tmp_path)
    missing = tmp_path / "cars196" / "car_ims" / "000003.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=f"1 of the 32 images .* missing, e.g. {missing}"):
        load_cars196(tmp_path, allow_partial=False)
    with pytest.warns(UserWarning, match="missing"):
        dataset = load_cars196(tmp_path, allow_partial=True)
    assert len(dataset) == 31 and missing not in dataset.paths


def test_missing_cars_annotations_name_the_path_and_layout(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_cars196(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cars196" / "cars_annos.mat") in message
    assert "<dataset_root>/cars196/car_ims/*.jpg" in message


# --- image decoding, subsets, transforms ---


def test_grayscale_and_cmyk_jpegs_come_out_rgb(tmp_path):
    write_jpeg(tmp_path / "a" / "rgb.jpg", "RGB")
    write_jpeg(tmp_path / "b" / "gray.jpg", "L")
    write_jpeg(tmp_path / "c" / "cmyk.jpg", "CMYK")
    assert Image.open(tmp_path / "c" / "cmyk.jpg").mode == "CMYK"
    dataset = load_image_folder(tmp_path)
    pixels = [np.asarray(dataset.load_image(i), dtype=np.int16) for i in range(3)]
    assert all(dataset.load_image(i).mode == "RGB" for i in range(3))
    luma = 200 * 0.299 + 40 * 0.587 + 90 * 0.114  # 93.54, PIL's RGB -> L
    assert np.abs(pixels[0] - [200, 40, 90]).max() <= 3
    assert np.abs(pixels[1] - luma).max() <= 3
    assert np.abs(pixels[2] - [200, 40, 90]).max() <= 3


def test_subset_and_with_transform(tmp_path):
    dataset = load_partial_cub(make_cub_tree(tmp_path, size=(40, 30)))
    transform = build_transform("bninception", train=False, resize=32, crop=28)
    part = dataset.with_transform(transform).subset([6, 1])
    assert part.classes == [1, 6] and part.labels.tolist() == [1] * 4 + [6] * 4
    assert part.paths == dataset.paths[4:8] + dataset.paths[24:28]
    assert dataset.transform is None and len(dataset) == 32
    tensor, label = part[5]
    assert label == 6 and tensor.shape == (3, 28, 28)
    with pytest.raises(ValueError, match=r"no classes \[9\]"):
        dataset.subset([1, 9])
    batches = list(torch.utils.data.DataLoader(part, batch_size=8))
    assert batches[0][0].shape == (8, 3, 28, 28)
    assert batches[0][1].tolist() == [1] * 4 + [6] * 4


def test_partition_is_none_by_default_and_must_match_the_labels(tmp_path):
    dataset = load_partial_cub(make_cub_tree(tmp_path))
    assert dataset.partition is None and dataset.subset([1]).partition is None
    paths = [tmp_path / f"{i}.jpg" for i in range(4)]
    with pytest.raises(ValueError, match=r"partition has shape \(3,\) but labels \(4,\)"):
        FileImageDataset(paths, [1, 1, 2, 2], "x", partition=["train"] * 3)
    part = FileImageDataset(paths, [1, 2, 1, 2], "x", partition=["a", "b", "c", "d"]).subset([2])
    assert part.partition.tolist() == ["b", "d"] and part.paths == [paths[1], paths[3]]


def test_array_dataset_yields_l_or_rgb_images():
    gray = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2)
    dataset = ArrayImageDataset(gray, [5, 7, 5, 7], "arrays")
    image, label = dataset[1]
    assert image.mode == "L" and label == 7
    np.testing.assert_array_equal(np.asarray(image), gray[1])
    part = dataset.subset([7])
    assert part.labels.tolist() == [7, 7]
    np.testing.assert_array_equal(np.asarray(part.load_image(1)), gray[3])
    colour = np.zeros((2, 3, 2, 3), dtype=np.uint8)
    colour[1, :, :, 2] = 9
    assert ArrayImageDataset(colour, [0, 1], "c").load_image(1).getpixel((0, 0)) == (0, 0, 9)
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageDataset(gray.astype(np.float32), [5, 7, 5, 7], "arrays")
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArrayImageDataset(gray[:3], [5, 7], "arrays")


# --- users' own data ---


def test_image_folder_labels_by_sorted_folder_and_skips_other_files(tmp_path):
    write_jpeg(tmp_path / "zebra" / "1.jpg", "RGB")
    write_jpeg(tmp_path / "ant" / "2.jpg", "RGB")
    write_jpeg(tmp_path / "ant" / "1.JPG", "RGB")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    dataset = load_image_folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.paths] == [
        "ant/1.JPG",
        "ant/2.jpg",
        "zebra/1.jpg",
    ]
    assert dataset.labels.tolist() == [0, 0, 1]
    assert dataset.class_names == {0: "ant", 1: "zebra"}
    with pytest.raises(DatasetError, match="image folder not found"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no images found"):
        load_image_folder(tmp_path / "empty")


def test_csv_with_string_and_integer_labels(tmp_path):
    write_jpeg(tmp_path / "img" / "a.jpg", "RGB")
    write_jpeg(tmp_path / "img" / "b.jpg", "L")
    (tmp_path / "names.csv").write_text("path,label\nimg/a.jpg,wren\nimg/b.jpg,crow\n")
    dataset = load_csv(tmp_path / "names.csv")
    assert dataset.labels.tolist() == [1, 0]  # crow -> 0, wren -> 1
    assert dataset.class_names == {0: "crow", 1: "wren"}
    assert dataset.paths == [tmp_path / "img" / "a.jpg", tmp_path / "img" / "b.jpg"]
    (tmp_path / "ids.csv").write_text("label,path\n12,img/a.jpg\n-3,img/b.jpg\n")
    assert load_csv(tmp_path / "ids.csv").labels.tolist() == [12, -3]
    (tmp_path / "missing.csv").write_text("path,label\nimg/a.jpg,1\nimg/c.jpg,2\n")
    with pytest.raises(DatasetError, match=f"e.g. {tmp_path / 'img' / 'c.jpg'}"):
        load_csv(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("file,class\nimg/a.jpg,1\n")
    with pytest.raises(DatasetError, match="path,label"):
        load_csv(tmp_path / "bad.csv")


def test_load_dataset_dispatches_by_name(tmp_path, monkeypatch):
    make_cub_tree(tmp_path)
    with pytest.warns(UserWarning):
        assert load_dataset("cub200", tmp_path, allow_partial=True).name == "cub200"
    write_jpeg(tmp_path / "own" / "k" / "1.jpg", "RGB")
    assert load_dataset("folder", path=tmp_path / "own").name == "folder"
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("csv", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", tmp_path)

    images = np.zeros((3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1, 1], dtype=np.int64)
    fake = types.ModuleType("sdm.data.embedded")
    fake.load_embedded_arrays = lambda name, root: {"glyphs": (images, labels, ["A", "B"])}[name]
    monkeypatch.setitem(sys.modules, "sdm.data.embedded", fake)
    glyphs = load_dataset("glyphs", tmp_path)
    assert isinstance(glyphs, ArrayImageDataset) and glyphs.name == "glyphs"
    assert glyphs.class_names == {0: "A", 1: "B"} and glyphs.load_image(2).mode == "L"


def test_embedded_loader_names_the_sets_it_knows(tmp_path):
    from sdm.data.embedded import load_embedded_arrays

    with pytest.raises(ValueError, match="no embedded set 'mnist'; expected one of glyphs, icons"):
        load_embedded_arrays("mnist", tmp_path)


# --- the `sdm data` commands ---


def test_check_reports_counts_and_mlrc_split_sizes(tmp_path, capsys):
    make_cub_tree(tmp_path)
    write_jpeg(tmp_path / "cub2011" / "CUB_200_2011" / "images" / "008.Bird_007" / "x.jpg", "L")
    with pytest.warns(UserWarning):
        code = run_data_command(
            "check", "cub200", "--dataset-root", str(tmp_path), "--allow-partial"
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 33" in out and "classes: 8 (ids 0..7)" in out
    assert "images per class: min 4, max 5" in out
    # 8 classes: test 4..7 (4 + 4 + 4 + 5 images); trainval 0..3; 1 val class, 3 train classes
    assert "MLRC test: 4 classes / 17 images" in out
    assert "MLRC fold 0: train 3 classes / 12 images, val 1 classes / 4 images" in out
    assert "MLRC fold 3: train 3 classes / 12 images, val 1 classes / 4 images" in out


def test_check_fails_with_code_2_and_the_reason(tmp_path, capsys):
    make_cub_tree(tmp_path)
    assert run_data_command("check", "cub200", "--dataset-root", str(tmp_path)) == 2
    assert CUB_COUNTS_MESSAGE in capsys.readouterr().err
    assert run_data_command("check", "cars196", "--dataset-root", str(tmp_path)) == 2
    assert "cars_annos.mat" in capsys.readouterr().err


def test_check_verify_images_decodes_everything(tmp_path, capsys):
    make_cub_tree(tmp_path)
    argv = ["check", "cub200", "--dataset-root", str(tmp_path), "--allow-partial"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_data_command(*argv, "--verify-images") == 0
        assert "all 32 images decode" in capsys.readouterr().out
        corrupt = tmp_path / "cub2011" / "CUB_200_2011" / "images" / "003.Bird_002" / "bad.jpg"
        write_corrupt_jpeg(corrupt)
        assert run_data_command(*argv) == 0  # without --verify-images nothing is decoded
        assert run_data_command(*argv, "--verify-images") == 2
    assert f"1 of 33 images cannot be read:\n  cannot decode image {corrupt}" in (
        capsys.readouterr().err
    )


def test_unpack_and_glyph_commands(tmp_path, capsys, monkeypatch):
    root = make_cub_archive(tmp_path)
    assert run_data_command("unpack-cub", "--dataset-root", str(root)) == 0
    assert str(root / "cub2011" / "CUB_200_2011" / "images") in capsys.readouterr().out
    assert run_data_command("unpack-cub", "--dataset-root", str(tmp_path / "none")) == 2
    assert "CUB archive not found" in capsys.readouterr().err

    fake = types.ModuleType("sdm.builders.glyphs")
    fake.build_glyph_dataset = lambda root: root / "glyphs" / "glyphs.npz"
    monkeypatch.setitem(sys.modules, "sdm.builders.glyphs", fake)
    assert run_data_command("glyphs", "--dataset-root", str(root)) == 0
    assert str(root / "glyphs" / "glyphs.npz") in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_sdm_data_check_verify_images_lists_undecodable_user_images(tmp_path, capsys, kind):
    from sdm.cli import main

    write_jpeg(tmp_path / "own" / "ant" / "1.jpg", "RGB")
    write_jpeg(tmp_path / "own" / "bee" / "1.jpg", "L")
    corrupt = write_corrupt_jpeg(tmp_path / "own" / "bee" / "2.jpg")
    listing = tmp_path / "own" / "list.csv"
    listing.write_text("path,label\nant/1.jpg,ant\nbee/1.jpg,bee\nbee/2.jpg,bee\n")
    argv = ["data", "check", kind, "--path", str(listing if kind == "csv" else listing.parent)]
    assert main(argv) == 0  # without --verify-images nothing is decoded
    assert "images: 3" in capsys.readouterr().out
    assert main([*argv, "--verify-images"]) == 2
    err = capsys.readouterr().err
    assert (f"sdm data check: error: 1 of 3 images cannot be read:\n  cannot decode image "
            f"{corrupt}: ") in err
    assert "find every unreadable image" not in err  # the list itself needs no hint


def test_file_dataset_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        FileImageDataset([tmp_path / "a.jpg", tmp_path / "b.jpg"], [0], "x")
