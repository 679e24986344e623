"""In-Shop Clothes Retrieval (DeepFashion): 52,712 images of 7,982 items, official partition.

Official layout below the dataset root: ``inshop/list_eval_partition.txt`` (line 1: the
number of images; line 2: the header ``image_name item_id evaluation_status``; then one
whitespace-separated line per image, e.g.
``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``) and the images at
``inshop/img/...``. Labels are the item ids as integers (id_00000002 -> 2). Each image's
evaluation_status (train, query or gallery) becomes the dataset's `partition`: the train
items are for training, and the evaluation queries the query images against the gallery
images of the other items (see sdm.data.splits.dataset_splits).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sdm.constants import (
    DEFAULT_DATASET_ROOT,
    INSHOP,
    INSHOP_FOLDER,
    INSHOP_GALLERY,
    INSHOP_PARTITION,
    INSHOP_QUERY,
    INSHOP_TRAIN,
    RESIZE,
)
from sdm.data.base import FileImageDataset, benchmark_dataset, present_images, safe_relative
from sdm.data.images import DatasetError

INSHOP_HEADER = ("image_name", "item_id", "evaluation_status")
INSHOP_STATUSES = (INSHOP_TRAIN, INSHOP_QUERY, INSHOP_GALLERY)
ITEM_ID = re.compile(r"id_\d+", re.ASCII)
SHARED_ITEMS_SHOWN = 5


@dataclass(frozen=True)
class PartitionList:
    """The entries of list_eval_partition.txt, one per image, in file order."""

    paths: list[PurePosixPath]  # relative to the inshop folder
    items: list[str]  # item ids as written, e.g. "id_00000002"
    statuses: list[str]  # "train", "query" or "gallery"


def load_inshop(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
    cache_size: int = RESIZE,
) -> FileImageDataset:
    """All In-Shop images listed in list_eval_partition.txt, with their `partition`.

    Labels are the integer item ids, class names the item ids as written. With `use_cache`,
    a valid resized cache built at shorter side `cache_size` is used.
    """
    root = Path(dataset_root)
    partition_path = root / INSHOP_PARTITION
    if not partition_path.is_file():
        raise DatasetError(_missing_message(root, partition_path))
    inshop_dir = root / INSHOP_FOLDER
    listed = read_partition_list(partition_path, allow_partial)
    paths = [inshop_dir / relative for relative in listed.paths]
    fix = f"extract img.zip into {inshop_dir}/ so that {inshop_dir}/img/WOMEN/... exists"
    present = present_images(paths, partition_path, fix, allow_partial)
    labels = [item_number(listed.items[i]) for i in present]
    class_names = {item_number(listed.items[i]): listed.items[i] for i in present}
    return benchmark_dataset(INSHOP, root, inshop_dir, [paths[i] for i in present], labels,
                             class_names, allow_partial=allow_partial, use_cache=use_cache,
                             cache_size=cache_size,
                             partition=[listed.statuses[i] for i in present])


def read_partition_list(path: Path, allow_partial: bool = False) -> PartitionList:
    """The entries of an In-Shop list_eval_partition.txt, checked.

    DatasetError for: a first line that is not the image count, a second line that is not
    the header, an entry line that is not `image_name item_id evaluation_status` (naming the
    line number), an unknown evaluation_status, an item with both train and query/gallery
    images. An image count that differs from the number of entries is an error too, unless
    `allow_partial` (then a warning).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    count = lines[0].strip() if lines else ""
    if not (count.isascii() and count.isdigit()):
        raise DatasetError(
            f"{path}, line 1: expected the number of images (52712 in the official file), "
            f"found {count!r}; is it the Eval/list_eval_partition.txt of In-Shop?"
        )
    if len(lines) < 2 or tuple(lines[1].split()) != INSHOP_HEADER:
        found = repr(lines[1]) if len(lines) > 1 else "nothing"
        raise DatasetError(
            f"{path}, line 2: expected the header {' '.join(INSHOP_HEADER)!r}, found {found}"
        )
    listed = PartitionList(paths=[], items=[], statuses=[])
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if fields:
            _add_entry(listed, fields, path, number, line)
    if int(count) != len(listed.paths):
        message = (
            f"{path} says on line 1 that it lists {count} images, but it lists {len(listed.paths)}"
        )
        if not allow_partial:
            raise DatasetError(
                f"{message}; is the file complete? (or pass allow_partial=True / --allow-partial)"
            )
        warnings.warn(f"{message}; using the entries it has (allow_partial=True)", stacklevel=3)
    _check_items_apart(listed, path)
    return listed


def item_number(item_id: str) -> int:
    """The integer of an In-Shop item id: "id_00000002" -> 2."""
    return int(item_id.removeprefix("id_"))


def _add_entry(
    listed: PartitionList, fields: list[str], path: Path, number: int, line: str
) -> None:
    if len(fields) != len(INSHOP_HEADER) or not ITEM_ID.fullmatch(fields[1]):
        raise DatasetError(
            f"{path}, line {number}: expected '{' '.join(INSHOP_HEADER)}' (an image path, an "
            f"item id like id_00000002 and a status), found {line!r}"
        )
    if fields[2] not in INSHOP_STATUSES:
        raise DatasetError(
            f"{path}, line {number}: unknown evaluation_status {fields[2]!r}; expected one of "
            f"{', '.join(INSHOP_STATUSES)}"
        )
    listed.paths.append(safe_relative(fields[0], path))
    listed.items.append(fields[1])
    listed.statuses.append(fields[2])


def _check_items_apart(listed: PartitionList, path: Path) -> None:
    """Train items must have no query or gallery images (the evaluation is on unseen items)."""
    train: set[str] = set()
    evaluated: set[str] = set()
    for item, status in zip(listed.items, listed.statuses, strict=True):
        (train if status == INSHOP_TRAIN else evaluated).add(item)
    shared = sorted(train & evaluated)
    if shared:
        raise DatasetError(
            f"{path}: {len(shared)} items have both train and query/gallery images, e.g. "
            f"{', '.join(shared[:SHARED_ITEMS_SHOWN])}; the official file keeps them apart "
            "(is it the original list_eval_partition.txt?)"
        )


def _missing_message(root: Path, partition_path: Path) -> str:
    inshop_dir = root / INSHOP_FOLDER
    return (
        f"In-Shop Clothes Retrieval not found: looked for {partition_path}; expected layout "
        f"<dataset_root>/{INSHOP_PARTITION} and the images at <dataset_root>/{INSHOP_FOLDER}/"
        "img/<GENDER>/<Category>/id_XXXXXXXX/*.jpg; put list_eval_partition.txt (from Eval/ of "
        f"the DeepFashion In-shop benchmark) in {inshop_dir}/ and extract img.zip there so that "
        f"{inshop_dir}/img/WOMEN/... exists"
    )
