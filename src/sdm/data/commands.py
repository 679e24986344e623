"""The `sdm data` command group: check, unpack-cub, cache, glyphs.

Each subcommand's `func` takes the parsed arguments and returns the exit code: 0 on success,
2 with the reason on stderr when the data is missing or wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sdm.constants import (
    CARS196,
    CUB200,
    DATASET_NAMES,
    DEFAULT_DATASET_ROOT,
    INSHOP,
    INSHOP_GALLERY,
    INSHOP_QUERY,
    INSHOP_TRAIN,
    MIN_IMAGE_SIZE,
    RESIZE,
    SOP,
)
from sdm.data.base import FileImageDataset, ImageDataset
from sdm.data.cache import build_resized_cache, resized_cache_dir
from sdm.data.datasets import load_dataset, unpack_cub_archive
from sdm.data.images import DatasetError, image_problem
from sdm.data.splits import dataset_splits

DATA_ERROR_EXIT_CODE = 2
CACHEABLE_DATASETS = (CUB200, CARS196, SOP, INSHOP)
FAILED_IMAGES_SHOWN = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command group to the main CLI's subparsers."""
    data = subparsers.add_parser("data", help="check, unpack, cache or build datasets")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="report what a dataset holds and its splits")
    check.add_argument("name", choices=DATASET_NAMES)
    _add_root_argument(check)
    check.add_argument("--path", help="the image folder (folder) or CSV file (csv)")
    check.add_argument("--allow-partial", action="store_true", help="accept wrong counts")
    _add_size_argument(check, "the resized cache to look for: the one built at this shorter "
                              "side, the configured transform.resize")
    check.add_argument(
        "--verify-images", action="store_true", help="decode every image (slow on full sets)"
    )
    check.set_defaults(func=run_check)

    unpack = commands.add_parser(
        "unpack-cub", help="extract <root>/cub2011/CUB_200_2011.tgz in place"
    )
    _add_root_argument(unpack)
    unpack.set_defaults(func=run_unpack_cub)

    cache = commands.add_parser(
        "cache", help="store a copy of every image resized to a shorter side (faster loading)"
    )
    cache.add_argument("name", choices=CACHEABLE_DATASETS)
    _add_root_argument(cache)
    _add_size_argument(cache, "shorter side in pixels, the pipelines' resize")
    cache.add_argument("--allow-partial", action="store_true", help="accept wrong counts")
    cache.add_argument("--workers", type=whole_number_at_least(1), default=2,
                       help="resizing threads (default 2)")
    cache.set_defaults(func=run_cache)

    glyphs = commands.add_parser("glyphs", help="build the embedded glyph demo dataset")
    _add_root_argument(glyphs)
    glyphs.set_defaults(func=run_glyphs)

    icons = commands.add_parser(
        "icons", help="build the icon dataset from the installed icon themes "
        "(bash scripts/install_icons.sh installs them)")
    _add_root_argument(icons)
    icons.add_argument("--icon-roots", nargs="+", default=None,
                       help="folders holding icon themes (default /usr/share/icons)")
    icons.add_argument("--force", action="store_true", help="rebuild even when up to date")
    icons.set_defaults(func=run_icons)


def run_check(args: argparse.Namespace) -> int:
    """Print images, classes, per-class counts and split sizes of a dataset."""
    try:
        dataset = load_dataset(args.name, args.dataset_root, path=args.path,
                               allow_partial=args.allow_partial, cache_size=args.size)
    except (ValueError, OSError) as error:  # DatasetError, or the glyph archive's loader
        return _fail(args, error)
    print(describe_dataset(dataset))
    if args.verify_images:
        failures = _undecodable_images(dataset)
        if failures:
            shown = "\n  ".join(failures[:FAILED_IMAGES_SHOWN])
            return _fail(args, f"{len(failures)} of {len(dataset)} images cannot be read:"
                               f"\n  {shown}")
        print(f"all {len(dataset)} images decode")
    return 0


def describe_dataset(dataset: ImageDataset) -> str:
    """Lines describing `dataset`: sizes, images per class and the sizes of its splits.

    The splits are `dataset_splits`: MLRC's, or for a dataset with an official partition
    (In-Shop) that partition, its query/gallery items as test and folds of its train items.
    """
    classes, counts = np.unique(dataset.labels, return_counts=True)
    images_per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    lines = [
        f"dataset: {dataset.name}",
        f"images: {len(dataset)}",
        f"classes: {len(dataset.classes)} (ids {dataset.classes[0]}..{dataset.classes[-1]})",
        f"images per class: min {counts.min()}, max {counts.max()}",
    ]
    if isinstance(dataset, FileImageDataset):
        lines.append(f"files below: {dataset.source_root}{_cache_state(dataset)}")
    if dataset.partition is None:
        test_label, fold_label = "MLRC test", "MLRC fold {}"
    else:
        lines.append(_describe_partition(dataset))
        test_label, fold_label = "test (query/gallery items)", "fold {} (train items)"
    try:
        splits = dataset_splits(dataset)
    except ValueError as error:
        lines.append(f"splits: not possible: {error}")
        return "\n".join(lines)

    def size(part: list[int]) -> str:
        return f"{len(part)} classes / {sum(images_per_class[c] for c in part)} images"

    lines.append(f"{test_label}: {size(splits.test)}")
    for number, fold in enumerate(splits.folds):
        lines.append(
            f"{fold_label.format(number)}: train {size(fold.train)}, val {size(fold.val)}"
        )
    return "\n".join(lines)


def _cache_state(dataset: FileImageDataset) -> str:
    """' (resized cache at N px in use)' or what builds one; empty where no cache can be built."""
    if dataset.name not in CACHEABLE_DATASETS:
        return ""
    size = dataset.cache_size
    if dataset.uses_cache:
        return f" (resized cache at {size} px in use)"
    return (f" (no resized cache at {size} px in use; "
            f"`sdm data cache {dataset.name} --size {size}` builds one)")


def run_unpack_cub(args: argparse.Namespace) -> int:
    """Extract the official CUB archive below the dataset root."""
    try:
        images_dir = unpack_cub_archive(args.dataset_root)
    except DatasetError as error:
        return _fail(args, error)
    print(f"CUB-200-2011 images are in {images_dir}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    """Build the resized-image cache of a dataset below the dataset root."""
    try:
        dataset = load_dataset(
            args.name, args.dataset_root, allow_partial=args.allow_partial, use_cache=False
        )
    except DatasetError as error:
        return _fail(args, error)
    cache_dir = resized_cache_dir(args.dataset_root, args.name, args.size)
    try:
        manifest = build_resized_cache(
            dataset.paths, dataset.source_root, cache_dir, size=args.size, workers=args.workers
        )
    except DatasetError as error:
        return _fail(args, f"{error}; the cache was not completed and will not be used")
    print(
        f"resized {len(dataset)} images to shorter side {args.size} into {cache_dir} "
        f"(manifest {manifest.name})"
    )
    return 0


def run_glyphs(args: argparse.Namespace) -> int:
    """Build the glyph demo dataset below the dataset root."""
    from sdm.builders.glyphs import build_glyph_dataset

    try:
        archive = build_glyph_dataset(args.dataset_root)
    except (ValueError, OSError) as error:
        return _fail(args, error)
    print(f"glyph dataset written to {archive}")
    return 0


def run_icons(args: argparse.Namespace) -> int:
    """Build the icon dataset below the dataset root."""
    from sdm.builders.icons import DEFAULT_ICON_ROOTS, build_icon_dataset

    try:
        archive = build_icon_dataset(args.dataset_root, args.icon_roots or DEFAULT_ICON_ROOTS,
                                     force=args.force)
    except (ValueError, OSError) as error:
        return _fail(args, error)
    print(f"icon dataset written to {archive}")
    return 0


def _add_size_argument(parser: argparse.ArgumentParser, meaning: str) -> None:
    parser.add_argument("--size", type=whole_number_at_least(MIN_IMAGE_SIZE), default=RESIZE,
                        help=f"{meaning} (default {RESIZE})")


def _add_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset-root",
        type=Path,
        default=Path(DEFAULT_DATASET_ROOT),
        help=f"folder holding the datasets (default {DEFAULT_DATASET_ROOT})",
    )


def _undecodable_images(dataset: ImageDataset) -> list[str]:
    """Errors of the images that fail to decode (original files, not cached copies)."""
    is_file_based = isinstance(dataset, FileImageDataset)
    read = dataset.read_source_image if is_file_based else dataset.load_image
    failures = []
    for index in tqdm(range(len(dataset)), desc="decoding", file=sys.stderr):
        try:
            read(index)
        except DatasetError as error:
            failures.append(image_problem(error))
    return failures


def _describe_partition(dataset: ImageDataset) -> str:
    """One line with the official partition's sizes: train items and images, query, gallery."""

    def part(status: str) -> tuple[int, int]:
        chosen = dataset.partition == status
        return len(set(dataset.labels[chosen].tolist())), int(np.count_nonzero(chosen))

    train_items, train_images = part(INSHOP_TRAIN)
    query_items, query_images = part(INSHOP_QUERY)
    gallery_items, gallery_images = part(INSHOP_GALLERY)
    return (
        f"official partition: train {train_items} items / {train_images} images, "
        f"query {query_images} images ({query_items} items), "
        f"gallery {gallery_images} images ({gallery_items} items)"
    )


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least ``minimum`` (else a usage error naming the
    option, the value and the minimum)."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _fail(args: argparse.Namespace, error: Exception | str) -> int:
    """``sdm data <command>: error: ...`` on stderr, as every ``sdm`` command reports bad
    input; the exit status."""
    print(f"sdm data {args.data_command}: error: {error}", file=sys.stderr)
    return DATA_ERROR_EXIT_CODE
