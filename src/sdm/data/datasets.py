"""Labelled image datasets with one interface, and the loaders that find them on disk.

Every dataset is an `ImageDataset`: item i is (transformed image, original class id).
Images are decoded lazily, when an item is read. Problems with the data on disk raise
`DatasetError` with what was looked at, what was expected and what to do.
"""

from __future__ import annotations

import copy
import csv
import os
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.io
from PIL import Image
from torch.utils.data import Dataset

from sdm.constants import (
    CARS196,
    CARS_ANNOTATIONS,
    CARS_FOLDER,
    CARS_IMAGES,
    CSV,
    CUB200,
    CUB_ARCHIVE,
    CUB_FOLDER,
    CUB_IMAGES,
    DATASET_NAMES,
    DEFAULT_DATASET_ROOT,
    EXPECTED_COUNTS,
    FOLDER,
    GLYPHS,
    RESIZE,
)
from sdm.data.cache import cached_image_paths, resized_cache_dir

Transform = Callable[[Image.Image], Any]

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
IMAGE_SUFFIXES = JPEG_SUFFIXES | {".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CARS_FIELDS = ("relative_im_path", "class")
MISSING_PATHS_SHOWN = 5


class DatasetError(ValueError):
    """Data on disk is missing, incomplete or unreadable; the message says what to do."""


class ImageDataset(Dataset):
    """Labelled images: item i is (transform(image i), label i).

    `labels` holds the dataset's original class ids (int64), `classes` the sorted unique ids,
    `class_names` a readable name per class id.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        name: str,
        transform: Transform | None = None,
        class_names: Mapping[int, str] | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}")
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
        return part


class FileImageDataset(ImageDataset):
    """Images read from files, converted to RGB (grayscale and CMYK JPEGs included).

    `source_root` is the folder that `paths` are relative to in the resized cache (default:
    their common folder). With `cache_dir`, a valid resized cache there (built with shorter
    side `cache_size` pixels) is used instead of the originals (see sdm.data.cache); its
    validity is checked once, here.
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
    ) -> None:
        super().__init__(labels, name, transform, class_names)
        self.paths = [Path(p) for p in paths]
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        if source_root is None and self.paths:
            source_root = Path(_common_folder(self.paths))
        self.source_root = Path(source_root) if source_root is not None else None
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


def read_rgb_image(path: Path) -> Image.Image:
    """Decode the image file at `path` into RGB; DatasetError naming the path if that fails."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"cannot decode image {path}: {error}") from error


def load_dataset(
    name: str,
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    path: str | Path | None = None,
    allow_partial: bool = False,
    use_cache: bool = True,
) -> ImageDataset:
    """Load dataset `name` (one of sdm.constants.DATASET_NAMES) without a transform.

    cub200 and cars196 are found below `dataset_root`; "glyphs" too (built by
    `sdm data glyphs`); "folder" and "csv" read `path`.
    """
    if name == CUB200:
        return load_cub200(dataset_root, allow_partial, use_cache)
    if name == CARS196:
        return load_cars196(dataset_root, allow_partial, use_cache)
    if name == GLYPHS:
        from sdm.data.glyphs import load_glyph_arrays

        images, labels, class_names = load_glyph_arrays(dataset_root)
        return ArrayImageDataset(images, labels, GLYPHS, class_names=dict(enumerate(class_names)))
    if name in (FOLDER, CSV):
        if path is None:
            raise DatasetError(f"dataset {name!r} needs a path (--path / dataset.path)")
        return load_image_folder(path) if name == FOLDER else load_csv(path)
    raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def load_cub200(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
) -> FileImageDataset:
    """All CUB-200-2011 images, labels 0..199 by sorted class folder name."""
    root = Path(dataset_root)
    images_dir = root / CUB_IMAGES
    if not images_dir.is_dir():
        raise DatasetError(_cub_missing_message(root))
    class_dirs = sorted(d for d in images_dir.iterdir() if d.is_dir() and not _hidden(d))
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir, JPEG_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    _check_counts(CUB200, images_dir, len(paths), len(set(labels)), allow_partial)
    return FileImageDataset(
        paths,
        labels,
        CUB200,
        cache_dir=resized_cache_dir(root, CUB200) if use_cache else None,
        source_root=images_dir,
        class_names={label: d.name for label, d in enumerate(class_dirs)},
    )


def load_cars196(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
) -> FileImageDataset:
    """All Cars196 images listed in cars_annos.mat, labels 1..196 from its `class` field."""
    root = Path(dataset_root)
    annotations_path = root / CARS_ANNOTATIONS
    if not annotations_path.is_file():
        raise DatasetError(_cars_missing_message(root, annotations_path))
    cars_dir = root / CARS_FOLDER
    relative_paths, labels, class_names = _read_cars_annotations(annotations_path)
    paths = [cars_dir / _safe_relative(p, annotations_path) for p in relative_paths]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        shown = ", ".join(str(paths[i]) for i in missing[:MISSING_PATHS_SHOWN])
        message = (
            f"{len(missing)} of the {len(paths)} images listed in {annotations_path} are "
            f"missing, e.g. {shown}; extract car_ims.tgz into {cars_dir}/ so that "
            f"{root / CARS_IMAGES}/000001.jpg exists"
        )
        if not allow_partial:
            raise DatasetError(message + " (or pass allow_partial=True / --allow-partial)")
        warnings.warn(message + "; continuing without them (allow_partial=True)", stacklevel=2)
        present = sorted(set(range(len(paths))) - set(missing))
        paths = [paths[i] for i in present]
        labels = [labels[i] for i in present]
    _check_counts(CARS196, cars_dir, len(paths), len(set(labels)), allow_partial)
    return FileImageDataset(
        paths,
        labels,
        CARS196,
        cache_dir=resized_cache_dir(root, CARS196) if use_cache else None,
        source_root=cars_dir,
        class_names=class_names,
    )


def load_image_folder(folder: str | Path) -> FileImageDataset:
    """Images in `folder/<class name>/`, labels 0..C-1 by sorted name of the class folders.

    Only image files directly inside a class folder count; folders without images are
    skipped (they get no label).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"image folder not found: {folder}; expected {folder}/<class name>/<image files>"
        )
    class_files = [
        (d.name, _image_files(d, IMAGE_SUFFIXES))
        for d in sorted(folder.iterdir())
        if d.is_dir() and not _hidden(d)
    ]
    class_files = [(name, files) for name, files in class_files if files]
    if not class_files:
        raise DatasetError(
            f"no images found in {folder}; expected {folder}/<class name>/<image files> "
            f"with suffixes {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    paths = [path for _, files in class_files for path in files]
    labels = [label for label, (_, files) in enumerate(class_files) for _ in files]
    class_names = {label: name for label, (name, _) in enumerate(class_files)}
    return FileImageDataset(paths, labels, FOLDER, source_root=folder, class_names=class_names)


def load_csv(csv_path: str | Path) -> FileImageDataset:
    """Images listed in a CSV file with a header and columns `path,label`.

    Relative paths are relative to the CSV's folder. Integer labels are kept; other labels
    are class names, numbered 0..C-1 in sorted order.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {csv_path}; expected columns path,label")
    with csv_path.open(newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{csv_path} must start with a header naming the columns path,label; "
                f"found {reader.fieldnames}"
            )
        rows = [(row["path"], row["label"]) for row in reader]
    empty = [i + 2 for i, (p, lab) in enumerate(rows) if not (p or "").strip() or not lab]
    if empty:
        raise DatasetError(f"{csv_path}: empty path or label on line(s) {empty[:10]}")
    if not rows:
        raise DatasetError(f"{csv_path} lists no images")
    paths = [csv_path.parent / p.strip() for p, _ in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:MISSING_PATHS_SHOWN])
        raise DatasetError(
            f"{len(missing)} of the {len(paths)} images listed in {csv_path} are missing, "
            f"e.g. {shown} (relative paths are relative to the CSV's folder)"
        )
    raw_labels = [label.strip() for _, label in rows]
    if all(_is_integer(label) for label in raw_labels):
        labels = [int(label) for label in raw_labels]
        class_names = None
    else:
        names = sorted(set(raw_labels))
        number = {name: i for i, name in enumerate(names)}
        labels = [number[label] for label in raw_labels]
        class_names = dict(enumerate(names))
    return FileImageDataset(paths, labels, CSV, class_names=class_names)


def unpack_cub_archive(dataset_root: str | Path = DEFAULT_DATASET_ROOT) -> Path:
    """Extract <root>/cub2011/CUB_200_2011.tgz so that <root>/cub2011/CUB_200_2011/images exists.

    Extraction refuses members that would land outside the target folder or are links to
    outside it. Does nothing when the images folder already exists. Returns that folder.
    """
    root = Path(dataset_root)
    images_dir = root / CUB_IMAGES
    if images_dir.is_dir():
        return images_dir
    archive = root / CUB_ARCHIVE
    if not archive.is_file():
        raise DatasetError(
            f"CUB archive not found: {archive}; download CUB_200_2011.tgz and place it in "
            f"{root / CUB_FOLDER}/"
        )
    target = root / CUB_FOLDER
    unpacked_name = images_dir.parent.name
    if (target / unpacked_name).exists():
        raise DatasetError(
            f"{target / unpacked_name} exists but has no images/ folder; move it away and "
            "unpack again"
        )
    with tempfile.TemporaryDirectory(dir=target, prefix=".unpack-") as scratch:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DatasetError(f"cannot extract {archive}: {error}") from error
        if not (Path(scratch) / unpacked_name / "images").is_dir():
            raise DatasetError(
                f"{archive} has no {unpacked_name}/images/ folder; is it the official "
                "CUB_200_2011.tgz?"
            )
        (Path(scratch) / unpacked_name).replace(target / unpacked_name)
    return images_dir


def _cub_missing_message(root: Path) -> str:
    images_dir = root / CUB_IMAGES
    archive = root / CUB_ARCHIVE
    if archive.is_file():
        hint = (
            f"the archive {archive} is there but not unpacked: run "
            f"`sdm data unpack-cub --dataset-root {root}`"
        )
    else:
        hint = (
            f"extract CUB_200_2011.tgz into {root / CUB_FOLDER}/ so that "
            f"{images_dir}/001.Black_footed_Albatross/... exists (or put the .tgz there and "
            f"run `sdm data unpack-cub --dataset-root {root}`)"
        )
    return (
        f"CUB-200-2011 not found: looked for {images_dir}; expected layout "
        f"<dataset_root>/{CUB_IMAGES}/<NNN.Class_name>/*.jpg; {hint}"
    )


def _cars_missing_message(root: Path, annotations_path: Path) -> str:
    return (
        f"Cars196 not found: looked for {annotations_path}; expected layout "
        f"<dataset_root>/{CARS_ANNOTATIONS} and <dataset_root>/{CARS_IMAGES}/*.jpg; put "
        f"cars_annos.mat in {root / CARS_FOLDER}/ and extract car_ims.tgz there so that "
        f"{root / CARS_IMAGES}/000001.jpg exists"
    )


def _read_cars_annotations(path: Path) -> tuple[list[str], list[int], dict[int, str] | None]:
    """(relative image paths, class ids, class names or None) from cars_annos.mat."""
    try:
        contents = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    annotations = contents.get("annotations")
    if annotations is None or annotations.dtype.names is None:
        raise DatasetError(f"{path} has no struct array 'annotations'; is it cars_annos.mat?")
    absent = [f for f in CARS_FIELDS if f not in annotations.dtype.names]
    if absent:
        raise DatasetError(
            f"the 'annotations' of {path} lack the fields {absent}; "
            f"found {list(annotations.dtype.names)}"
        )
    records = annotations.ravel()
    relative_paths = [str(_matlab_scalar(v)) for v in records["relative_im_path"]]
    labels = [int(_matlab_scalar(v)) for v in records["class"]]
    class_names = None
    if "class_names" in contents:
        names = [str(_matlab_scalar(v)) for v in contents["class_names"].ravel()]
        class_names = {i + 1: name for i, name in enumerate(names)}
    return relative_paths, labels, class_names


def _matlab_scalar(value: Any) -> Any:
    """The single value inside a loadmat cell/field (loadmat wraps scalars in arrays)."""
    return np.asarray(value).ravel()[0]


def _safe_relative(relative: str, listed_in: Path) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{listed_in} lists the image path {relative!r} outside its folder")
    return path


def _check_counts(
    name: str, location: Path, num_images: int, num_classes: int, allow_partial: bool
) -> None:
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
    warnings.warn(f"{found}; using the partial dataset (allow_partial=True)", stacklevel=3)


def _image_files(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in suffixes and p.is_file() and not _hidden(p)
    )


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _common_folder(paths: Sequence[Path]) -> str:
    return os.path.commonpath([str(p.parent) for p in paths])


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
