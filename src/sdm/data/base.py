"""The `ImageDataset` interface, its file and in-memory kinds, and checks the loaders share.

Every dataset is an `ImageDataset`: item i is (transformed image, original class id).
Images are decoded lazily, when an item is read. Problems with the data on disk raise
`DatasetError` with what was looked at, what was expected and what to do.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from sdm.constants import EXPECTED_COUNTS, RESIZE
from sdm.data.cache import cached_image_paths, resized_cache_dir
from sdm.data.images import DatasetError, read_rgb_image

Transform = Callable[[Image.Image], Any]

MISSING_PATHS_SHOWN = 5


class ImageDataset(Dataset):
    """Labelled images: item i is (transform(image i), label i).

    `labels` holds the dataset's original class ids (int64), `classes` the sorted unique ids,
    `class_names` a readable name per class id. `partition` is None, except for datasets with
    an official per-image protocol (In-Shop): then a str array saying for each image which
    part it belongs to ("train", "query" or "gallery"), kept aligned by `subset`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        name: str,
        transform: Transform | None = None,
        class_names: Mapping[int, str] | None = None,
        partition: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}")
        self.partition = None if partition is None else np.asarray(partition, dtype=str)
        if self.partition is not None and self.partition.shape != self.labels.shape:
            raise ValueError(
                f"partition has shape {self.partition.shape} but labels {self.labels.shape}"
            )
        self.classes: list[int] = sorted(set(self.labels.tolist()))
        self.name = name
        self.transform = transform
        self.class_names = (
            dict(class_names) if class_names is not None else {c: str(c) for c in self.classes}
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, {len(self)} images, {len(self.classes)} classes)"
        )

    def load_image(self, index: int) -> Image.Image:
        """Image `index` as a PIL image (mode RGB or L) before the transform."""
        raise NotImplementedError

    def subset(self, classes: Iterable[int]) -> ImageDataset:
        """The items whose label is in `classes`, in their original order, same transform."""
        wanted = sorted({int(c) for c in classes})
        unknown = sorted(set(wanted) - set(self.classes))
        if unknown:
            raise ValueError(f"dataset {self.name!r} has no classes {unknown[:10]}")
        return self._take(np.flatnonzero(np.isin(self.labels, wanted)))

    def with_transform(self, transform: Transform | None) -> ImageDataset:
        """A shallow copy that applies `transform` instead."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def _take(self, indices: np.ndarray) -> ImageDataset:
        """A shallow copy holding only the items at `indices`; subclasses add their arrays."""
        part = copy.copy(self)
        part.labels = self.labels[indices]
        part.classes = sorted(set(part.labels.tolist()))
        if self.partition is not None:
            part.partition = self.partition[indices]
        return part


class FileImageDataset(ImageDataset):
    """Images read from files, converted to RGB (grayscale and CMYK JPEGs included).

    `source_root` is the folder that `paths` are relative to in the resized cache (default:
    their common folder). With `cache_dir`, a valid resized cache there (built with shorter
    side `cache_size` pixels) is used instead of the originals (see sdm.data.cache); its
    validity is checked once, here. `cache_size` is kept: the size the cache was looked for at.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray,
        name: str,
        transform: Transform | None = None,
        cache_dir: str | Path | None = None,
        source_root: str | Path | None = None,
        class_names: Mapping[int, str] | None = None,
        cache_size: int = RESIZE,
        partition: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        super().__init__(labels, name, transform, class_names, partition)
        self.paths = [Path(p) for p in paths]
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        if source_root is None and self.paths:
            source_root = Path(_common_folder(self.paths))
        self.source_root = Path(source_root) if source_root is not None else None
        self.cache_size = cache_size
        self.cached_paths: list[Path] | None = None
        if cache_dir is not None and self.paths:
            self.cached_paths = cached_image_paths(
                self.paths, self.source_root, cache_dir, cache_size
            )

    @property
    def uses_cache(self) -> bool:
        """Whether images come from the resized cache."""
        return self.cached_paths is not None

    def load_image(self, index: int) -> Image.Image:
        """Image `index` in RGB: the resized cached copy when the cache is in use."""
        if self.cached_paths is not None:
            return read_rgb_image(self.cached_paths[index])
        return self.read_source_image(index)

    def read_source_image(self, index: int) -> Image.Image:
        """Image `index` in RGB, decoded from its original file."""
        return read_rgb_image(self.paths[index])

    def _take(self, indices: np.ndarray) -> FileImageDataset:
        part = super()._take(indices)
        part.paths = [self.paths[i] for i in indices]
        if self.cached_paths is not None:
            part.cached_paths = [self.cached_paths[i] for i in indices]
        return part


class ArrayImageDataset(ImageDataset):
    """Images held in memory: uint8 arrays (N, H, W) give mode L, (N, H, W, 3) mode RGB."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        name: str,
        transform: Transform | None = None,
        class_names: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(labels, name, transform, class_names)
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
            raise ValueError(
                f"images must have shape (N, H, W) or (N, H, W, 3), got {images.shape}"
            )
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.images = images

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index], mode="L" if self.images.ndim == 3 else "RGB")

    def _take(self, indices: np.ndarray) -> ArrayImageDataset:
        part = super()._take(indices)
        part.images = self.images[indices]
        return part


def benchmark_dataset(
    name: str,
    dataset_root: Path,
    source_root: Path,
    paths: Sequence[Path],
    labels: Sequence[int],
    class_names: Mapping[int, str],
    *,
    allow_partial: bool,
    use_cache: bool,
    cache_size: int,
    partition: Sequence[str] | None = None,
) -> FileImageDataset:
    """Benchmark `name` (cub200, cars196, sop, inshop) from the images found below
    `source_root`, its counts checked (check_counts); with `use_cache`, a valid resized cache
    built at shorter side `cache_size` below `dataset_root` is used."""
    check_counts(name, source_root, len(paths), len(set(labels)), allow_partial)
    return FileImageDataset(
        paths,
        labels,
        name,
        cache_dir=resized_cache_dir(dataset_root, name, cache_size) if use_cache else None,
        source_root=source_root,
        class_names=class_names,
        cache_size=cache_size,
        partition=partition,
    )


def check_counts(
    name: str, location: Path, num_images: int, num_classes: int, allow_partial: bool
) -> None:
    """Compare what a loader found with EXPECTED_COUNTS[name].

    No images at all raise DatasetError; other differences raise it too unless
    `allow_partial`, which turns them into a warning.
    """
    expected_images, expected_classes = EXPECTED_COUNTS[name]
    if num_images == 0:
        raise DatasetError(f"{name}: no images found in {location}")
    if (num_images, num_classes) == (expected_images, expected_classes):
        return
    found = (
        f"{name} at {location}: expected {expected_images} images in {expected_classes} "
        f"classes, found {num_images} images in {num_classes} classes"
    )
    if not allow_partial:
        raise DatasetError(
            f"{found}; complete the dataset, or pass allow_partial=True (--allow-partial, "
            "dataset.allow_partial=true) to use it as it is"
        )
    # stacklevel: the caller of the loader that called benchmark_dataset
    warnings.warn(f"{found}; using the partial dataset (allow_partial=True)", stacklevel=4)


def present_images(
    paths: Sequence[Path], listed_in: Path, fix: str, allow_partial: bool
) -> list[int]:
    """Indices of the `paths` (images listed in the file `listed_in`) that exist.

    Missing images raise DatasetError naming a few of them and `fix` (what to do), unless
    `allow_partial`, which warns and leaves them out.
    """
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if not missing:
        return list(range(len(paths)))
    shown = ", ".join(str(paths[i]) for i in missing[:MISSING_PATHS_SHOWN])
    message = (
        f"{len(missing)} of the {len(paths)} images listed in {listed_in} are missing, "
        f"e.g. {shown}; {fix}"
    )
    if not allow_partial:
        raise DatasetError(message + " (or pass allow_partial=True / --allow-partial)")
    warnings.warn(message + "; continuing without them (allow_partial=True)", stacklevel=3)
    absent = set(missing)
    return [i for i in range(len(paths)) if i not in absent]


def safe_relative(relative: str, listed_in: Path) -> PurePosixPath:
    """`relative` (an image path listed in the file `listed_in`) if it stays below its folder."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{listed_in} lists the image path {relative!r} outside its folder")
    return path


def _common_folder(paths: Sequence[Path]) -> str:
    return os.path.commonpath([str(p.parent) for p in paths])
