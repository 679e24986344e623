import argparse
import warnings

import numpy as np
import pytest

from fixtures import class_pattern, inshop_item_ids, make_inshop_tree, make_sop_tree
from sdm.data.commands import register
from sdm.data.datasets import DatasetError, FileImageDataset, load_dataset
from sdm.data.inshop import load_inshop
from sdm.data.sop import load_sop
from sdm.data.splits import Fold, dataset_splits

SOP_COUNTS_MESSAGE = "expected 120053 images in 22634 classes, found 36 images in 12 classes"
INSHOP_COUNTS_MESSAGE = "expected 52712 images in 7982 classes, found 48 images in 16 classes"


def run_data_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sdm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def load_partial_sop(root, **kwargs):
    with pytest.warns(UserWarning, match=SOP_COUNTS_MESSAGE):
        return load_sop(root, allow_partial=True, **kwargs)


def load_partial_inshop(root, **kwargs):
    with pytest.warns(UserWarning, match=INSHOP_COUNTS_MESSAGE):
        return load_inshop(root, allow_partial=True, **kwargs)


def partition_file(root):
    return root / "inshop" / "list_eval_partition.txt"


def rewrite_line(path, number, new_line):
    """Replace line `number` (1-based) of the text file at `path`."""
    lines = path.read_text().splitlines()
    lines[number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


# --- Stanford Online Products ---


def test_sop_uses_every_image_of_ebay_info_labelled_by_class_id(tmp_path):
    make_sop_tree(tmp_path, num_classes=12, per_class=3)
    dataset = load_partial_sop(tmp_path)
    sop = tmp_path / "Stanford_Online_Products"
    listed = [line.split() for line in (sop / "Ebay_info.txt").read_text().splitlines()[1:]]
    assert dataset.name == "sop" and len(dataset) == 36 and dataset.partition is None
    assert dataset.paths == [sop / fields[3] for fields in listed]
    assert dataset.labels.tolist() == [int(fields[1]) for fields in listed]
    assert dataset.classes == list(range(1, 13))  # Ebay_train's and Ebay_test's classes
    assert dataset.class_names[1] == "bicycle_final/1"
    assert dataset.class_names[12] == "chair_final/12"
    image, label = dataset[4]  # class 2, its second image
    assert label == 2 and image.mode == "RGB" and image.size == (32, 24)
    written = class_pattern(2, 1, (32, 24)).mean(axis=(0, 1))
    assert np.abs(np.asarray(image, float).mean(axis=(0, 1)) - written).max() < 2
    with pytest.warns(UserWarning, match=SOP_COUNTS_MESSAGE):
        assert load_dataset("sop", tmp_path, allow_partial=True).paths == dataset.paths


def test_sop_wrong_counts_fail_without_allow_partial(tmp_path):
    make_sop_tree(tmp_path, num_classes=12, per_class=3)
    with pytest.raises(DatasetError, match=SOP_COUNTS_MESSAGE) as error:
        load_sop(tmp_path)
    assert "allow_partial" in str(error.value)


def test_missing_sop_names_the_file_the_layout_and_the_archive(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_sop(tmp_path)
    message = str(error.value)
    assert f"looked for {tmp_path / 'Stanford_Online_Products' / 'Ebay_info.txt'}" in message
    assert "<dataset_root>/Stanford_Online_Products/Ebay_info.txt" in message
    assert f"extract it into {tmp_path}/" in message and "Stanford_Online_Products.zip" in message


def test_missing_sop_images_are_named_or_left_out_with_allow_partial(tmp_path):
    make_sop_tree(tmp_path, num_classes=12, per_class=3)
    missing = tmp_path / "Stanford_Online_Products" / "cabinet_final" / "111085122875_1.JPG"
    missing.unlink()
    with pytest.raises(DatasetError, match=f"1 of the 36 images .* missing, e.g. {missing}"):
        load_sop(tmp_path)
    with pytest.warns(UserWarning) as caught:
        dataset = load_sop(tmp_path, allow_partial=True)
    messages = [str(w.message) for w in caught]
    assert any("missing" in m for m in messages) and any("found 35 images" in m for m in messages)
    assert len(dataset) == 35 and missing not in dataset.paths
    assert dataset.labels.tolist().count(5) == 2


def test_malformed_sop_lines_are_named_by_number(tmp_path):
    make_sop_tree(tmp_path, num_classes=12, per_class=3)
    info = tmp_path / "Stanford_Online_Products" / "Ebay_info.txt"
    rewrite_line(info, 4, "3 two 1 bicycle_final/111085122872_0.JPG")
    with pytest.raises(DatasetError, match=r"Ebay_info.txt, line 4: expected .*'3 two 1 bic"):
        load_sop(tmp_path, allow_partial=True)
    rewrite_line(info, 4, "3 2 1 ../../outside.JPG")
    with pytest.raises(DatasetError, match="outside its folder"):
        load_sop(tmp_path, allow_partial=True)
    rewrite_line(info, 1, "id class super path")
    with pytest.raises(DatasetError, match="must start with the header line"):
        load_sop(tmp_path, allow_partial=True)


# --- In-Shop Clothes Retrieval ---


def test_inshop_labels_are_item_numbers_with_the_official_partition(tmp_path):
    make_inshop_tree(tmp_path)  # 10 train items, 6 query/gallery items, 3 images each
    dataset = load_partial_inshop(tmp_path)
    listed = [line.split() for line in partition_file(tmp_path).read_text().splitlines()[2:]]
    train_items, test_items = inshop_item_ids(10, 6)
    assert dataset.name == "inshop" and len(dataset) == 48
    assert dataset.paths == [tmp_path / "inshop" / fields[0] for fields in listed]
    assert dataset.labels.tolist() == [int(fields[1][3:]) for fields in listed]
    assert dataset.classes == sorted(train_items + test_items)
    assert dataset.class_names[5] == "id_00000005"
    assert dataset.partition.tolist() == [fields[2] for fields in listed]
    # items 2 (train), 3 (query/gallery), 5 (train), 6 (query/gallery) come first
    test_item = ["query", "gallery", "query"]
    assert dataset.partition.tolist()[:12] == (["train"] * 3 + test_item) * 2
    image, label = dataset[2]
    assert label == 2 and image.size == (24, 32)


def test_partition_stays_aligned_through_subset_and_with_transform(tmp_path):
    make_inshop_tree(tmp_path)
    dataset = load_partial_inshop(tmp_path)
    status_of = dict(zip(dataset.paths, dataset.partition.tolist(), strict=True))
    part = dataset.subset([18, 6, 5]).with_transform(lambda image: image.size)
    assert part.labels.tolist() == [5] * 3 + [6] * 3 + [18] * 3
    assert part.partition.tolist() == [status_of[p] for p in part.paths]
    assert part.partition.tolist() == ["train"] * 3 + ["query", "gallery", "query"] * 2
    assert part[4] == ((24, 32), 6)
    assert len(dataset.partition) == 48  # the original is untouched


def test_inshop_splits_test_query_gallery_items_and_rotate_the_train_items(tmp_path):
    make_inshop_tree(tmp_path)
    splits = dataset_splits(load_partial_inshop(tmp_path))
    # train items 2, 5, ..., 29 (10); val = int(10 * 0.125 / 0.5) = 2; folds start at 0, 2, 5, 7
    assert splits.test == [3, 6, 9, 12, 15, 18]
    assert splits.folds == [
        Fold(train=[2, 5, 8, 11, 14, 17, 20, 23], val=[26, 29]),
        Fold(train=[8, 11, 14, 17, 20, 23, 26, 29], val=[2, 5]),
        Fold(train=[2, 5, 8, 17, 20, 23, 26, 29], val=[11, 14]),
        Fold(train=[2, 5, 8, 11, 14, 23, 26, 29], val=[17, 20]),
    ]


def test_inshop_split_sizes_for_the_official_item_counts():
    train_items, test_items = inshop_item_ids(3997, 3985)  # the official 3,997 / 3,985 items
    items = train_items + test_items
    partition = ["train"] * len(train_items) + ["query"] * len(test_items)
    paths = [f"img/{item}.jpg" for item in items]
    splits = dataset_splits(FileImageDataset(paths, items, "inshop", partition=partition))
    assert splits.test == sorted(test_items)
    assert [(len(f.train), len(f.val)) for f in splits.folds] == [(2998, 999)] * 4
    assert splits.folds[1].val == sorted(train_items)[:999]  # fold 1 starts at 3997 // 4 = 999
    val = [c for f in splits.folds for c in f.val]  # folds start at 0, 999, 1998, 2997
    assert sorted(val) == train_items[:2997] + train_items[2998:]  # 4 * 999 = 3997 - 1


def test_missing_inshop_names_the_file_the_layout_and_what_to_do(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_inshop(tmp_path)
    message = str(error.value)
    assert f"looked for {partition_file(tmp_path)}" in message
    assert "<dataset_root>/inshop/img/<GENDER>/<Category>/id_XXXXXXXX/*.jpg" in message
    assert "put list_eval_partition.txt (from Eval/" in message and "img.zip" in message


def test_missing_inshop_images_are_named_or_left_out_with_allow_partial(tmp_path):
    make_inshop_tree(tmp_path)
    dataset = load_partial_inshop(tmp_path)
    missing = dataset.paths[10]
    missing.unlink()
    with pytest.raises(DatasetError, match=f"1 of the 48 images .* missing, e.g. {missing}"):
        load_inshop(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = load_inshop(tmp_path, allow_partial=True)
    assert len(partial) == 47 and missing not in partial.paths
    assert partial.partition.tolist() == np.delete(dataset.partition, 10).tolist()


def test_wrong_inshop_counts_fail_without_allow_partial(tmp_path):
    make_inshop_tree(tmp_path)
    with pytest.raises(DatasetError, match=INSHOP_COUNTS_MESSAGE):
        load_inshop(tmp_path)
    rewrite_line(partition_file(tmp_path), 1, "52712")
    with pytest.raises(DatasetError, match="says on line 1 that it lists 52712 images, but it"):
        load_inshop(tmp_path, allow_partial=False)
    with pytest.warns(UserWarning) as caught:
        assert len(load_inshop(tmp_path, allow_partial=True)) == 48
    assert any("lists 52712 images, but it lists 48" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    ("number", "line", "message"),
    [
        (1, "many", r"list_eval_partition.txt, line 1: expected the number of images"),
        (2, "image item status", r"line 2: expected the header 'image_name item_id evaluation"),
        (7, "img/MEN/Denim/id_00000003/01_1_front.jpg id_00000003", r"line 7: expected"),
        (8, "img/x.jpg item_3 query", r"line 8: expected .*'img/x.jpg item_3 query'"),
        (9, "img/x.jpg id_00000003 validation", r"line 9: unknown evaluation_status 'validat"),
        (4, "img/x.jpg id_00000003 train", "both train and query/gallery images, e.g. id_00000003"),
        (5, "/etc/x.jpg id_00000002 train", "outside its folder"),
    ],
)
def test_malformed_partition_lists_are_refused_clearly(tmp_path, number, line, message):
    make_inshop_tree(tmp_path)
    rewrite_line(partition_file(tmp_path), number, line)
    with pytest.raises(DatasetError, match=message):
        load_inshop(tmp_path, allow_partial=True)


# --- `sdm data check` ---


def test_check_sop_prints_the_mlrc_split_sizes(tmp_path, capsys):
    make_sop_tree(tmp_path, num_classes=12, per_class=3)
    with pytest.warns(UserWarning, match=SOP_COUNTS_MESSAGE):
        code = run_data_command("check", "sop", "--dataset-root", str(tmp_path), "--allow-partial")
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 36" in out and "classes: 12 (ids 1..12)" in out
    # 12 classes: test 7..12; trainval 1..6, val int(12 * 0.125) = 1 class, train 5 classes
    assert "MLRC test: 6 classes / 18 images" in out
    assert "MLRC fold 2: train 5 classes / 15 images, val 1 classes / 3 images" in out
    assert run_data_command("check", "sop", "--dataset-root", str(tmp_path)) == 2
    assert SOP_COUNTS_MESSAGE in capsys.readouterr().err


def test_check_inshop_prints_the_official_partition_and_the_folds(tmp_path, capsys):
    make_inshop_tree(tmp_path)
    argv = ["check", "inshop", "--dataset-root", str(tmp_path), "--allow-partial"]
    with pytest.warns(UserWarning, match=INSHOP_COUNTS_MESSAGE):
        code = run_data_command(*argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 48" in out and "classes: 16 (ids 2..29)" in out
    assert (
        "official partition: train 10 items / 30 images, query 12 images (6 items), "
        "gallery 6 images (6 items)"
    ) in out
    assert "test (query/gallery items): 6 classes / 18 images" in out
    for fold in range(4):
        sizes = "train 8 classes / 24 images, val 2 classes / 6 images"
        assert f"fold {fold} (train items): {sizes}" in out
    rewrite_line(partition_file(tmp_path), 9, "img/x.jpg id_00000003 validation")
    assert run_data_command(*argv) == 2
    assert "line 9: unknown evaluation_status 'validation'" in capsys.readouterr().err
