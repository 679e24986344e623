"""Images to embed, in the forms the commands accept, as one dataset.

- image files (one or several paths);
- a folder: with class subfolders (labels = the subfolders, as ``load_image_folder``) or
  with the images directly inside (no labels);
- a CSV file with a header and a ``path`` column, optionally ``label`` (paths relative to the
  CSV's folder; as ``load_csv`` when labelled);
- a dataset name (cub200, cars196, sop, inshop, glyphs, icons), found below a dataset root.

An existing path wins over a dataset name. Nothing is decoded here: images are read when
embedded.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdm import constants as C
from sdm.config import ExperimentConfig
from sdm.data.base import FileImageDataset, ImageDataset
from sdm.data.datasets import IMAGE_SUFFIXES, load_csv, load_dataset, load_image_folder
from sdm.data.images import DatasetError
from sdm.inference.errors import InferenceError

UNLABELLED_NAME = "images"
NO_LABEL = -1  # the label of every item of an unlabelled source
NAMED_DATASETS = tuple(n for n in C.DATASET_NAMES if n not in (C.FOLDER, C.CSV))
ACCEPTED_FORMS = (
    "image files, a folder of images (with or without class subfolders), a CSV file with a "
    f"path[,label] header, or a dataset name ({', '.join(NAMED_DATASETS)})")


@dataclass(frozen=True)
class ImageSource:
    """Images in a fixed order: ``dataset`` (no transform), ``names[i]`` (item i's file, or
    ``<dataset>[<index>]`` for in-memory images), ``labelled`` (whether ``dataset.labels``
    are known classes), and ``spec``: ``load_images(**spec)`` loads the same images again."""

    dataset: ImageDataset
    names: list[str]
    labelled: bool
    spec: dict[str, Any]

    def label_of(self, index: int) -> tuple[int | None, str | None]:
        """(class id, class name) of item ``index``; (None, None) when unlabelled."""
        if not self.labelled:
            return None, None
        label = int(self.dataset.labels[index])
        return label, self.dataset.class_names.get(label, str(label))


def load_images(
    images: str | Path | Sequence[str | Path], *, dataset_root: str | Path = C.DEFAULT_DATASET_ROOT,
    allow_partial: bool = False, use_cache: bool = True, cache_size: int = C.RESIZE,
) -> ImageSource:
    """The images named by ``images`` in one of the accepted forms (module docstring).

    ``dataset_root``, ``allow_partial``, ``use_cache`` and ``cache_size`` apply to dataset
    names as in ``load_dataset``. Raises InferenceError for anything in none of the forms,
    DatasetError for a form whose contents are wrong (a missing file listed in a CSV, ...).
    """
    entries = [images] if isinstance(images, str | Path) else list(images)
    if not entries:
        raise InferenceError(f"no images given; expected {ACCEPTED_FORMS}")
    resolved = [str(Path(e).resolve()) if Path(e).exists() else str(e) for e in entries]
    spec = {"images": resolved, "dataset_root": str(Path(dataset_root).resolve()),
            "allow_partial": allow_partial, "use_cache": use_cache, "cache_size": cache_size}
    paths = [Path(e) for e in resolved]
    if len(paths) > 1 or _is_image_file(paths[0]):
        not_images = [str(p) for p in paths if not _is_image_file(p)]
        if not_images:
            raise InferenceError(
                f"several IMAGES must all be image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                f"not image files: {', '.join(not_images[:5])}. Pass one folder, CSV file or "
                "dataset name alone")
        return _unlabelled(paths, spec)
    single = paths[0]
    if single.is_dir():
        return _folder(single, spec)
    if single.is_file() and single.suffix.lower() == ".csv":
        return _csv(single, spec)
    if not single.exists() and resolved[0] in NAMED_DATASETS:
        dataset = load_dataset(resolved[0], dataset_root, allow_partial=allow_partial,
                               use_cache=use_cache, cache_size=cache_size)
        return ImageSource(dataset, item_names(dataset), True, spec)
    raise InferenceError(f"{entries[0]} is none of the accepted forms of images: {ACCEPTED_FORMS}")


def load_experiment_images(
    images: str | Path | Sequence[str | Path], config: ExperimentConfig,
    dataset_root: str | Path | None = None,
) -> ImageSource:
    """``load_images`` with an experiment's dataset options: dataset names below its
    ``dataset.root`` (or ``dataset_root``), with its ``allow_partial`` and ``use_cache``, the
    cache built at its ``transform.resize``, as its own dataset is loaded."""
    data = config.dataset
    return load_images(images, dataset_root=data.root if dataset_root is None else dataset_root,
                       allow_partial=data.allow_partial, use_cache=data.use_cache,
                       cache_size=config.transform.resize or C.RESIZE)


def _folder(folder: Path, spec: dict[str, Any]) -> ImageSource:
    loose = _image_files(folder)
    class_folders = [d for d in sorted(folder.iterdir())
                     if d.is_dir() and not d.name.startswith(".") and _image_files(d)]
    if loose and class_folders:
        raise InferenceError(
            f"{folder} holds {len(loose)} images directly and class subfolders with images "
            f"({', '.join(d.name for d in class_folders[:5])}): put every image in a class "
            "subfolder, or none")
    if class_folders:
        dataset = load_image_folder(folder)
        return ImageSource(dataset, item_names(dataset), True, spec)
    if not loose:
        raise InferenceError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files in it "
            "and in its subfolders)")
    return _unlabelled(loose, spec)


def _csv(path: Path, spec: dict[str, Any]) -> ImageSource:
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        fields = reader.fieldnames or []
        if "label" in fields:
            dataset = load_csv(path)
            return ImageSource(dataset, item_names(dataset), True, spec)
        if "path" not in fields:
            raise InferenceError(
                f"{path} must start with a header naming the column path (and optionally "
                f"label); found {fields}")
        listed = [(row["path"] or "").strip() for row in reader]
    empty = [line for line, p in enumerate(listed, start=2) if not p]
    if empty or not listed:
        raise DatasetError(f"{path}: no images listed, or an empty path on line(s) {empty[:10]}")
    files = [path.parent / p for p in listed]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of the {len(files)} images listed in {path} are missing, e.g. "
            f"{', '.join(missing[:5])} (relative paths are relative to the CSV's folder)")
    return _unlabelled(files, spec)


def _unlabelled(paths: Sequence[Path], spec: dict[str, Any]) -> ImageSource:
    dataset = FileImageDataset(paths, np.full(len(paths), NO_LABEL), UNLABELLED_NAME)
    return ImageSource(dataset, item_names(dataset), False, spec)


def item_names(dataset: ImageDataset) -> list[str]:
    """Each item's file, or ``<dataset name>[<index>]`` for images held in memory."""
    if isinstance(dataset, FileImageDataset):
        return [str(p) for p in dataset.paths]
    return [f"{dataset.name}[{i}]" for i in range(len(dataset))]


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image_file(p) and not p.name.startswith("."))
