"""The loaders that find each dataset on disk, and `load_dataset`, which picks one by name.

The dataset classes live in sdm.data.base, SOP's and In-Shop's loaders in sdm.data.sop and
sdm.data.inshop; the names most code needs are importable from here too (`ImageDataset`,
`FileImageDataset`, `ArrayImageDataset`, `DatasetError`, `read_rgb_image`). Problems with the
data on disk raise `DatasetError` with what was looked at, what was expected and what to do.
"""

from __future__ import annotations

import csv
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

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
    FOLDER,
    GLYPHS,
    ICONS,
    INSHOP,
    RESIZE,
    SOP,
)
from sdm.data.base import (
    MISSING_PATHS_SHOWN,
    ArrayImageDataset,
    FileImageDataset,
    ImageDataset,
    benchmark_dataset,
    present_images,
    safe_relative,
)
from sdm.data.images import DatasetError, read_rgb_image
from sdm.data.inshop import load_inshop
from sdm.data.sop import load_sop

__all__ = [
    "ArrayImageDataset",
    "DatasetError",
    "FileImageDataset",
    "ImageDataset",
    "load_cars196",
    "load_csv",
    "load_cub200",
    "load_dataset",
    "load_image_folder",
    "load_inshop",
    "load_sop",
    "read_rgb_image",
    "unpack_cub_archive",
]

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
IMAGE_SUFFIXES = JPEG_SUFFIXES | {".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CARS_FIELDS = ("relative_im_path", "class")


def load_dataset(
    name: str,
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    path: str | Path | None = None,
    allow_partial: bool = False,
    use_cache: bool = True,
    cache_size: int = RESIZE,
) -> ImageDataset:
    """Load dataset `name` (one of sdm.constants.DATASET_NAMES) without a transform.

    cub200, cars196, sop and inshop are found below `dataset_root`, and with `use_cache` read
    from their resized cache built at shorter side `cache_size` if a valid one is there
    (`sdm data cache NAME --size N`); "glyphs" is below `dataset_root` too (built by
    `sdm data glyphs`), and so is "icons" (`sdm data icons`); "folder" and "csv" read `path`.
    """
    file_loaders = {
        CUB200: load_cub200,
        CARS196: load_cars196,
        SOP: load_sop,
        INSHOP: load_inshop,
    }
    if name in file_loaders:
        return file_loaders[name](dataset_root, allow_partial, use_cache, cache_size)
    if name in (GLYPHS, ICONS):
        from sdm.data.embedded import load_embedded_arrays

        images, labels, class_names = load_embedded_arrays(name, dataset_root)
        return ArrayImageDataset(images, labels, name, class_names=dict(enumerate(class_names)))
    if name in (FOLDER, CSV):
        if path is None:
            raise DatasetError(f"dataset {name!r} needs a path (--path / dataset.path)")
        return load_image_folder(path) if name == FOLDER else load_csv(path)
    raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def load_cub200(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
    cache_size: int = RESIZE,
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
    class_names = {label: d.name for label, d in enumerate(class_dirs)}
    return benchmark_dataset(CUB200, root, images_dir, paths, labels, class_names,
                             allow_partial=allow_partial, use_cache=use_cache,
                             cache_size=cache_size)


def load_cars196(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
    cache_size: int = RESIZE,
) -> FileImageDataset:
    """All Cars196 images listed in cars_annos.mat, labels 1..196 from its `class` field."""
    root = Path(dataset_root)
    annotations_path = root / CARS_ANNOTATIONS
    if not annotations_path.is_file():
        raise DatasetError(_cars_missing_message(root, annotations_path))
    cars_dir = root / CARS_FOLDER
    relative_paths, labels, class_names = _read_cars_annotations(annotations_path)
    paths = [cars_dir / safe_relative(p, annotations_path) for p in relative_paths]
    fix = (
        f"extract car_ims.tgz into {cars_dir}/ so that {root / CARS_IMAGES}/000001.jpg exists"
    )
    present = present_images(paths, annotations_path, fix, allow_partial)
    return benchmark_dataset(CARS196, root, cars_dir, [paths[i] for i in present],
                             [labels[i] for i in present], class_names,
                             allow_partial=allow_partial, use_cache=use_cache,
                             cache_size=cache_size)


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


def _image_files(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in suffixes and p.is_file() and not _hidden(p)
    )


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
